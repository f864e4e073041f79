"""Where the shared datasets live (``--data-root``, else ``$MEDCBM_DATA``, else ``../shared/data``), and which
file paths a manifest may name."""

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


def leaves_folder(value: str) -> bool:
    """True for a relative path whose ``..`` climb out of the folder it resolves against (``../../etc/passwd``).

    Checked on the path as written: a symlinked folder inside the manifest's folder (a dataset mounted
    elsewhere) stays allowed, as absolute paths are.
    """
    if Path(value).is_absolute():
        return False
    norm = os.path.normpath(value)
    return norm == os.pardir or norm.startswith(os.pardir + os.sep)


def file_problem(path: Path) -> str | None:
    """Why a file named by a manifest cannot be read (``None`` when it can); reads after its kind ("image ...").

    Absolute paths may point anywhere (importers write absolute paths), but only at an existing regular file:
    never a folder, a device (``/dev/zero``) or a pipe.
    """
    if not path.exists():
        return "file not found"
    if not path.is_file():
        return "path is not a regular file (a folder, device or pipe)"
    return None
