"""Dataset importers: each writes the common manifest format (see :mod:`medcbm.data.manifest`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from medcbm.data.manifest import Manifest, SkipLog
from medcbm.data.paths import resolve_data_root
from medcbm.errors import RegistryError

from medcbm.data.importers.covid_cxr import import_covid_cxr
from medcbm.data.importers.derm7pt import import_derm7pt
from medcbm.data.importers.folder import import_folder
from medcbm.data.importers.ham10000 import import_ham10000
from medcbm.data.importers.ph2 import import_ph2

_DATASETS: dict[str, Callable[..., Manifest]] = {
    "ham10000": import_ham10000,
    "ph2": import_ph2,
    "covid-cxr": import_covid_cxr,
    "derm7pt": import_derm7pt,
}


def list_datasets() -> list[str]:
    """Names of the bundled-dataset importers."""
    return sorted(_DATASETS)


def import_dataset(name: str, data_root: str | os.PathLike | None = None, *, skips: SkipLog | None = None) -> Manifest:
    """Build the manifest of a known dataset found under the data root.

    Args:
        name: one of :func:`list_datasets`.
        data_root: folder holding the datasets (default: ``MEDCBM_DATA`` or ``../shared/data``).
        skips: opt-in record of rows left out (missing files); without it they raise.
    """
    if name not in _DATASETS:
        raise RegistryError(f"unknown dataset '{name}'. Available: {', '.join(list_datasets())}")
    root = resolve_data_root(data_root)
    return _DATASETS[name](Path(root) / name, skips=skips)


__all__ = ["import_covid_cxr", "import_dataset", "import_derm7pt", "import_folder", "import_ham10000", "import_ph2", "list_datasets"]
