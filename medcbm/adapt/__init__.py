"""Few-shot adaptation of a fitted CBM to a new site (TF-TTI-style concept masking and amplification).

``create_adapter(name, model).fit(X_support, y_support)`` returns an adapter that predicts like a CBM;
:mod:`medcbm.adapt.store` saves the adaptation beside the base model, which is never modified.
"""

from medcbm.adapt.base import ADAPTERS, Adapter, ConceptChange, create_adapter, list_adapters, register_adapter
from medcbm.adapt.edit import AdaptedCBM, ConceptEdit

__all__ = ["ADAPTERS", "Adapter", "AdaptedCBM", "ConceptChange", "ConceptEdit", "create_adapter", "list_adapters",
           "register_adapter"]
