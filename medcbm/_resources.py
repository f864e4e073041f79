"""Where medcbm's shipped data lives: ``configs/`` (protocols, run configs) and ``knowledge/`` (corpus,
concept banks, lexicons, mappings, priors).

In a source checkout (or an editable install) they sit next to the package. A regular ``pip install``
copies them to ``<prefix>/share/medcbm`` (``[tool.setuptools.data-files]`` in ``pyproject.toml``).
``MEDCBM_RESOURCES`` points elsewhere, e.g. at a hospital's own curated copy.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from medcbm.errors import ConfigError

_MARKERS = ("configs", "knowledge")


def _candidates() -> list[Path]:
    env = os.environ.get("MEDCBM_RESOURCES")
    if env:
        return [Path(env).expanduser()]  # an explicit choice is never silently replaced by a fallback
    return [Path(__file__).resolve().parents[1], Path(sys.prefix) / "share" / "medcbm"]


@lru_cache(maxsize=None)
def _root(candidates: tuple[Path, ...]) -> Path:
    for base in candidates:
        if all((base / m).is_dir() for m in _MARKERS):
            return base
    where = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"medcbm's shipped configs/ and knowledge/ folders were not found (looked in {where}); "
                      "reinstall medcbm or set MEDCBM_RESOURCES to a folder holding them")


def resources_root() -> Path:
    """The folder holding ``configs/`` and ``knowledge/``."""
    return _root(tuple(_candidates()))


def resource_path(*parts: str) -> Path:
    """A path under :func:`resources_root`, e.g. ``resource_path("knowledge", "priors")``."""
    return resources_root().joinpath(*parts)


def public_name(path: str | os.PathLike) -> str:
    """How a file is named in outputs that leave this machine: relative to the shipped resources when it is one
    of them (``knowledge/priors/ph2_benign_malignant.yaml``), else its file name — never an absolute path."""
    p = Path(path)
    try:
        return p.resolve().relative_to(resources_root().resolve()).as_posix()
    except (ValueError, ConfigError):
        return p.name
