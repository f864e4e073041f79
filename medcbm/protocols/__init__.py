"""Benchmark protocols (YAML data in ``configs/protocols``) and the seeded, patient-disjoint split builders.

Depends on :mod:`medcbm.data` only: the model and the benchmarks build on it, never the reverse.
"""

from medcbm.protocols.definitions import (ConfoundedSplit, Protocol, SiteHoldoutSplit, list_protocols, load_protocol,
                                         load_protocol_manifest)
from medcbm.protocols.splits import SPLITS, Splits, build_splits, nuisance_groups

__all__ = ["SPLITS", "ConfoundedSplit", "Protocol", "SiteHoldoutSplit", "Splits", "build_splits", "list_protocols",
           "load_protocol", "load_protocol_manifest", "nuisance_groups"]
