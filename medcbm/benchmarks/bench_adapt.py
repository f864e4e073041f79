"""Few-shot adaptation benchmark: a source CBM per seed, k labelled target images per class, paired draws.

Per seed the source model is trained once on the protocol's train/val splits. Its ``test_ood`` split is the
new site: it is cut once, by patient, into a support pool and a fixed query set. For every k, ``draws``
seeded support sets of k images per class are drawn from the pool — the same sets for every adapter — and
each adapter is fitted on one and scored on the query set (never on the support) and on the source
``test_id`` split (the accuracy it keeps at home).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter

import numpy as np
import pandas as pd

from medcbm._io import json_safe
from medcbm.adapt import create_adapter, list_adapters
from medcbm.benchmarks.bench_shift import load_protocol_data
from medcbm.methods.registry import get_method
from medcbm.metrics import auroc, balanced_accuracy

logger = logging.getLogger(__name__)

REFERENCE = "linear_probe_refit"  # logistic regression on the support images' features: not a CBM, a yardstick


def pool_query_split(groups: np.ndarray, y: np.ndarray, seed: int, query_frac: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Patient-disjoint cut of the target split into a support pool and a query set (per class, seeded)."""
    rng = np.random.default_rng([seed, 7])
    pats = np.unique(groups)
    rng.shuffle(pats)
    # assign whole patients to the query set until each class has its share there
    need = {c: int(round(query_frac * (y == c).sum())) for c in np.unique(y)}
    have = Counter()
    query_pats = set()
    for p in pats:
        rows = groups == p
        cls = Counter(y[rows].tolist())
        if any(have[c] < need[c] for c in cls):
            query_pats.add(p)
            have.update(cls)
    q = np.isin(groups, list(query_pats))
    return np.flatnonzero(~q), np.flatnonzero(q)


def draw_support(y_pool: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray | None:
    """``k`` pool positions per class (``None`` when a class has fewer than ``k``)."""
    out = []
    for c in np.unique(y_pool):
        idx = np.flatnonzero(y_pool == c)
        if len(idx) < k:
            return None
        out.append(rng.choice(idx, k, replace=False))
    return np.concatenate(out)


def _probe_refit(X_sup, y_sup, X_eval: list[np.ndarray]) -> list[np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=500).fit(X_sup, y_sup)
    return [clf.predict_proba(X) for X in X_eval]


def _score(y, proba) -> tuple[float, float]:
    return balanced_accuracy(y, proba), auroc(y, proba)


def run_adapt_benchmark(protocol: str, *, method: str = "cbm", seeds: list[int] | int = 5,
                        ks: tuple[int, ...] = (1, 2, 4, 8, 16), draws: int = 50, adapters: list[str] | None = None,
                        query_frac: float = 0.5, data_root=None, cache_dir: str | os.PathLike | None = "runs/cache/features",
                        progress: bool = True, n_boot: int = 2000) -> dict:
    """Run the benchmark; returns per (adapter, k) aggregates, per-seed baselines and the masked concepts."""
    t0 = time.perf_counter()
    adapters = list(adapters or list_adapters())
    pdata = load_protocol_data(protocol, seeds=seeds, data_root=data_root, cache_dir=cache_dir, progress=progress)
    fn = get_method(method)
    rows: list[dict] = []
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
        baselines[seed] = {"query_balanced_acc": base_q[0], "query_auroc": base_q[1], "id_acc": base_id,
                           "n_pool": len(pool), "n_query": len(query), "train_seconds": round(train_s, 2)}
        logger.info("seed %d: source %s query bal. acc %.3f, ID acc %.3f", seed, method, base_q[0], base_id)
        for k in ks:
            for d in range(draws):
                sel = draw_support(yp, k, np.random.default_rng([seed, k, d]))
                if sel is None:
                    break
                for name in adapters:
                    a = create_adapter(name, model).fit_concepts(P_ood[pool][sel], yp[sel])
                    q = _score(yq, a.predict_proba_from_concepts(P_ood[query]))
                    ida = float((a.predict_proba_from_concepts(P_id).argmax(1) == y_id).mean())
                    acts = Counter(c.action for c in a.changes_)
                    if k == 4:
                        chosen[name].update(f"{c.action}:{c.concept}" for c in a.changes_ if c.action != "shifted")
                    rows.append({"seed": seed, "k": k, "draw": d, "adapter": name, "balanced_acc": q[0], "auroc": q[1],
                                 "gain": q[0] - base_q[0], "id_acc": ida, "id_change": ida - base_id,
                                 "changed": a.selection_.changed, "n_masked": acts["masked"],
                                 "n_amplified": acts["amplified"], "fit_seconds": a.fit_seconds_})
                ts = time.perf_counter()
                pq, pid = _probe_refit(X["test_ood"][pool][sel], yp[sel], [X["test_ood"][query], X["test_id"]])
                q = _score(yq, pq)
                ida = float((pid.argmax(1) == y_id).mean())
                rows.append({"seed": seed, "k": k, "draw": d, "adapter": REFERENCE, "balanced_acc": q[0], "auroc": q[1],
                             "gain": q[0] - base_q[0], "id_acc": ida, "id_change": ida - base_id, "changed": True,
                             "n_masked": 0, "n_amplified": 0, "fit_seconds": time.perf_counter() - ts})
    df = pd.DataFrame(rows)
    res = {
        "protocol": pdata.proto.name, "method": method, "seeds": list(pdata.splits), "ks": list(ks), "draws": draws,
        "query_frac": query_frac, "adapters": adapters + [REFERENCE],
        "source": {"query_balanced_acc": float(np.mean([b["query_balanced_acc"] for b in baselines.values()])),
                   "id_acc": float(np.mean([b["id_acc"] for b in baselines.values()])), "per_seed": baselines},
        "results": aggregate_draws(df, n_boot=n_boot),
        "concepts_changed_k4": {a: {c: n for c, n in cnt.most_common(12)} for a, cnt in chosen.items() if cnt},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return json_safe(res)


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
             "| adapter | query bal. acc | AUROC | gain [95 % CI] | win / loss | ID change | changed | masked | amplified | fit s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, per_k in res["results"].items():
        r = per_k.get(str(k))
        if r is None:
            continue
        lines.append(f"| {name} | {r['balanced_acc']:.3f} | {r['auroc']:.3f} | {r['gain']:+.3f} "
                     f"[{r['gain_ci95'][0]:+.3f}, {r['gain_ci95'][1]:+.3f}] | {r['win_rate']:.2f} / {r['loss_rate']:.2f} | "
                     f"{r['id_change']:+.3f} | {r['changed_rate']:.2f} | {r['n_masked']:.1f} | {r['n_amplified']:.1f} | "
                     f"{r['fit_seconds']:.3f} |")
    return "\n".join(lines) + "\n"
