"""Concept review in the browser: a clinician answers concepts, the prediction follows, the corrections are kept
(append-only, :mod:`medcbm.review.store`) and exported for ``medcbm adapt --corrections``."""
