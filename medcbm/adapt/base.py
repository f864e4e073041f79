"""The adapter interface: wrap a fitted CBM, fit on a few labelled images of a new site, predict like a CBM.

An adapter is shaped like scikit-learn's ``CalibratedClassifierCV(cv="prefit")``: its constructor takes the
already-fitted base model and hyper-parameter grids; ``fit`` (image features) or ``fit_concepts``
(concept probabilities) on the support set chooses a setting by leave-one-shot-out
(:mod:`medcbm.adapt.selection`), returns ``self``, and leaves the learned state in attributes ending in
``_``. The base model is never modified.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from itertools import product
from typing import Any, ClassVar, Sequence

import numpy as np
from sklearn.base import BaseEstimator

from medcbm._registry import Registry
from medcbm.adapt.edit import AdaptedCBM, ConceptEdit, standardise
from medcbm.adapt.selection import Selection, leave_one_out
from medcbm.concepts.grounding.base import check_features
from medcbm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

ADAPTERS: Registry[type] = Registry("adapter", plugins=("medcbm.adapt.concept_adapters", "medcbm.adapt.head_adapters",
                                                           "medcbm.adapt.site"))


def register_adapter(name: str, *, description: str, interpretable: bool = True):
    """Class decorator: register an :class:`Adapter` under ``name``."""

    def deco(cls: type) -> type:
        cls.name = name
        return ADAPTERS.add(name, cls, description=description, interpretable=interpretable)

    return deco


def list_adapters(pattern: str | None = None) -> list[str]:
    return ADAPTERS.names(pattern)


def create_adapter(name: str, model, **params: Any) -> "Adapter":
    """``ADAPTERS.get(name)(model, **params)``; unknown parameters are a one-line error naming them."""
    cls = ADAPTERS.get(name)
    try:
        return cls(model, **params)
    except TypeError as exc:
        raise ConfigError(f"adapter '{name}': {exc}") from None


@dataclass(frozen=True)
class ConceptChange:
    """One concept an adaptation changed: masked, amplified or shifted, with its statistic and factor."""

    concept: str
    action: str
    statistic: float
    factor: float

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def grid(*axes: tuple[str, Any]) -> list[dict]:
    """All combinations of the given ``(name, value or values)`` axes."""
    names = [n for n, _ in axes]
    values = [v if isinstance(v, (list, tuple)) else (v,) for _, v in axes]
    return [dict(zip(names, combo)) for combo in product(*values)]


def support_labels(y: Sequence, classes: list[str]) -> np.ndarray:
    """Class indices of the support labels (names or indices); one class or unknown names is an error."""
    y = np.asarray(y)
    if y.dtype.kind in ("U", "S", "O"):
        unknown = sorted({str(v) for v in y} - set(classes))
        if unknown:
            raise DataError(f"support labels {unknown} are not classes of the model ({classes})")
        y = np.array([classes.index(str(v)) for v in y])
    y = y.astype(int)
    if len(y) and (y.min() < 0 or y.max() >= len(classes)):
        raise DataError(f"support labels must be in 0..{len(classes) - 1}")
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"the support set has {'no images' if not len(y) else 'a single class'} "
                        f"({[classes[i] for i in present]}); adaptation needs labelled images of at least two classes")
    return y


def check_fingerprint(model, fingerprint: str | None) -> None:
    """Refuse features from another backbone than the model's (when both fingerprints are known)."""
    want = getattr(model, "backbone_fingerprint_", None)
    if fingerprint is not None and want is not None and fingerprint != want:
        raise DataError(f"site features come from backbone fingerprint {fingerprint} but the model was trained on "
                        f"{want} ('{getattr(model, 'backbone_', '?')}'); extract them with the model's backbone")


class PredictsAdapted:
    """Prediction of a fitted adapter: everything goes to ``adapted_`` (the base model with the edit)."""

    def predict_concepts(self, X: np.ndarray, groups=None) -> np.ndarray:
        return self.adapted_.predict_concepts(X, groups)

    def predict_proba_from_concepts(self, P: np.ndarray) -> np.ndarray:
        return self.adapted_.predict_proba_from_concepts(P)

    def predict_proba(self, X: np.ndarray, groups=None) -> np.ndarray:
        return self.adapted_.predict_proba(X, groups)

    def predict(self, X: np.ndarray, groups=None) -> np.ndarray:
        return self.adapted_.predict(X, groups)

    def score(self, X: np.ndarray, y: np.ndarray, groups=None) -> float:
        return self.adapted_.score(X, y, groups)

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes)


