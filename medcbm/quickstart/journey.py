"""``make quickstart``: the user's whole journey — import, train CBM and black box, adapt to a site never seen in
training, decide whether to deploy there, audit —
cached stage by stage in one run directory, so an interrupted run resumes and a finished one only re-prints."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from medcbm import __version__
from medcbm._io import atomic_write_json, sha256_text
from medcbm.data.paths import resolve_data_root
from medcbm.errors import ConfigError
from medcbm.quickstart import stages
from medcbm.quickstart.results import QuickstartResult, StageRecord, StageResult
from medcbm.quickstart.stages import JourneyContext

logger = logging.getLogger(__name__)

STAGES = ("data", "train", "adapt", "accept", "audit")
RUNNERS: dict[str, Callable[[JourneyContext, dict[str, StageResult]], StageResult]] = {
    "data": lambda ctx, done: stages.data_stage(ctx),
    "train": lambda ctx, done: stages.train_stage(ctx),
    "adapt": lambda ctx, done: stages.adapt_stage(ctx),
    "accept": lambda ctx, done: stages.accept_stage(ctx, Path(done["adapt"].adaptation_dir)),
    "audit": lambda ctx, done: stages.audit_stage(ctx, Path(done["adapt"].adaptation_dir)),
}


def stage_outputs(ctx: JourneyContext, result: StageResult) -> list[Path]:
    """The files a finished stage left; if one is gone the stage runs again."""
    if result.stage == "data":
        return [Path(result.manifest)] + [ctx.split_path(s) for s in result.split_sizes]
    if result.stage == "train":
        return [Path(result.model_dir) / "model.json", Path(result.model_dir) / "model.safetensors"]
    if result.stage == "adapt":  # the folder, not its file: naming that would import the adaptation layer
        return [Path(result.adaptation_dir), Path(result.support_manifest), Path(result.unlabelled_manifest),
                Path(result.query_manifest)]
    if result.stage == "accept":
        return [Path(result.html), Path(result.json_path)]
    return [Path(result.html), Path(result.json_path), Path(result.model_card)]


def stage_keys(ctx: JourneyContext) -> dict[str, str]:
    """One key per stage, chained: changing a stage's inputs (or anything upstream) changes its key."""
    keys, prev = {}, sha256_text(__version__, str(ctx.data_root), str(ctx.run_dir.resolve()),
                                 str(ctx.cache_dir.resolve()), stages.PROTOCOL, str(ctx.seed))
    params = {"data": (), "train": ("cbm",), "adapt": (stages.ADAPTER, str(ctx.k)), "accept": (),
              "audit": (str(ctx.n_cases), str(ctx.occlusion_cases))}
    for stage in STAGES:
        prev = keys[stage] = sha256_text(prev, stage, *params[stage])[:16]
    return keys


class StageStore:
    """``RUN_DIR/stages/<stage>.json``: a finished stage's key, time and result."""

    def __init__(self, folder: Path):
        self.folder = folder

    def load(self, stage: str, key: str, ctx: JourneyContext) -> StageRecord | None:
        """The stage's record if it finished with this key and its files are still there, else ``None``."""
        path = self.folder / f"{stage}.json"
        if not path.is_file():
            return None
        try:
            rec = StageRecord.model_validate_json(path.read_text(encoding="utf-8"))
        except (ValidationError, OSError, UnicodeDecodeError) as exc:
            logger.warning("quickstart stage %s: unreadable record %s (%s); running it again", stage, path,
                           type(exc).__name__)
            return None
        if rec.key != key or rec.stage != stage:
            return None
        missing = [p for p in stage_outputs(ctx, rec.result) if not p.exists()]
        if missing:
            logger.info("quickstart stage %s: %s is gone; running it again", stage, missing[0])
            return None
        return rec

    def save(self, rec: StageRecord) -> None:
        atomic_write_json(self.folder / f"{rec.stage}.json", rec.model_dump(mode="json"))


def check_writable(*folders: Path) -> None:
    """Fail early, in one line, when the run directory (or the cache) cannot be written."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".medcbm-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"cannot write to {folder} ({exc.strerror or type(exc).__name__}); pass --run-dir "
                              "(or --cache-dir) a folder you can write to") from None


def run_quickstart(*, data_root: str | os.PathLike | None = None, run_dir: str | os.PathLike = "runs/quickstart",
                   cache_dir: str | os.PathLike | None = None, seed: int = 0, k: int = 4, n_cases: int = 6,
                   occlusion_cases: int = 2, progress: bool = True) -> QuickstartResult:
    """Walk the journey; stages that finished before with the same inputs are reused, not rerun.

    Args:
        data_root: the shared datasets (default: ``$MEDCBM_DATA``, then ``../shared/data``).
        run_dir: where everything is written (``metrics.json`` holds the result).
        cache_dir: feature cache (default ``run_dir/features``).
        seed: protocol split seed; k: labelled new-site images per class; n_cases: audited cases.

    Returns:
        The result of every stage, with per-stage seconds and whether it was reused.
    """
    if k < 1 or n_cases < 2:
        raise ConfigError(f"--k must be >= 1 and --cases >= 2 (got k={k}, cases={n_cases})")
    run = Path(run_dir)
    ctx = JourneyContext(run_dir=run, data_root=resolve_data_root(data_root),
                         cache_dir=Path(cache_dir) if cache_dir else run / "features", seed=seed, k=k,
                         n_cases=n_cases, occlusion_cases=occlusion_cases, progress=progress)
    store, keys = StageStore(run / "stages"), stage_keys(ctx)
    done: dict[str, StageResult] = {}
    seconds: dict[str, float] = {}
    cached: dict[str, bool] = {}
    for stage in STAGES:
        # once a stage has run, everything after it runs too: its inputs may have changed
        upstream_cached = all(cached.values())
        rec = store.load(stage, keys[stage], ctx) if upstream_cached else None
        cached[stage] = rec is not None
        if rec is None:
            if upstream_cached:  # the first stage to run checks once
                check_writable(run, ctx.cache_dir)
            logger.info("quickstart stage %s: running", stage)
            t0 = time.perf_counter()
            result = RUNNERS[stage](ctx, done)
            rec = StageRecord(stage=stage, key=keys[stage], seconds=round(time.perf_counter() - t0, 1), result=result)
            store.save(rec)
        else:
            logger.info("quickstart stage %s: done before, reusing it", stage)
        done[stage], seconds[stage] = rec.result, rec.seconds
    return _finish(ctx, done, seconds, cached)


def _finish(ctx: JourneyContext, done: dict, seconds: dict, cached: dict) -> QuickstartResult:
    metrics = ctx.run_dir / "metrics.json"
    res = QuickstartResult(run_dir=str(ctx.run_dir), data=done["data"], train=done["train"], adapt=done["adapt"],
                           accept=done["accept"], audit=done["audit"], seconds=seconds, cached=cached, metrics=str(metrics))
    if not all(cached.values()) or not metrics.is_file():
        check_writable(ctx.run_dir)
        atomic_write_json(metrics, res.model_dump(mode="json"))
    return res
