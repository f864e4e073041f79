"""The versioned concept bank schema (pydantic) with atomic, validated load/save.

A bank is the product of one generation run: the concepts (each a yes/no question with the passage it
came from), the class–concept prior with its evidence, the grounding status of each concept, every
rejected candidate with its reason, and the configuration that produced it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medcbm._io import atomic_write_json
from medcbm._resources import resource_path
from medcbm.errors import DataError
from medcbm.knowledge.stance import STANCES

SCHEMA_VERSION = "1.0"
SUPPORTED_VERSIONS = ("1.0",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassSpec(_Strict):
    """A target class: stable key (``mel``), display name, and synonyms used for matching text."""

    key: str = Field(min_length=1)
    name: str = Field(min_length=1)
    synonyms: list[str] = Field(default_factory=list)

    @property
    def terms(self) -> list[str]:
        """Name plus synonyms, de-duplicated, in order."""
        return list(dict.fromkeys([self.name, *self.synonyms]))


class Provenance(_Strict):
    """Where a concept came from: the retrieval query, the passage and the store it was read from."""

    query: str = Field(min_length=1)
    doc_id: str = Field(min_length=1)
    chunk_id: str = ""
    reference: str = Field(min_length=1, description="the sentence the concept was read from")
    source: str = ""
    citation: str = ""
    store: str = Field(min_length=1, description="store path or name")
    corpus_hash: str = Field(min_length=1)
    embedder: str = ""


class GeneratorInfo(_Strict):
    """Which backend proposed the concept."""

    backend: str = Field(min_length=1)
    model: str = Field(min_length=1)
    prompt_hash: str = Field(min_length=1)


class Evidence(_Strict):
    """A passage sentence supporting (or denying) a class–concept association."""

    doc_id: str
    chunk_id: str = ""
    sentence: str
    polarity: Literal[1, -1]


class ClassAssociation(_Strict):
    """The prior for one (class, concept) pair: +1 present, −1 absent, 0 unknown."""

    class_key: str
    prior: Literal[-1, 0, 1] = 0
    method: str = "none"
    evidence: list[Evidence] = Field(default_factory=list)


class Citation(_Strict):
    """A corpus passage tagged with the concept, quoted for the audit, with the class it argues for.

    ``stance`` is a class key or group (``mel``, ``malignant``, ``covid``) or ``depends`` (then
    ``qualifier`` says on what); see :mod:`medcbm.knowledge.stance`.
    """

    doc_id: str = Field(min_length=1)
    chunk_id: str = ""
    sentence: str = Field(min_length=1)
    concept: str = Field(min_length=1, description="the vocabulary concept the passage is tagged with")
    stance: str = ""
    qualifier: str = ""
    reference: str = ""

    @field_validator("stance")
    @classmethod
    def _known_stance(cls, v: str) -> str:
        if v and v not in STANCES:
            raise ValueError(f"unknown stance {v!r}; one of {', '.join(STANCES)}")
        return v


class Grounding(_Strict):
    """How a concept can be grounded in images (annotation source, VLM, or not yet).

    ``source`` is the primary annotation (the one ``method``/``similarity`` describe); ``extra_sources``
    are further annotation vocabularies naming the same finding (e.g. ``derm7pt:blue_whitish_veil`` next
    to ``ph2:blue_whitish_veil``), always from the reviewed phrase map. Banks without it still load.
    """

    status: Literal["annotation", "vlm", "not_groundable"] = "not_groundable"
    source: str | None = None  # e.g. "ph2:blue_whitish_veil", "cxr_notes:consolidation"
    method: str | None = None  # "mapping" (hand-reviewed file) or "embedding"
    similarity: float | None = None
    extra_sources: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _source_needed(self) -> "Grounding":
        if self.status == "annotation" and not self.source:
            raise ValueError("grounding status 'annotation' needs a source such as 'ph2:streaks'")
        if self.extra_sources and (self.status != "annotation" or self.source in self.extra_sources):
            raise ValueError("extra_sources need an 'annotation' grounding and must differ from its source")
        return self

    @property
    def sources(self) -> list[str]:
        """Every annotation source, primary first (empty when not grounded to an annotation)."""
        return [self.source, *self.extra_sources] if self.status == "annotation" and self.source else []

    def source_for(self, prefix: str) -> str | None:
        """The first annotation source starting with ``prefix`` (``"derm7pt:"``), else ``None``."""
        return next((s for s in self.sources if s.startswith(prefix)), None)


class Concept(_Strict):
    """One bottleneck concept."""

    id: str = Field(pattern=r"^[a-z0-9_]+$")
    name: str = Field(min_length=1)
    question: str = Field(min_length=3)
    modality: str = Field(min_length=1)
    synonyms: list[str] = Field(default_factory=list)
    category: str = ""
    provenance: Provenance
    generator: GeneratorInfo
    classes: list[ClassAssociation] = Field(default_factory=list)
    grounding: Grounding = Field(default_factory=Grounding)
    citations: list[Citation] = Field(default_factory=list)

    @field_validator("question")
    @classmethod
    def _is_question(cls, v: str) -> str:
        if not v.rstrip().endswith("?"):
            raise ValueError("must be a yes/no question ending in '?'")
        return v

    @property
    def terms(self) -> list[str]:
        """Name plus synonyms (for text matching)."""
        return list(dict.fromkeys([self.name, *self.synonyms]))


class RejectedCandidate(_Strict):
    """A candidate that did not make it into the bank, and why."""

    name: str
    reason: str
    detail: str = ""
    query: str = ""
    doc_id: str = ""
    backend: str = ""


class GenerationConfig(_Strict):
    """Everything that determines a generation run (hashed to decide whether a resume is valid)."""

    classes: list[ClassSpec]
    modality: str
    target_size: int = Field(default=40, ge=1)
    k: int = Field(default=8, ge=1)
    max_per_query: int = Field(default=6, ge=1)
    max_queries: int = Field(default=200, ge=1)
    backend: str = "extractive"
    model: str = ""
    base_url: str = ""
    store: str = ""
    corpus_hash: str = ""
    embedder: str = ""
    dedup_threshold: float = Field(default=0.9, gt=0, le=1)
    min_words: int = Field(default=1, ge=1)
    max_words: int = Field(default=6, ge=1)
    where: dict[str, str] = Field(default_factory=dict)
    # vocabulary categories that describe acquisition rather than disease (site/device shortcuts)
    exclude_categories: list[str] = Field(default_factory=lambda: ["acquisition", "artefact", "device", "view", "quality"])


class ConceptBank(_Strict):
    """A generated concept bank (the JSON file)."""

    schema_version: str = SCHEMA_VERSION
    name: str = ""
    modality: str
    classes: list[ClassSpec]
    concepts: list[Concept]
    rejected: list[RejectedCandidate] = Field(default_factory=list)
    config: GenerationConfig
    stats: dict[str, float | int | str] = Field(default_factory=dict)

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: str) -> str:
        if v not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported schema_version {v!r}; this medcbm reads {', '.join(SUPPORTED_VERSIONS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "ConceptBank":
        ids = [c.id for c in self.concepts]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate concept ids: {', '.join(dup)}")
        keys = {c.key for c in self.classes}
        for c in self.concepts:
            for a in c.classes:
                if a.class_key not in keys:
                    raise ValueError(f"concept {c.id!r} has a prior for unknown class {a.class_key!r}")
        return self

    @property
    def class_keys(self) -> list[str]:
        """Class keys in bank order."""
        return [c.key for c in self.classes]

    def prior_matrix(self) -> list[list[int]]:
        """The prior as a ``[n_classes][n_concepts]`` list of +1/−1/0 (KnoBo's W_prior)."""
        index = {k: i for i, k in enumerate(self.class_keys)}
        mat = [[0] * len(self.concepts) for _ in self.classes]
        for j, c in enumerate(self.concepts):
            for a in c.classes:
                mat[index[a.class_key]][j] = a.prior
        return mat


def _format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        parts.append(f"field '{loc}': {e['msg']}")
    more = f" (+{len(err.errors()) - 5} more)" if len(err.errors()) > 5 else ""
    return "; ".join(parts) + more


def bank_from_dict(data: object, *, path: str = "<memory>") -> ConceptBank:
    """Validate a parsed JSON object as a bank, raising :class:`DataError` naming the bad field."""
    try:
        return ConceptBank.model_validate(data)
    except ValidationError as err:
        raise DataError(f"invalid concept bank: {_format_validation_error(err)}", path=path) from None


def load_bank(path: str | os.PathLike) -> ConceptBank:
    """Load and validate a concept bank JSON file.

    Raises:
        DataError: missing file, invalid JSON, or a schema violation (the message names the field).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError("concept bank not found", path=str(p))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"concept bank is not valid JSON ({err})", path=str(p)) from None
    return bank_from_dict(data, path=str(p))


def save_bank(bank: ConceptBank, path: str | os.PathLike) -> Path:
    """Validate and atomically write ``bank`` as JSON (refuses an empty bank)."""
    bank = bank_from_dict(bank.model_dump(mode="json"), path=str(path))
    if not bank.concepts:
        raise DataError("refusing to save an empty concept bank (see its rejected log for why)", path=str(path))
    return atomic_write_json(path, bank.model_dump(mode="json"))


def _banks_dir() -> Path:
    return resource_path("knowledge", "banks")


def default_bank_path(modality: str, task: str) -> Path:
    """Path of a shipped bank, e.g. ``default_bank_path("dermoscopy", "ham10000")``.

    Raises:
        DataError: no shipped bank for that modality/task (the message lists the shipped ones).
    """
    banks = _banks_dir()
    p = banks / f"{modality}_{task}.json"
    if not p.is_file():
        have = sorted(x.stem for x in banks.glob("*.json")) if banks.is_dir() else []
        raise DataError(f"no shipped concept bank for modality={modality!r} task={task!r}; shipped: {have or 'none'}", path=str(p))
    return p
