"""The markdown tables of ``medcbm bench review`` (:mod:`medcbm.benchmarks.bench_review`'s results)."""

from __future__ import annotations

from medcbm.benchmarks.bench_review import ANSWERED


def _ci(e: dict) -> str:
    return f"{e['gain']:+.3f} [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}] ({e['verdict']})"


def markdown_table(res: dict) -> str:
    """The headline tables: reviewed-case gains per order and answered count, adaptation gains per variant, on
    Derm7pt's test split and at the new site (PH2)."""
    sp, site = res["splits"], res.get("new_site")
    lines = _tables(res["reviewed_cases"], res["adaptation"], f"Derm7pt test split ({sp['test']} images), "
                    f"{len(res['seeds'])} seeds", sp["adaptation_reviewed_per_draw"], sp["adaptation_held_out_per_draw"],
                    "test images")
    if site:
        n_rev = sp["adaptation_reviewed_per_draw"]
        lines += [""] + _tables(site["reviewed_cases"], site["adaptation"], f"new site, PH2 ({site['n_images']} images, "
                                f"{site['n_malignant']} melanomas; answers only for the concepts PH2 annotates)", n_rev,
                                site["n_images"] - n_rev, "PH2 images")
        if "recalibration_ceiling" in site:
            ce = site["recalibration_ceiling"]
            lines += ["", f"Ceiling of the corrections at PH2 (every one of the {ce['n_images']} images reviewed, "
                      f"all {ce['concepts_answered']} annotated concepts answered; in-sample, not a gain estimate): "
                      f"the site-level shift moves balanced accuracy {ce['balanced_acc_base']:.3f} → "
                      f"{ce['balanced_acc_shifted']:.3f} ({ce['shift_gain']:+.3f}); the same answers applied case by "
                      f"case, {ce['balanced_acc_every_case_answered']:.3f} ({ce['answered_gain']:+.3f})."]
    c, diff = res["checks"], res["adaptation"]["paired"].get("labels_corrections_minus_labels")
    rc = res["reviewed_cases"]
    lines += ["", f"Targets (met: the 95 % interval clears the target; cannot tell: it straddles it): reviewed-case "
              f"accuracy gain at {ANSWERED} (ask order) ≥ +0.10: {c['reviewed_case_gain_verdict']} "
              f"({_ci(rc['ask']['at_5']['accuracy_gain'])}, point {'above' if c['reviewed_case_gain_point_met'] else 'below'}"
              f" the target); corrections + labels beat labels alone: {c['corrections_beat_labels_verdict']}"
              + (f" ({_ci(diff)})" if diff else "") + f"; at the new site: {c['new_site_corrections_beat_labels_verdict']}"
              f"; with the corrections refitting the probes (labels_corrections_probes), at the new site: "
              f"{c.get('new_site_probe_corrections_beat_labels_verdict', 'not measured')}, on Derm7pt test: "
              f"{c.get('probe_corrections_beat_labels_verdict', 'not measured')}.",
              "", "Limitations: " + "; ".join(res["limitations"]) + "."]
    return "\n".join(lines) + "\n"


def _tables(rc: dict, ad: dict, where: str, n_reviewed: int, n_held: int, images: str) -> list[str]:
    lines = [f"### Reviewed cases — {where}", "",
             "| order | answered | accuracy before → after | gain [95 % CI] | bal. acc before → after | gain [95 % CI] |",
             "|---|---|---|---|---|---|"]
    for order, r in rc.items():
        for k, s in r["by_answered"].items():
            lines.append(f"| {order} | {k} | {s['accuracy_before']:.3f} → {s['accuracy_after']:.3f} | "
                         f"{_ci(s['accuracy_gain'])} | {s['balanced_accuracy_before']:.3f} → "
                         f"{s['balanced_accuracy_after']:.3f} | {_ci(s['balanced_accuracy_gain'])} |")
    lines += ["", f"### Adaptation from {n_reviewed} reviewed cases — scored on the other {n_held} {images} "
              f"(unadapted bal. acc {ad.get('base_balanced_acc', float('nan')):.3f})",
              "", "| variant | draws (failed) | held-out bal. acc gain [95 % CI] | worst / best draw | loss > 0.05 | "
              "changed the model | changed a prediction | labelled change kept | largest shift (SD) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for v, r in ad["variants"].items():
        if "gain" not in r:
            lines.append(f"| {v} | {r['n_draws']} ({r['n_failed']}) | — ({'; '.join(r['errors'])}) | | | | | | |")
            continue
        lines.append(f"| {v} | {r['n_draws']} ({r['n_failed']}) | {_ci(r['gain'])} | {r['worst_gain']:+.3f} / "
                     f"{r['best_gain']:+.3f} | {r['loss_over_0.05_fraction']:.2f} | {r['changed_fraction']:.2f} | "
                     f"{r['predictions_changed_fraction']:.2f} | {r['labelled_change_kept_fraction']:.2f} | "
                     f"{r['max_abs_shift_z']:.1f} |")
    for k, e in ad["paired"].items():
        lines.append(f"\npaired {k.replace('_', ' ')}: {_ci(e)}")
    pc = ad.get("probe_refit_concepts")
    if pc:
        lines += ["", "Probe refit, held-out AUROC of the concepts answered on the reviewed cases (before → after): "
                  + ", ".join(f"{k} {v['auroc_before']:.3f} → {v['auroc_after']:.3f}" for k, v in pc["concepts"].items())
                  + (f"; mean change per draw {_ci(pc['mean_auroc_change'])}" if pc["mean_auroc_change"] else "")
                  + f"; mean |activation change| {pc['mean_abs_activation_change']:.3f}."]
    return lines
