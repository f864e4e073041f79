"""``KnowledgeCBM``: image features -> concept probabilities -> knowledge-constrained linear layer."""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
from sklearn.base import BaseEstimator

from medcbm.bottleneck.domain import FeatureDomain
from medcbm.bottleneck.estimator_math import InputMap, softmax
from medcbm.bottleneck.nuisance import ConceptOffsets
from medcbm.bottleneck.trainer import BottleneckConfig, FittedBottleneck, fit_bottleneck
from medcbm.concepts.grounding.base import ConceptGrounder, check_features
from medcbm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def prior_matrix(prior: Mapping[str, Mapping[str, float]] | np.ndarray | None, classes: list[str],
                 concepts: list[str]) -> np.ndarray | None:
    """Align a class -> concept -> {-1, 0, +1} prior to ``(len(classes), len(concepts))``.

    Concepts absent from the prior get 0 (no knowledge); classes the model does not have are an error.
    """
    if prior is None:
        return None
    if isinstance(prior, np.ndarray):
        if prior.shape != (len(classes), len(concepts)):
            raise ConfigError(f"prior matrix has shape {prior.shape}, expected ({len(classes)}, {len(concepts)})")
        return prior.astype(np.float32)
    unknown = sorted(set(prior) - set(classes))
    if unknown:
        raise ConfigError(f"prior references unknown classes {unknown}; the model's classes are {classes}. "
                          "Fix the class names in the concept bank or the label map.")
    M = np.zeros((len(classes), len(concepts)), np.float32)
    for i, c in enumerate(classes):
        for j, k in enumerate(concepts):
            v = float(prior.get(c, {}).get(k, 0.0))
            if v not in (-1.0, 0.0, 1.0):
                raise ConfigError(f"prior[{c}][{k}] = {v}; priors must be -1, 0 or +1")
            M[i, j] = v
    missing = [k for k in concepts if not any(k in prior.get(c, {}) for c in classes)]
    if missing:
        logger.info("prior has no entry for concepts %s (treated as 0)", missing)
    return M


__all__ = ["ConceptClassifierMixin", "KnowledgeCBM", "prior_matrix", "softmax"]  # softmax: re-exported