class Adapter(PredictsAdapted, BaseEstimator, ABC):
    """Base class. Subclasses define ``candidates``, ``prepare`` and ``make_edit``.

    Attributes (after ``fit``): ``edit_`` (:class:`ConceptEdit`), ``adapted_`` (:class:`AdaptedCBM`),
    ``selection_`` (:class:`Selection`: chosen parameters, leave-one-out scores, reason), ``changes_``
    (list of :class:`ConceptChange`), ``fit_seconds_``.
    """

    name: ClassVar[str] = "adapter"

    def __init__(self, model, *, guard: bool = True):
        self.model, self.guard = model, guard

    @abstractmethod
    def candidates(self) -> list[dict]:
        """Hyper-parameter settings to choose among, mildest first."""

    @abstractmethod
    def prepare(self, Z: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Statistics of a support (sub)set in standardised concept space."""

    @abstractmethod
    def make_edit(self, state: dict[str, np.ndarray], params: dict) -> ConceptEdit:
        """The edit for one setting."""

    # ------------------------------------------------------------------ fitting
    def fit(self, X: np.ndarray, y: Sequence, *, groups=None, backbone_fingerprint: str | None = None) -> "Adapter":
        """Fit on support-set image features (extracted with the base model's backbone)."""
        check_fingerprint(self.model, backbone_fingerprint)
        P = self.model.predict_concepts(check_features(X, name="support features"), groups)
        return self.fit_concepts(P, y)

    def fit_concepts(self, P: np.ndarray, y: Sequence) -> "Adapter":
        """Fit on the support set's concept probabilities ``(n, K)`` (as ``model.predict_concepts`` gives)."""
        t0 = time.perf_counter()
        classes = list(self.model.classes)
        y = support_labels(y, classes)
        P = np.asarray(P, np.float32)
        if P.shape != (len(y), len(self.model.concept_names_)):
            raise DataError(f"support concept probabilities have shape {P.shape}, expected "
                            f"({len(y)}, {len(self.model.concept_names_)})")
        Z = standardise(self.model, P)
        identity = ConceptEdit.identity(self.model)
        self.selection_: Selection = leave_one_out(self.prepare, self.make_edit, self.candidates(), Z, y, identity,
                                                   guard=self.guard)
        self.edit_, self.changes_ = identity, []
        if self.selection_.changed:
            state = self.prepare(Z, y)
            self.edit_ = self.make_edit(state, self.selection_.params)
            self.changes_ = self.describe(state, self.edit_)
        self.adapted_ = AdaptedCBM(self.model, self.edit_)
        self.fit_seconds_ = time.perf_counter() - t0
        if not self.selection_.changed:
            logger.info("%s: %s", self.name, self.selection_.reason)
        return self

    @property
    def reason_(self) -> str:
        return self.selection_.reason

    def evidence(self) -> dict:
        """What justified the adaptation, for its file: the leave-one-out table."""
        sel = self.selection_
        return {"params": sel.params,
                "leave_one_out": {"unadapted": sel.identity.to_json(), "best": sel.best.to_json(),
                                  "best_params": sel.best_params, "gain_balanced_acc": round(sel.gain, 4),
                                  "candidates": sel.table},
                "estimated_gain": round(sel.gain, 4), "estimate_kind": "leave-one-shot-out, best of the candidates "
                "(optimistic: the choice is made on the same images)"}

    def describe(self, state: dict[str, np.ndarray], edit: ConceptEdit) -> list[ConceptChange]:
        """The concepts the edit masks, amplifies or shifts, with the statistic that chose them."""
        names = self.model.concept_names_
        stat = {"masked": state.get("harm"), "amplified": state.get("under"), "shifted": state.get("shift")}
        out = []
        for j, name in enumerate(names):
            if edit.scale[j] == 0:
                action = "masked"
            elif edit.scale[j] > 1 and stat["amplified"] is not None:
                action = "amplified"
            elif abs(edit.shift[j]) > 1e-6 or edit.scale[j] != 1:
                action = "shifted"
            else:
                continue
            s = stat[action]
            out.append(ConceptChange(name, action, float(s[j]) if s is not None else float("nan"),
                                     float(edit.scale[j]) if action != "shifted" else float(edit.shift[j])))
        return out
