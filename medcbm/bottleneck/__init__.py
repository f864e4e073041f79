"""The concept bottleneck: a knowledge-prior-constrained linear layer over concept probabilities."""

from medcbm.bottleneck.estimator import KnowledgeCBM, prior_matrix
from medcbm.bottleneck.trainer import BottleneckConfig

__all__ = ["BottleneckConfig", "KnowledgeCBM", "prior_matrix"]