class ConceptClassifierMixin:
    """Class predictions from ``predict_concepts`` and ``decision_function_from_concepts`` (shared by the
    base model and adapted models)."""

    def predict_proba_from_concepts(self, P: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, C)``; never non-finite (a NaN would be written out as a silent "benign").

        Raises:
            DataError: some rows came out non-finite (naming the first rows).
        """
        proba = softmax(self.decision_function_from_concepts(P))
        bad = np.flatnonzero(~np.isfinite(proba).all(1))
        if bad.size:
            raise DataError(f"the model gave non-finite probabilities for {bad.size} of {len(proba)} images (rows "
                            f"{', '.join(map(str, bad[:5]))}); nothing was written — check those image files and, "
                            "for an adapted model, re-run medcbm adapt")
        return proba

    def predict_proba(self, X: np.ndarray, groups=None) -> np.ndarray:
        return self.predict_proba_from_concepts(self.predict_concepts(X, groups))

    def predict(self, X: np.ndarray, groups=None) -> np.ndarray:
        return self.predict_proba(X, groups).argmax(1)

    def score(self, X: np.ndarray, y: np.ndarray, groups=None) -> float:
        """Accuracy."""
        return float((self.predict(X, groups) == np.asarray(y)).mean())

    def contributions(self, X: np.ndarray, groups=None) -> np.ndarray:
        """Per-sample, per-class, per-concept contribution to the logit: ``(n, C, K)``."""
        return self.contributions_from_concepts(self.predict_concepts(X, groups))

    def check_intervention(self, values: Mapping[str, float]) -> dict[int, float]:
        """Concept index -> value; unknown concepts and values outside [0, 1] are one-line errors."""
        names = list(self.concept_names_)
        unknown = [k for k in values if k not in names]
        if unknown:
            raise ConfigError(f"intervention names concepts {unknown} the model does not have (it has {names})")
        bad = {k: v for k, v in values.items() if not isinstance(v, (int, float, np.floating, np.integer))
               or not np.isfinite(v) or not 0.0 <= float(v) <= 1.0}
        if bad:
            raise DataError(f"intervention values must be probabilities in [0, 1]; got {bad}")
        return {names.index(k): float(v) for k, v in values.items()}

    def intervene_concepts(self, P: np.ndarray, values: Mapping[str, float]) -> np.ndarray:
        """Class probabilities after setting the named concepts of every row of ``P (n, K)`` to ``values``.

        The head reads a set value clipped to the concept's training range (see ``KnowledgeCBM``): 1 means "as
        present as any training image", not an extrapolation beyond them.
        """
        idx = self.check_intervention(values)
        P = np.array(P, dtype=np.float64, copy=True)
        for j, v in idx.items():
            P[:, j] = v
        return self.predict_proba_from_concepts(P)

    def intervene(self, X: np.ndarray, values: Mapping[str, float], groups=None) -> np.ndarray:
        """Class probabilities ``(n, C)`` of images ``X`` with concepts set to known values (name -> [0, 1])."""
        self.check_intervention(values)  # before the (slower) grounding pass
        return self.intervene_concepts(self.predict_concepts(X, groups), values)


class KnowledgeCBM(ConceptClassifierMixin, BaseEstimator):
    """A concept bottleneck model with a fitted concept grounder and a KnoBo-prior linear layer.

    Args:
        grounder: fitted :class:`ConceptGrounder` (e.g. PH2 probes, transferred).
        classes: class names, in label-index order.
        prior: class -> concept -> ±1/0, or a matrix aligned to ``grounder.concept_names_``.
        config: bottleneck hyper-parameters.
        concepts: restrict the bottleneck to these grounder concepts (default: all kept ones).
        nuisance_adjust: subtract each nuisance group's within-class concept offset (fitted on the training
            data, see :mod:`medcbm.bottleneck.nuisance`); ``fit`` then needs ``groups``, and predictions use the
            images' groups when given.

    Attributes (after ``fit``): ``W_`` ``(C, K)``, ``b_``, ``concept_names_``, ``prior_`` ``(C, K)``, ``fit_info_``,
    ``config_`` (the settings actually used: ``fit`` never changes ``config``, e.g. a class-balanced loss
    switched on for extreme imbalance shows here), ``offsets_`` (:class:`ConceptOffsets` or ``None``),
    ``class_means_`` ``(C, K)`` (mean training activation per class, used by :mod:`medcbm.adapt`),
    ``feature_domain_`` (:class:`~medcbm.bottleneck.domain.FeatureDomain`: the training features' mean, its
    distance limit calibrated on the validation images; ``None`` for a model saved before it existed),
    ``p_lo_``/``p_hi_`` (the training activations' range: the head reads every activation clipped to it, so an
    intervention to 0 or 1 never leaves what it was trained on) and ``p_mean_``/``p_scale_`` (the
    standardisation after the clip); ``input_map_`` puts the four together.
    """

    def __init__(self, grounder: ConceptGrounder, *, classes: list[str], prior=None,
                 config: BottleneckConfig | None = None, concepts: list[str] | None = None,
                 nuisance_adjust: bool = False):
        self.grounder, self.classes, self.prior = grounder, classes, prior
        self.config, self.concepts, self.nuisance_adjust = config, concepts, nuisance_adjust

    def _concept_index(self) -> np.ndarray:
        names = self.grounder.concept_names_
        if self.concepts is None:
            return np.arange(len(names))
        missing = [c for c in self.concepts if c not in names]
        if missing:
            raise ConfigError(f"concepts {missing} are not produced by the grounder (it has {names})")
        return np.array([names.index(c) for c in self.concepts])

    def predict_concepts(self, X: np.ndarray, groups=None) -> np.ndarray:
        """Concept activations ``(n, K)`` in ``concept_names_`` order, nuisance-adjusted for a model fitted so.

        Args:
            groups: each image's nuisance group (site), or one name for all of them. A site-adjusted model
                needs them: ``"unknown"`` (any name it was not trained on) leaves the activations unadjusted.

        Raises:
            ConfigError: a site-adjusted model and no ``groups`` (the same image would silently get another
                probability than with its site).
        """
        P = self.grounder.predict_concepts(check_features(X))[:, self._concept_index()]
        offsets = getattr(self, "offsets_", None)
        if offsets is None:
            return P
        if groups is None:
            raise ConfigError(f"this model adjusts concepts per site (trained on {', '.join(offsets.groups)}): pass "
                              "each image's site as groups=..., or groups='unknown' for a site it never saw "
                              "(no adjustment)")
        return offsets.apply(P, np.full(len(P), groups) if isinstance(groups, str) else groups)

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *,
            sample_weight: np.ndarray | None = None, val_weight: np.ndarray | None = None,
            groups=None, val_groups=None) -> "KnowledgeCBM":
        """Fit the bottleneck on backbone features (the grounder stays fixed).

        Args:
            sample_weight, val_weight: optional per-sample weights, e.g. from
                :func:`medcbm.bottleneck.weights.group_balance_weights` to undo a known nuisance correlation.
            groups, val_groups: nuisance group per image (needed with ``nuisance_adjust``).
        """
        y, y_val = np.asarray(y, int), np.asarray(y_val, int)
        for name, yy in (("training", y), ("validation", y_val)):
            present = np.unique(yy)
            if len(present) < 2:
                raise DataError(f"{name} labels contain a single class ({[self.classes[i] for i in present]}); "
                                "a classifier needs at least two")
            if yy.min() < 0 or yy.max() >= len(self.classes):
                raise DataError(f"{name} labels must be in 0..{len(self.classes) - 1}")
        self.config_ = self.config or BottleneckConfig()
        counts = np.bincount(y, minlength=len(self.classes))
        if counts.min() < 0.02 * counts.sum():
            logger.warning("extreme class imbalance in training labels %s; using a class-balanced loss", counts.tolist())
            self.config_ = self.config_.model_copy(update={"class_balanced": True})
        self.concept_names_ = [self.grounder.concept_names_[i] for i in self._concept_index()]
        self.prior_ = prior_matrix(self.prior, list(self.classes), self.concept_names_)
        self.offsets_ = None
        P, Pv = self.predict_concepts(X), self.predict_concepts(X_val)
        # where the training images lie in feature space, the distance limit set on the validation images:
        # prediction flags images beyond it as out of scope
        self.feature_domain_ = FeatureDomain.fit(check_features(X), check_features(X_val))
        if self.nuisance_adjust:
            if groups is None or val_groups is None:
                raise ConfigError("nuisance_adjust needs the training and validation images' nuisance groups "
                                  "(e.g. a site column)")
            self.offsets_ = ConceptOffsets.fit(P, y, groups)
            P, Pv = self.offsets_.apply(P, groups), self.offsets_.apply(Pv, val_groups)
            logger.info("largest concept offsets per nuisance group: %s", self.offsets_.largest(self.concept_names_))
        # per-class source means of the (adjusted) activations: what an adapter compares a new site against
        self.class_means_ = np.stack([P[y == c].mean(0) if (y == c).any() else P.mean(0)
                                      for c in range(len(self.classes))]).astype(np.float32)
        fb = fit_bottleneck(P, y, Pv, y_val, n_classes=len(self.classes), prior=self.prior_, cfg=self.config_,
                            sample_weight=sample_weight, val_weight=val_weight, val_groups=val_groups)
        self._set_fitted(fb)
        return self

    def _set_fitted(self, fb: FittedBottleneck) -> None:
        self.W_, self.b_ = fb.W, fb.b
        self.set_input_map(fb.inputs)
        self.fit_info_ = fb.info

    def set_input_map(self, inputs: InputMap) -> None:
        """Store the input map as ``p_lo_``, ``p_hi_`` (training range) and ``p_mean_``, ``p_scale_``."""
        self.p_lo_, self.p_hi_, self.p_mean_, self.p_scale_ = inputs.lo, inputs.hi, inputs.mean, inputs.scale

    @property
    def input_map_(self) -> InputMap:
        """How concept activations become the head's inputs (unbounded for a model saved without a range)."""
        lo = getattr(self, "p_lo_", None)
        if lo is None:
            return InputMap.unbounded(self.p_mean_, self.p_scale_)
        return InputMap(lo, self.p_hi_, self.p_mean_, self.p_scale_)

    def concept_inputs(self, P: np.ndarray) -> np.ndarray:
        """The head's inputs ``z (n, K)``: activations clipped to their training range, then standardised."""
        return self.input_map_(np.asarray(P, np.float64))

    def decision_function_from_concepts(self, P: np.ndarray) -> np.ndarray:
        return self.concept_inputs(P) @ self.W_.T + self.b_

    def contributions_from_concepts(self, P: np.ndarray) -> np.ndarray:
        """Per-sample, per-class, per-concept contribution to the logit: ``(n, C, K)`` (sums to logit - bias)."""
        return self.concept_inputs(P)[:, None, :] * self.W_[None, :, :]
