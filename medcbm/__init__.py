"""medcbm: knowledge-grounded concept bottleneck models for medical imaging."""

__version__ = "0.1.0"
