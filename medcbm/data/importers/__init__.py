"""Dataset importers: each writes the common manifest format (see :mod:`medcbm.data.manifest`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from medcbm._registry import Registry
from medcbm.data.manifest import Manifest, SkipLog
from medcbm.data.paths import resolve_data_root

from medcbm.data.importers.covid_cxr import import_covid_cxr
from medcbm.data.importers.derm7pt import import_derm7pt
from medcbm.data.importers.folder import import_folder
from medcbm.data.importers.ham10000 import import_ham10000
from medcbm.data.importers.ph2 import import_ph2

#: dataset name -> importer ``(folder, *, skips) -> Manifest``; ``modality`` is a filter for listings
IMPORTERS: Registry[Callable[..., Manifest]] = Registry("dataset")
IMPORTERS.add("ham10000", import_ham10000, modality="dermoscopy")
IMPORTERS.add("ph2", import_ph2, modality="dermoscopy")
IMPORTERS.add("derm7pt", import_derm7pt, modality="dermoscopy")
IMPORTERS.add("covid-cxr", import_covid_cxr, modality="chest_xray")


def list_datasets(modality: str | None = None) -> list[str]:
    """Names of the bundled-dataset importers (optionally of one modality)."""
    return IMPORTERS.names(modality=modality)


def import_dataset(name: str, data_root: str | os.PathLike | None = None, *, skips: SkipLog | None = None) -> Manifest:
    """Build the manifest of a known dataset found under the data root.

    Args:
        name: one of :func:`list_datasets`.
        data_root: folder holding the datasets (default: ``MEDCBM_DATA`` or ``../shared/data``).
        skips: opt-in record of rows left out (missing files); without it they raise.
    """
    importer = IMPORTERS.get(name)  # an unknown name raises RegistryError listing the available ones
    return importer(Path(resolve_data_root(data_root)) / name, skips=skips)


__all__ = ["IMPORTERS", "import_covid_cxr", "import_dataset", "import_derm7pt", "import_folder", "import_ham10000", "import_ph2", "list_datasets"]
