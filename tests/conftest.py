"""Shared fixtures. Under CI=true missing shared data is a failure, elsewhere a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

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
