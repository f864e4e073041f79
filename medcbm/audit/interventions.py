"""Concept interventions: set concepts to known values and see the prediction change.

- :func:`intervene`: what a clinician does for one case ("the veil is present: what then?");
- :func:`what_if`: flip each of a case's top concepts, one at a time;
- :func:`ask_order`: which concepts a reviewer should be asked about first (expected change of the decision);
- :func:`concept_ranks`: per case, the concepts in the order a correction takes them (random, uncertainty,
  contribution, or the review app's ``ask`` order);
- :func:`intervention_curves`: with true concept labels, task accuracy against the number of concepts
  corrected, for several orders (random, uncertainty-first, largest-contribution-first, oracle-greedy);
- :func:`concept_ablation`: accuracy when concepts are removed (set to their training mean, i.e. no
  contribution), which shows a bottleneck that leans on a few concepts.

Interventions act on the activations the bottleneck reads (after any site adjustment).
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from medcbm.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

ORDERS = ("random", "uncertainty", "contribution", "oracle")


def intervene_concepts(model, P: np.ndarray, values: Mapping[str, float]) -> np.ndarray:
    """Class probabilities after setting the named concepts of every row of ``P (n, K)`` to ``values``."""
    return model.intervene_concepts(P, values)


def intervene(model, X: np.ndarray, values: Mapping[str, float], groups=None) -> np.ndarray:
    """Class probabilities ``(n, C)`` of ``X`` after setting concepts to known values (``model.intervene``).

    Raises:
        ConfigError: a concept the model does not have.
        DataError: a value outside [0, 1].
    """
    return model.intervene(X, values, groups)


def answer_effects(model, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How answering each concept of one case would move its decision margin.

    Args:
        p: the case's concept activations ``(K,)``.

    Returns:
        ``(if_absent, if_present)``, each ``(K,)``: the change of the predicted class's logit minus the
        runner-up's when that concept alone is set to 0 or to 1 (negative: towards the runner-up).
    """
    p = np.asarray(p, dtype=np.float64).reshape(1, -1)
    K = p.shape[1]
    logits = model.decision_function_from_concepts(p)[0]
    c, s = np.argsort(-logits)[:2]
    rows = np.repeat(p, 2 * K, axis=0)
    rows[np.arange(K), np.arange(K)] = 0.0
    rows[K + np.arange(K), np.arange(K)] = 1.0
    L = model.decision_function_from_concepts(rows)
    delta = (L[:, c] - L[:, s]) - (logits[c] - logits[s])
    return delta[:K], delta[K:]


def ask_order(model, p: np.ndarray) -> np.ndarray:
    """Concept indices of one case, the question most likely to move the decision first.

    Each concept is scored by the expected |change of the decision margin| its answer brings, reading the
    activation as the chance the reviewer says "present": ``p |d_present| + (1 - p) |d_absent|``. A confident,
    heavily weighted concept the model may have wrong ranks high; one whose answer cannot matter ranks last.
    The review app asks in this order and the review benchmark simulates a reviewer with it.
    """
    p = np.clip(np.asarray(p, dtype=np.float64).reshape(-1), 0.0, 1.0)
    absent, present = answer_effects(model, p)
    return np.argsort(-(p * np.abs(present) + (1 - p) * np.abs(absent)), kind="stable")


class WhatIf(BaseModel):
    """One flipped concept of one case and what the model would then say."""

    model_config = ConfigDict(frozen=True)
    concept: str
    from_value: float
    to_value: float
    predicted: str
    probability: float
    changes_prediction: bool


def what_if(model, p: np.ndarray, concepts: Sequence[str]) -> list[WhatIf]:
    """Flip each named concept of one case (present -> absent, absent -> present), one at a time.

    Args:
        p: the case's concept activations ``(K,)``.
        concepts: which concepts to flip (e.g. the case's top contributors).
    """
    p = np.asarray(p, dtype=np.float64).reshape(1, -1)
    base = int(model.predict_proba_from_concepts(p).argmax(1)[0])
    names, out = list(model.concept_names_), []
    for k in concepts:
        old = float(p[0, names.index(k)])
        new = 0.0 if old >= 0.5 else 1.0
        q = intervene_concepts(model, p, {k: new})[0]
        c = int(q.argmax())
        out.append(WhatIf(concept=k, from_value=old, to_value=new, predicted=model.classes[c],
                          probability=float(q[c]), changes_prediction=c != base))
    return out


