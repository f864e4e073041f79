"""Where the shared datasets live: ``--data-root``, else ``$MEDCBM_DATA``, else ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

from medcbm.errors import DataError

ENV_VAR = "MEDCBM_DATA"


def default_data_root_candidates() -> list[Path]:
    """Candidate roots in priority order (env var first, then ``../shared/data`` beside the checkout)."""
    cands: list[Path] = []
    if os.environ.get(ENV_VAR):
        cands.append(Path(os.environ[ENV_VAR]))
    cands.append(Path.cwd().parent / "shared" / "data")
    # the repository root, when running from an installed editable checkout
    cands.append(Path(__file__).resolve().parents[2].parent / "shared" / "data")
    return cands


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """Return the data root, raising a clear error when it cannot be found.

    Args:
        data_root: explicit path (e.g. from ``--data-root``); overrides the environment.
    """
    if data_root is not None:
        p = Path(data_root).expanduser()
        if not p.is_dir():
            raise DataError(f"data root {p} does not exist or is not a folder (given by --data-root)")
        return p.resolve()
    for p in default_data_root_candidates():
        if p.is_dir():
            return p.resolve()
    tried = ", ".join(str(p) for p in default_data_root_candidates())
    raise DataError(
        f"no data root found (tried {tried}). Pass --data-root DIR or set {ENV_VAR}=DIR to the folder "
        "holding ham10000/, ph2/ and covid-cxr/."
    )
