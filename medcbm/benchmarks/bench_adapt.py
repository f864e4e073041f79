"""Few-shot adaptation benchmark: a source CBM per seed, k labelled target images per class, paired draws.

Per seed the source model is trained once on the protocol's train/val splits. Its ``test_ood`` split is the
new site: it is cut once, by patient, into a support pool and a fixed query set. For every k, ``draws``
seeded support sets of k images per class are drawn from the pool — the same sets for every adapter — and
each adapter is fitted on one and scored on the query set (never on the support) and on the source
``test_id`` split (the accuracy it keeps at home). Adapters that use unlabelled images (the default ``site``)
also see the rest of the pool without labels; k = 0 is that alone. Where an adapter prints an estimate of
its gain, the benchmark compares it with the held-out gain (mean error, interval coverage).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter

import numpy as np
import pandas as pd

from medcbm._io import json_safe
from medcbm.adapt import ConceptEdit, create_adapter, list_adapters
from medcbm.audit.acceptance import assess
from medcbm.benchmarks.bench_shift import load_protocol_data
from medcbm.data.site_split import draw_support, pool_query_split
from medcbm.methods.registry import get_method
from medcbm.metrics import auroc, balanced_accuracy

logger = logging.getLogger(__name__)

REFERENCE = "linear_probe_refit"
DEFAULT_ADAPTER = "site"  # logistic regression on the support images' features: not a CBM, a yardstick


def _probe_refit(X_sup, y_sup, X_eval: list[np.ndarray]) -> list[np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=500).fit(X_sup, y_sup)
    return [clf.predict_proba(X) for X in X_eval]


def _score(y, proba) -> tuple[float, float]:
    return balanced_accuracy(y, proba), auroc(y, proba)


def run_adapt_benchmark(protocol: str, *, method: str = "cbm", seeds: list[int] | int = 5,
                        ks: tuple[int, ...] = (0, 1, 2, 4, 8, 16), draws: int = 50, adapters: list[str] | None = None,
                        query_frac: float = 0.5, data_root=None, cache_dir: str | os.PathLike | None = "runs/cache/features",
                        progress: bool = True, n_boot: int = 2000) -> dict:
    """Run the benchmark; returns per (adapter, k) aggregates, per-seed baselines and the masked concepts."""
    t0 = time.perf_counter()
    adapters = list(adapters or list_adapters())
    pdata = load_protocol_data(protocol, seeds=seeds, data_root=data_root, cache_dir=cache_dir, progress=progress)
    fn = get_method(method)
    rows: list[dict] = []
    timing: list[dict] = []
    chosen: dict[str, Counter] = {a: Counter() for a in adapters}
    baselines = {}
    for seed in pdata.splits:
        X, y, frames, data = pdata.seed_data(seed)
        ts = time.perf_counter()
        out = fn(data)
        train_s = time.perf_counter() - ts
        model = out.model
        P_ood, P_id = out.concepts["test_ood"], out.concepts["test_id"]
        pool, query = pool_query_split(frames["test_ood"]["patient_id"].astype(str).to_numpy(), y["test_ood"], seed, query_frac)
        yp, yq, y_id = y["test_ood"][pool], y["test_ood"][query], y["test_id"]
        base_q = _score(yq, model.predict_proba_from_concepts(P_ood[query]))
        base_id = float((model.predict_proba_from_concepts(P_id).argmax(1) == y_id).mean())
        # the site acceptance verdict on the source model, from the query (home: its test_id balanced accuracy)
        accept = assess(yq, model.predict_proba_from_concepts(P_ood[query]),
                        home=balanced_accuracy(y_id, model.predict_proba_from_concepts(P_id)))
        em = create_adapter(DEFAULT_ADAPTER, model).fit_concepts(P_ood[pool][:0], [], P_unlabelled=P_ood[pool]).site_
        baselines[seed] = {"query_balanced_acc": base_q[0], "query_auroc": base_q[1], "id_acc": base_id,
                           # EM's prevalence of the last class from the unlabelled pool, against the pool's truth
                           "em_prevalence": float(em.prevalence[-1]), "true_prevalence": float((yp == yp.max()).mean()),
                           "acceptance": {"verdict": accept.verdict, "reasons": accept.reasons,
                                          "balanced_acc_ci95": list(accept.balanced_accuracy.ci95),
                                          "auroc_ci95": list(accept.auroc.ci95)},
                           "n_pool": len(pool), "n_query": len(query), "train_seconds": round(train_s, 2)}
        logger.info("seed %d: source %s query bal. acc %.3f, ID acc %.3f", seed, method, base_q[0], base_id)
        for k in ks:
            for d in range(1 if k == 0 else draws):
                sel = np.zeros(0, int) if k == 0 else draw_support(yp, k, np.random.default_rng([seed, k, d]))
                if sel is None:
                    break
                # the site's other pool images, labels unused: what a user has besides the labelled few
                rest = np.setdiff1d(np.arange(len(pool)), sel)
                for name in adapters:
                    a = create_adapter(name, model)
                    if getattr(a, "uses_unlabelled", False):
                        a.fit_concepts(P_ood[pool][sel], yp[sel], P_unlabelled=P_ood[pool][rest])
                    elif k == 0:
                        continue
                    else:
                        a.fit_concepts(P_ood[pool][sel], yp[sel])
                    rows.append(_adapter_row(a, seed, k, d, name, yq, P_ood[query], P_id, y_id, base_q, base_id))
                    if k == 4:
                        chosen[name].update(f"{c.action}:{c.concept}" for c in a.changes_ if c.action != "shifted")
                if k == 0:
                    continue
                ts = time.perf_counter()
                pq, pid = _probe_refit(X["test_ood"][pool][sel], yp[sel], [X["test_ood"][query], X["test_id"]])
                q = _score(yq, pq)
                ida = float((pid.argmax(1) == y_id).mean())
                rows.append({"seed": seed, "k": k, "draw": d, "adapter": REFERENCE, "balanced_acc": q[0], "auroc": q[1],
                             "gain": q[0] - base_q[0], "id_acc": ida, "id_change": ida - base_id, "changed": True,
                             "n_masked": 0, "n_amplified": 0, "fit_seconds": time.perf_counter() - ts})
        timing.append(time_adaptation(model, P_ood, yp, pool))
    df = pd.DataFrame(rows)
    res = {
        "protocol": pdata.proto.name, "method": method, "seeds": list(pdata.splits), "ks": list(ks), "draws": draws,
        "query_frac": query_frac, "adapters": adapters + [REFERENCE],
        "source": {"query_balanced_acc": float(np.mean([b["query_balanced_acc"] for b in baselines.values()])),
                   "acceptance_verdicts": dict(Counter(b["acceptance"]["verdict"] for b in baselines.values())),
                   "id_acc": float(np.mean([b["id_acc"] for b in baselines.values()])), "per_seed": baselines},
        "results": aggregate_draws(df, n_boot=n_boot),
        "estimate": estimate_quality(df),
        "timing_1000_images": timing,
        "scored_on": "query: the held-out half of the new site's patients, never in a support set or the unlabelled "
                     "pool; support and unlabelled images come from the other half",
        "concepts_changed_k4": {a: {c: n for c, n in cnt.most_common(12)} for a, cnt in chosen.items() if cnt},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return json_safe(res)


def _adapter_row(a, seed, k, d, name, yq, P_query, P_id, y_id, base_q, base_id) -> dict:
    q = _score(yq, a.predict_proba_from_concepts(P_query))
    ida = float((a.predict_proba_from_concepts(P_id).argmax(1) == y_id).mean())
    acts = Counter(c.action for c in a.changes_)
    row = {"seed": seed, "k": k, "draw": d, "adapter": name, "balanced_acc": q[0], "auroc": q[1],
           "gain": q[0] - base_q[0], "id_acc": ida, "id_change": ida - base_id,
           "changed": a.edit_.changed(ConceptEdit.identity(a.model)), "n_masked": acts["masked"],
           "n_amplified": acts["amplified"], "fit_seconds": a.fit_seconds_}
    est = getattr(a, "estimate_", None)
    if est is not None:
        row.update(estimate=est.gain, estimate_lo=est.ci95[0], estimate_hi=est.ci95[1])
    return row


def estimate_quality(df: pd.DataFrame) -> dict:
    """Per adapter that prints an estimate, and k: its mean error against the held-out gain and its coverage."""
    out: dict = {}
    if "estimate" not in df:
        return out
    for (name, k), g in df.dropna(subset=["estimate"]).groupby(["adapter", "k"], sort=False):
        err = g["estimate"] - g["gain"]
        covered = (g["estimate_lo"] <= g["gain"]) & (g["gain"] <= g["estimate_hi"])
        out.setdefault(name, {})[str(k)] = {
            "n": len(g), "mean_estimate": float(g["estimate"].mean()), "mean_heldout_gain": float(g["gain"].mean()),
            "mean_error": float(err.mean()), "mean_abs_error": float(err.abs().mean()),
            "coverage_95": float(covered.mean()),
            "mean_interval_width": float((g["estimate_hi"] - g["estimate_lo"]).mean())}
    return out


def time_adaptation(model, P_site: np.ndarray, y_pool: np.ndarray, pool: np.ndarray, n: int = 1000, k: int = 4) -> dict:
    """Seconds to adapt with the default adapter (k per class labelled, ``n`` site images unlabelled) and re-score
    the ``n`` images, from their concept activations (site images re-used to reach ``n``)."""
    rng = np.random.default_rng(0)
    P = P_site[rng.choice(len(P_site), n, replace=True)]
    sel = draw_support(y_pool, k, rng)
    t0 = time.perf_counter()
    a = create_adapter(DEFAULT_ADAPTER, model).fit_concepts(P_site[pool][sel], y_pool[sel], P_unlabelled=P)
    a.predict_proba_from_concepts(P)
    return {"n_images": n, "k": k, "adapter": DEFAULT_ADAPTER, "seconds": round(time.perf_counter() - t0, 3),
            "from": "concept activations of cached features"}


def aggregate_draws(df: pd.DataFrame, *, n_boot: int = 2000) -> dict:
    """Per adapter and k: means, the paired gain with a bootstrap 95 % interval, win rate, ID change, time."""
    out: dict = {}
    rng = np.random.default_rng(0)
    for (name, k), g in df.groupby(["adapter", "k"], sort=False):
        gain = g["gain"].to_numpy()
        boots = gain[rng.integers(0, len(gain), (n_boot, len(gain)))].mean(1)
        out.setdefault(name, {})[str(k)] = {
            "n": len(g),
            "balanced_acc": float(g["balanced_acc"].mean()), "auroc": float(g["auroc"].mean()),
            "gain": float(gain.mean()), "gain_ci95": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
            "win_rate": float((gain > 1e-9).mean()), "loss_rate": float((gain < -1e-9).mean()),
            "no_worse_than_minus_0.01": float((gain >= -0.01 - 1e-9).mean()),
            "id_acc": float(g["id_acc"].mean()), "id_change": float(g["id_change"].mean()),
            "changed_rate": float(g["changed"].mean()), "n_masked": float(g["n_masked"].mean()),
            "n_amplified": float(g["n_amplified"].mean()),
            "fit_seconds": float(g["fit_seconds"].mean()), "fit_seconds_max": float(g["fit_seconds"].max()),
        }
    return out


def markdown_table(res: dict, k: int = 4) -> str:
    """One row per adapter at ``k`` images per class."""
    lines = [f"### {res['protocol']} — source `{res['method']}`, k = {k} per class, {len(res['seeds'])} seeds × "
             f"{res['draws']} draws (source: query bal. acc {res['source']['query_balanced_acc']:.3f}, "
             f"ID acc {res['source']['id_acc']:.3f})", "",
             "| adapter | query bal. acc | AUROC | gain [95 % CI] | win / loss | ≥ −0.01 | ID change | changed | masked | amplified | fit s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, per_k in res["results"].items():
        r = per_k.get(str(k))
        if r is None:
            continue
        lines.append(f"| {name} | {r['balanced_acc']:.3f} | {r['auroc']:.3f} | {r['gain']:+.3f} "
                     f"[{r['gain_ci95'][0]:+.3f}, {r['gain_ci95'][1]:+.3f}] | {r['win_rate']:.2f} / {r['loss_rate']:.2f} | "
                     f"{r['no_worse_than_minus_0.01']:.2f} | "
                     f"{r['id_change']:+.3f} | {r['changed_rate']:.2f} | {r['n_masked']:.1f} | {r['n_amplified']:.1f} | "
                     f"{r['fit_seconds']:.3f} |")
    return "\n".join(lines) + "\n"


def estimate_table(res: dict) -> str:
    """How well printed gain estimates match the held-out gain, per adapter and k."""
    if not res.get("estimate"):
        return ""
    lines = ["", f"### printed estimate vs held-out gain — {res['protocol']}", "",
             "| adapter | k | draws | mean estimate | mean held-out gain | mean error | mean abs. error | 95 % coverage | "
             "mean width |", "|---|---|---|---|---|---|---|---|---|"]
    for name, per_k in res["estimate"].items():
        for k, r in per_k.items():
            lines.append(f"| {name} | {k} | {r['n']} | {r['mean_estimate']:+.3f} | {r['mean_heldout_gain']:+.3f} | "
                         f"{r['mean_error']:+.3f} | {r['mean_abs_error']:.3f} | {r['coverage_95']:.2f} | "
                         f"{r['mean_interval_width']:.3f} |")
    return "\n".join(lines) + "\n"
