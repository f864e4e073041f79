"""Backend interface: turn a query and its retrieved passages into candidate concepts.

Backends live in a registry (``name -> class``, timm style); :func:`get_backend` lists the available
names on a typo. Every backend returns candidates that cite one of the retrieved passages, plus the
raw outputs it rejected (malformed, empty, truncated, citing an unknown document) with reasons.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from pydantic import BaseModel, ConfigDict, Field

from medcbm.concepts.schema import ClassSpec, GeneratorInfo, RejectedCandidate
from medcbm._registry import Registry
from medcbm.errors import MedcbmError


class BackendError(MedcbmError):
    """A backend could not answer (server down, too slow, refused); the message names the URL."""


class PassageLike(Protocol):
    """What backends need from a retrieved passage (``medcbm.knowledge.Passage`` satisfies it)."""

    chunk_id: str
    doc_id: str
    text: str
    score: float
    source: str
    metadata: dict


class Candidate(BaseModel):
    """A proposed concept, before filtering. Also the schema LLM output items are validated against."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=120)
    doc_id: str = Field(min_length=1)
    question: str = ""
    reference: str = ""
    visual: bool | None = None
    synonyms: list[str] = Field(default_factory=list)
    category: str = ""
    score: float = 0.0
    chunk_id: str = ""


@dataclass
class ProposalRequest:
    """Input of one generation step."""

    query: str
    passages: Sequence[PassageLike]
    classes: Sequence[ClassSpec]
    modality: str
    max_candidates: int = 6


@dataclass
class Proposal:
    """Output of one generation step."""

    candidates: list[Candidate]
    generator: GeneratorInfo
    rejected: list[RejectedCandidate] = field(default_factory=list)


class Backend(ABC):
    """A concept proposer. Subclasses set ``name`` and implement :meth:`propose`."""

    name: str = ""
    model: str = ""
    can_judge: bool = False  # True when :meth:`judge` answers yes/no questions (LLM backends)

    @abstractmethod
    def propose(self, request: ProposalRequest) -> Proposal:
        """Propose candidate concepts from the request's passages."""

    def judge(self, question: str, passages: Sequence[PassageLike]) -> tuple[int, str] | None:
        """Answer a yes/no question from passages: ``(+1|-1|0, doc_id)``; ``None`` if unsupported."""
        return None


BACKENDS: Registry[type[Backend]] = Registry("concept backend", plugins=("medcbm.concepts.backends",))


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator adding a backend to the registry."""

    def deco(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        return BACKENDS.add(name, cls)

    return deco


def available_backends() -> list[str]:
    """Registered backend names."""
    return BACKENDS.names()


def get_backend(name: str, **kwargs: Any) -> Backend:
    """Instantiate the backend called ``name`` with its keyword options.

    Raises:
        RegistryError: unknown name (lists the available ones).
    """
    return BACKENDS.get(name)(**kwargs)


def slugify(text: str) -> str:
    """Concept id from a name: lower-case ascii words joined by ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "concept"


def default_question(term: str) -> str:
    """A yes/no question for a finding name ("Is there a blue-whitish veil?" style, kept neutral)."""
    t = term.strip().rstrip("?.")
    plural = t.endswith("s") and not t.endswith(("ss", "sis", "us"))
    return f"{'Are there' if plural else 'Is there'} {t[0].lower() + t[1:] if t[:2] != t[:2].upper() else t}?"
