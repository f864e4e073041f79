"""Shared fixtures. Under CI=true missing shared data is a failure, elsewhere a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# DICOM imports pseudonymise with a key file; the tests keep theirs out of the user's home
os.environ.setdefault("MEDCBM_PSEUDONYM_KEY", str(Path(__file__).resolve().parents[1] / ".cache" / "pseudonym.key"))

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, why: str) -> None:
    """Skip locally, fail under CI, when a real-data prerequisite is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data folder (``MEDCBM_DATA`` or ``../shared/data``)."""
    from medcbm.data.paths import default_data_root_candidates

    for p in default_data_root_candidates():
        if (p / "ham10000").is_dir():
            return p.resolve()
    require(False, "shared data not found (set MEDCBM_DATA)")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def feature_cache() -> Path:
    """A feature cache shared by tests (persists locally between runs; fresh on CI)."""
    p = Path(__file__).resolve().parents[1] / ".cache" / "test-features"
    p.mkdir(parents=True, exist_ok=True)
    return p


@pytest.fixture(scope="session")
def ham_manifest(data_root):
    from medcbm.data.importers import import_dataset

    return import_dataset("ham10000", data_root)


@pytest.fixture(scope="session")
def ph2_manifest(data_root):
    from medcbm.data.importers import import_dataset

    return import_dataset("ph2", data_root)


@pytest.fixture(scope="session")
def dicom_file():
    """Path of a real DICOM from pydicom-data (fails under CI when the package is missing)."""

    def get(name: str) -> str:
        try:
            from pydicom.data import get_testdata_file
        except ImportError:  # pragma: no cover
            require(False, "pydicom not installed")
        path = get_testdata_file(name)
        require(path is not None, f"pydicom-data file {name} not available (pip install pydicom-data)")
        return str(path)

    return get


@pytest.fixture(scope="session")
def ph2_features(ph2_manifest, feature_cache):
    """Global efficientnet_lite0 features of the 200 PH2 images and their 0/1 concept annotations."""
    from medcbm.backbones.features import extract_features
    from medcbm.data.ph2_vocab import CONCEPT_PREFIX, PH2_CONCEPTS

    X = extract_features(ph2_manifest, "efficientnet_lite0", cache_dir=feature_cache, progress=False).X
    names = list(PH2_CONCEPTS)
    C = ph2_manifest.frame[[CONCEPT_PREFIX + k for k in names]].to_numpy(float)
    return X, C, names


@pytest.fixture(scope="session")
def own_manifest(ham_manifest, tmp_path_factory):
    """A hospital's own manifest: 160 HAM10000 images, absolute paths, benign/malignant labels, a split column.

    Shared by the training and audit tests, so their features are extracted once.
    """
    import numpy as np

    f = ham_manifest.frame
    rng = np.random.default_rng(0)
    mal = rng.choice(np.flatnonzero(f["malignant"].to_numpy() == 1), 80, replace=False)
    ben = rng.choice(np.flatnonzero(f["malignant"].to_numpy() == 0), 80, replace=False)
    rows = np.r_[mal, ben]
    df = f.iloc[rows][["id", "patient_id", "site", "sex", "age"]].copy()
    df["image"] = [str(ham_manifest.image_path(int(i))) for i in rows]
    df["label"] = np.where(f["malignant"].to_numpy()[rows] == 1, "malignant", "benign")
    df["split"] = np.tile(["train"] * 6 + ["val"] * 2 + ["test"] * 2, 16)
    d = tmp_path_factory.mktemp("own")
    df.to_csv(d / "manifest.csv", index=False)
    return d / "manifest.csv", df.reset_index(drop=True)


# Scheduling under `-n 2 --dist loadfile` (make test): each file runs whole on one worker, handed out in
# collection order. The longest files (the quickstart journey, the local LLM server) start first;
# the notebooks, which reuse the journey's lesion-crop features and fitted concept probes from the shared cache,
# start last — so the two workers do not extract the same images at the same time.
_FIRST, _LAST = ("test_quickstart.py", "test_openai_backend.py"), ("test_notebooks.py",)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: 0 if item.path.name in _FIRST else 2 if item.path.name in _LAST else 1)
