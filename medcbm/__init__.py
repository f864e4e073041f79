"""medcbm: knowledge-grounded concept bottleneck models for medical imaging.

The Python API in four names (see :mod:`medcbm.api`)::

    import medcbm
    model = medcbm.train(name="ours", manifest="ours.csv")      # or medcbm.load("runs/models/ours")
    predictions = model.predict("new.csv")                         # with in_scope / scope_reason per image
    model.audit("labelled.csv", out_dir="runs/audit/ours")
"""

__version__ = "0.1.0"

from medcbm.api import Model, load, train  # noqa: E402 - after __version__, which the API's modules read

__all__ = ["Model", "load", "train", "__version__"]
