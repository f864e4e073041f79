"""What makes an adaptation file trustworthy before it touches a prediction: schema, finiteness, shapes, checksum.

An ``adaptation.json`` is human-readable on purpose, so it can also be edited by hand or damaged in transit.
A single NaN in ``edit.scale`` would otherwise make every probability NaN; a huge value would be applied as
is. The file therefore carries a SHA-256 over its canonical JSON (like the model's weight checksum), and
every number of the edit is checked to be finite and within a bound no adapter comes near.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medcbm._io import json_safe
from medcbm.errors import DataError

CHECKSUM_KEY = "sha256"
# adapters scale standardised activations by ~0-4 and refit heads with L2; 1e3 is far beyond either
EDIT_LIMIT = 1e3


class EditRecord(BaseModel):
    """The edit as stored: per-concept scale and shift, the head ``W`` (classes x concepts) and ``b``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    scale: list[float]
    shift: list[float]
    W: list[list[float]]
    b: list[float]

    @field_validator("scale", "shift", "b", "W")
    @classmethod
    def _bounded(cls, v: list) -> list:
        rows = v if v and isinstance(v[0], list) else [v]
        for r, row in enumerate(rows):
            bad = next((i for i, x in enumerate(row) if abs(x) > EDIT_LIMIT), None)
            if bad is not None:
                where = f"[{r}][{bad}]" if rows is v else str(bad)
                raise ValueError(f"entry {where} is {row[bad]:g}, beyond ±{EDIT_LIMIT:g}")
        return v


class BaseModelRef(BaseModel):
    """Which base model the adaptation sits on (relative path and weight checksum)."""

    path: str
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class AdaptationRecord(BaseModel):
    """The fields :func:`medcbm.adapt.store.load_model` relies on; the rest of the file is evidence for people."""

    model_config = ConfigDict(extra="allow")
    format: str
    site: str
    adapter: str
    classes: list[str]
    concepts: list[str]
    edit: EditRecord
    base_model: BaseModelRef


def checksum(doc: dict) -> str:
    """SHA-256 of the document's canonical JSON without its own checksum (as written: NaN stored as null)."""
    body = {k: v for k, v in json_safe(doc).items() if k != CHECKSUM_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def with_checksum(doc: dict) -> dict:
    """``doc`` with its checksum added (the last key, so the file still reads top-down)."""
    return {**doc, CHECKSUM_KEY: checksum(doc)}


def verify(doc: dict, path: str | Path) -> None:
    """Validate an adaptation document read from ``path``.

    Raises:
        DataError: one line naming the file and the first bad field, or a checksum mismatch.
    """
    try:
        AdaptationRecord.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise DataError(f"{path}: field '{loc}': {err['msg']}; this adaptation cannot be used — "
                        "re-run medcbm adapt to write it again") from None
    if doc.get(CHECKSUM_KEY) != checksum(doc):
        raise DataError(f"{path} was changed after medcbm wrote it (checksum mismatch); re-run medcbm adapt "
                        "rather than editing the file")


def check_shapes(doc: dict, *, n_classes: int, n_concepts: int, path: str | Path) -> None:
    """The edit of a :func:`verify`-ed document fits the base model (``n_concepts``, ``n_classes``)."""
    e = doc["edit"]
    want = {"scale": n_concepts, "shift": n_concepts, "b": n_classes, "W": n_classes}
    wrong = [f"edit.{k} has {len(e[k])} entries where the model has {n}" for k, n in want.items() if len(e[k]) != n]
    wrong += [f"edit.W[{r}] has {len(row)} entries where the model has {n_concepts}"
              for r, row in enumerate(e["W"]) if len(row) != n_concepts][:1]
    if wrong:
        raise DataError(f"{path}: {wrong[0]}; this adaptation does not fit its base model — re-run medcbm adapt")
