"""The small Python API behind ``import medcbm``: train or load a model, then predict, explain, intervene,
adapt and audit — each a keyword-only call that takes a manifest file or a :class:`~medcbm.data.manifest.Manifest`.

The CLI and these calls share their implementation (:mod:`medcbm.workflows`, :mod:`medcbm.audit`); nothing
here is a second code path. Heavy modules are imported on first use, so ``import medcbm`` stays fast.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd


DEFAULT_CACHE = "runs/cache/features"


def _manifest(images):
    """A checked :class:`Manifest` from a manifest file or a Manifest."""
    from medcbm.data.manifest import Manifest, load_manifest

    return images if isinstance(images, Manifest) else load_manifest(images).check_files()


class Model:
    """A saved CBM (or one of its site adaptations), ready to use. Obtain it from :func:`train` or :func:`load`.

    Attributes:
        path: the model (or adaptation) folder.
        classes, concepts: the class names and the bottleneck's concept names.
    """

    def __init__(self, path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = DEFAULT_CACHE,
                 progress: bool = False):
        from medcbm.adapt.store import load_model

        self.path = Path(path)
        self.cache_dir, self.progress = cache_dir, progress
        self._model, self._meta = load_model(self.path)
        self.classes: list[str] = list(self._model.classes)
        self.concepts: list[str] = list(self._model.concept_names_)

    def __repr__(self) -> str:
        return f"medcbm.Model({self.path.name!r}, classes={self.classes}, {len(self.concepts)} concepts)"

    @property
    def site_adjusted(self) -> bool:
        """The model subtracts a learned per-site offset from its concepts (it then needs each image's site)."""
        return getattr(self._model, "offsets_", None) is not None

    def _features(self, manifest, site: str | None):
        from medcbm.backbones.features import extract_features
        from medcbm.bottleneck.artifacts import backbone_from_meta
        from medcbm.bottleneck.metadata import model_groups

        feats = extract_features(manifest, backbone_from_meta(self._meta), cache_dir=self.cache_dir,
                                 progress=self.progress)
        return feats.X, feats.manifest, model_groups(self._model, feats.manifest.frame, self._meta, site=site)

    def predict(self, images, *, site: str | None = None, top_k: int = 3) -> pd.DataFrame:
        """One row per image: the prediction, class and concept probabilities, top concepts and the scope
        verdict (``in_scope``, ``scope_reason``), as ``medcbm predict`` writes them.

        Args:
            images: a manifest file or a :class:`Manifest` (labels are not needed).
            site: every image's site, for a site-adjusted model whose manifest has no ``site`` column
                (``"unknown"``: no adjustment).
        """
        from medcbm.workflows.train import predict_cbm

        return predict_cbm(self.path, _manifest(images), cache_dir=self.cache_dir, top_k=top_k, site=site,
                           progress=self.progress)

    def evaluate(self, images, *, split: str | None = None) -> dict:
        """Accuracy, AUROC and ECE with intervals, per subgroup, on a labelled manifest (``split``: only the
        images of that training-time split, e.g. ``"test"``)."""
        from medcbm.workflows.train import evaluate_cbm

        return evaluate_cbm(self.path, _manifest(images), split=split, cache_dir=self.cache_dir,
                            progress=self.progress)

    def explain(self, images, *, site: str | None = None) -> list:
        """Per image, each concept's contribution to the prediction, its prior agreement and its bank link
        (:class:`~medcbm.audit.explain.CaseExplanation`, keyed by the manifest's ids)."""
        from medcbm.audit.explain import explain

        X, m, groups = self._features(_manifest(images), site)
        return explain(self._model, X, case_ids=list(m.frame["id"]), groups=groups)

    def intervene(self, images, concepts: Mapping[str, float], *, site: str | None = None) -> pd.DataFrame:
        """Class probabilities after setting concepts to values a clinician gives (0 absent .. 1 present),
        with the probabilities before, one row per image."""
        X, m, groups = self._features(_manifest(images), site)
        before, after = self._model.predict_proba(X, groups), self._model.intervene(X, dict(concepts), groups)
        cols = {"id": m.frame["id"].to_numpy()}
        cols.update({f"p_{c}_before": before[:, j] for j, c in enumerate(self.classes)})
        cols.update({f"p_{c}": after[:, j] for j, c in enumerate(self.classes)})
        cols["prediction"] = np.asarray(self.classes)[after.argmax(1)]
        return pd.DataFrame(cols)

    def adapt(self, *, site: str, support=None, unlabelled=None, adapter: str = "site", force: bool = False,
              **params: Any) -> "Model":
        """Fit a site adaptation (a few labelled ``support`` images and/or the site's ``unlabelled`` ones) and
        return it as a model; the base model folder gains ``adaptations/<site>/``."""
        from medcbm.workflows.adapt import adapt_cbm

        _, folder = adapt_cbm(self.path, None if support is None else _manifest(support), site=site,
                              adapter=adapter, unlabelled=None if unlabelled is None else _manifest(unlabelled),
                              force=force, cache_dir=self.cache_dir, progress=self.progress, **params)
        return Model(folder, cache_dir=self.cache_dir, progress=self.progress)

    def audit(self, images, *, out_dir: str | os.PathLike, force: bool = False, **options: Any) -> dict[str, Path]:
        """Write the audit (HTML, JSON and its schema, model card) into ``out_dir``; ``options`` as
        :func:`medcbm.audit.report.build_audit` (e.g. ``max_cases``, ``occlusion_cases``)."""
        from medcbm.audit.report import write_audit_report

        return write_audit_report(self.path, _manifest(images), out_dir, force=force, cache_dir=self.cache_dir,
                                  progress=self.progress, **options)


def load(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = DEFAULT_CACHE,
         progress: bool = False) -> Model:
    """A saved model or adaptation folder (checked against its schema and checksums before use)."""
    return Model(path, cache_dir=cache_dir, progress=progress)


def train(*, name: str, manifest=None, train=None, val=None, protocol: str | None = None,
          dataset: str | None = None, split: str | None = None, recipe: str = "cbm",
          out_dir: str | os.PathLike | None = None, label_map: Mapping[str, Sequence[str]] | None = None,
          drop_unmapped: bool = False, seed: int = 0, overrides: Mapping[str, Any] | None = None,
          force: bool = False, data_root: str | os.PathLike | None = None,
          cache_dir: str | os.PathLike | None = DEFAULT_CACHE, progress: bool = False) -> Model:
    """Train a CBM recipe (``medcbm methods`` lists them) and save it, as ``medcbm train`` does.

    Give exactly one data source: ``manifest`` (with ``split="auto"`` or ``"column"``), ``train`` + ``val``,
    a shipped ``protocol``, or a bundled ``dataset``. Manifests may be files or :class:`Manifest` objects.

    Raises:
        ConfigError: the output folder already holds a model and ``force`` is not set, or the data sources
            given are not exactly one.
    """
    from medcbm.workflows.config import DataConfig, TrainConfig
    from medcbm.workflows.train import train_cbm

    with tempfile.TemporaryDirectory(prefix="medcbm-") as tmp:
        paths = {k: _as_file(v, Path(tmp) / f"{k}.csv") for k, v in
                 (("manifest", manifest), ("train_manifest", train), ("val_manifest", val))}
        one_table = manifest is not None or dataset is not None
        data = DataConfig(protocol=protocol, dataset=dataset, split=(split or "auto") if one_table else split,
                          label_map={k: list(v) for k, v in label_map.items()} if label_map else None,
                          drop_unmapped=drop_unmapped, seed=seed, **paths)
        cfg = TrainConfig(name=name, data=data, model=recipe, overrides=dict(overrides or {}),
                          **({"out_dir": str(out_dir)} if out_dir else {}))
        train_cbm(cfg, data_root=data_root, cache_dir=cache_dir, progress=progress, force=force)
    return Model(cfg.resolved_out_dir(), cache_dir=cache_dir, progress=progress)


def _as_file(value, tmp_path: Path) -> str | None:
    """A manifest file path for the config: a path as given, a Manifest written (absolute image paths) to a
    temporary file that only lives while training (models record its content hash, never its path)."""
    from medcbm.data.manifest import Manifest

    if value is None:
        return None
    if isinstance(value, Manifest):
        value.absolute_frame().to_csv(tmp_path, index=False)
        return str(tmp_path)
    return str(value)