def _accuracy(model, P: np.ndarray, y: np.ndarray) -> float:
    return float((model.predict_proba_from_concepts(P).argmax(1) == y).mean())


def _margin_weights(model, P: np.ndarray) -> np.ndarray:
    """``(n, K)`` |contribution to the predicted-minus-runner-up logit| per concept."""
    proba = model.predict_proba_from_concepts(P)
    order = np.argsort(-proba, axis=1)
    C, rows = model.contributions_from_concepts(P), np.arange(len(P))
    return np.abs(C[rows, order[:, 0]] - C[rows, order[:, 1]])


RANKINGS = ("random", "uncertainty", "contribution", "ask")


def concept_ranks(model, P: np.ndarray, order: str, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """Per case, its concept indices in the order a correction takes them ``(n, K)``.

    Args:
        P: concept activations ``(n, K)``.
        order: ``random`` (a fresh permutation per case, drawn from ``rng``), ``uncertainty`` (activations
            nearest 0.5 first), ``contribution`` (largest |contribution to the predicted-vs-runner-up margin|
            first) or ``ask`` (:func:`ask_order`, the review app's questions).

    Raises:
        ConfigError: an order not in :data:`RANKINGS`, or ``random`` without ``rng``.
    """
    P = np.asarray(P, float)
    if order == "random":
        if rng is None:
            raise ConfigError("the random order needs a seeded generator (rng)")
        return np.argsort(rng.random(P.shape), axis=1)
    if order == "uncertainty":
        return np.argsort(np.abs(P - 0.5), axis=1, kind="stable")
    if order == "contribution":
        return np.argsort(-_margin_weights(model, P), axis=1, kind="stable")
    if order == "ask":
        return np.stack([ask_order(model, p) for p in P]) if len(P) else np.zeros(P.shape, int)
    raise ConfigError(f"unknown concept order '{order}'; choose from {list(RANKINGS)}")


def _curve(model, P: np.ndarray, T: np.ndarray, y: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Accuracy after correcting each row's first 0..K concepts of ``rank (n, K)`` (concept indices)."""
    n, K = P.shape
    Q = P.copy()
    acc = [_accuracy(model, Q, y)]
    rows = np.arange(n)
    for step in range(K):
        j = rank[:, step]
        Q[rows, j] = T[rows, j]
        acc.append(_accuracy(model, Q, y))
    return np.array(acc)


def _oracle_curve(model, P: np.ndarray, T: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Greedy with the labels: each step corrects the concept that raises the true class's probability most."""
    n, K = P.shape
    Q, done = P.copy(), np.zeros((n, K), bool)
    rows = np.arange(n)
    acc = [_accuracy(model, Q, y)]
    for _ in range(K):
        cand = np.repeat(Q[:, None, :], K, axis=1)  # (n, K candidates, K)
        cand[:, np.arange(K), np.arange(K)] = T
        pt = model.predict_proba_from_concepts(cand.reshape(n * K, K)).reshape(n, K, -1)[rows, :, y]
        pt[done] = -np.inf
        j = pt.argmax(1)
        Q[rows, j] = T[rows, j]
        done[rows, j] = True
        acc.append(_accuracy(model, Q, y))
    return np.array(acc)


def normalised_auc(curve: Sequence[float]) -> float:
    """Area under an accuracy-vs-#corrected curve divided by the number of concepts (trapezoids; in [0, 1])."""
    c = np.asarray(curve, float)
    return float(((c[1:] + c[:-1]) / 2).mean()) if len(c) > 1 else float(c[0])


class InterventionCurves(BaseModel):
    """Accuracy after correcting 0..K concepts per order, their normalised AUCs, and the ablation check.

    Attributes:
        curves: order -> accuracy at 0..K corrected concepts (``random``: mean over trials).
        random_trials: each seeded random trial's curve.
        auc: order -> normalised area under the curve.
        all_true_accuracy: accuracy with every concept set to its true value.
    """

    model_config = ConfigDict(frozen=True)
    n: int
    concepts: list[str]
    base_accuracy: float
    all_true_accuracy: float
    curves: dict[str, list[float]]
    random_trials: list[list[float]]
    auc: dict[str, float]


def intervention_curves(model, P: np.ndarray, T: np.ndarray, y: np.ndarray, *, orders: Sequence[str] = ORDERS,
                        n_random: int = 5, seed: int = 0) -> InterventionCurves:
    """Task accuracy against the number of concepts set to their true value, per correction order.

    Args:
        P: predicted concept activations ``(n, K)`` in ``model.concept_names_`` order.
        T: true concept values ``(n, K)`` (0/1; the value a corrected concept takes).
        y: true class indices.
        orders: any of :data:`ORDERS`. ``uncertainty``: activations nearest 0.5 first; ``contribution``:
            largest |contribution to the predicted-vs-runner-up margin| first; ``oracle``: greedy on the
            true class's probability (an upper bound, it reads the labels).
        n_random: seeded random trials (a fresh permutation per case and trial).
    """
    P, T, y = np.asarray(P, float), np.asarray(T, float), np.asarray(y, int)
    if P.shape != T.shape or len(y) != len(P):
        raise DataError(f"shapes disagree: predicted concepts {P.shape}, true concepts {T.shape}, labels {y.shape}")
    if np.isnan(T).any():
        raise DataError("true concept values contain NaN (unannotated); intervene only on annotated concepts")
    unknown = [o for o in orders if o not in ORDERS]
    if unknown:
        raise ConfigError(f"unknown intervention orders {unknown}; choose from {list(ORDERS)}")
    n, K = P.shape
    curves: dict[str, list[float]] = {}
    trials: list[list[float]] = []
    if "random" in orders:
        rng = np.random.default_rng(seed)
        for _ in range(n_random):
            trials.append(_curve(model, P, T, y, concept_ranks(model, P, "random", rng=rng)).tolist())
        curves["random"] = np.mean(trials, axis=0).tolist()
    for o in ("uncertainty", "contribution"):
        if o in orders:
            curves[o] = _curve(model, P, T, y, concept_ranks(model, P, o)).tolist()
    if "oracle" in orders:
        curves["oracle"] = _oracle_curve(model, P, T, y).tolist()
    return InterventionCurves(n=n, concepts=list(model.concept_names_), base_accuracy=_accuracy(model, P, y),
                              all_true_accuracy=_accuracy(model, T, y), curves=curves, random_trials=trials,
                              auc={o: normalised_auc(c) for o, c in curves.items()})


class Ablation(BaseModel):
    """Accuracy with concepts removed (set to the training mean, so they contribute nothing).

    Attributes:
        single: concept -> accuracy without that one concept.
        cumulative: accuracy after removing the ``i`` most important concepts (by mean |margin contribution|).
        order: the concepts in that order.
        concepts_for_half_drop: how many of the most important concepts must go before accuracy has lost half
            of its margin over the majority-class rate (small: the model relies on a few concepts).
    """

    model_config = ConfigDict(frozen=True)
    base_accuracy: float
    majority_accuracy: float
    single: dict[str, float]
    cumulative: list[float]
    order: list[str]
    concepts_for_half_drop: int | None


def concept_ablation(model, P: np.ndarray, y: np.ndarray) -> Ablation:
    """Remove concepts singly and cumulatively (most important first) and record accuracy."""
    P, y = np.asarray(P, float), np.asarray(y, int)
    names = list(model.concept_names_)
    mean = np.asarray(model.p_mean_, float)
    base = _accuracy(model, P, y)
    single = {}
    for j, k in enumerate(names):
        Q = P.copy()
        Q[:, j] = mean[j]
        single[k] = _accuracy(model, Q, y)
    order = np.argsort(-_margin_weights(model, P).mean(0), kind="stable")
    Q, cumulative = P.copy(), [base]
    for j in order:
        Q[:, j] = mean[j]
        cumulative.append(_accuracy(model, Q, y))
    majority = float(np.bincount(y).max() / len(y))
    target = base - (base - majority) / 2
    half = next((i for i, a in enumerate(cumulative) if a <= target), None) if base > majority else None
    return Ablation(base_accuracy=base, majority_accuracy=majority, single=single, cumulative=cumulative,
                    order=[names[j] for j in order], concepts_for_half_drop=half)
