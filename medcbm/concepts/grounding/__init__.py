"""Concept grounding: strategies that turn image features into calibrated concept probabilities."""

from medcbm.concepts.grounding.base import ConceptGrounder, check_features
from medcbm.concepts.grounding.probes import ConceptProbes

__all__ = ["ConceptGrounder", "ConceptProbes", "check_features"]
