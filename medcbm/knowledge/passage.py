"""Data records of the knowledge store: source documents, their chunks, and retrieved passages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Metadata keys that queries may filter on (``where={...}``).
FILTER_KEYS = ("source", "modality", "license", "doc_id", "section", "topic")


@dataclass(frozen=True)
class Document:
    """One source document before chunking.

    Attributes:
        doc_id: stable identifier (e.g. ``PMID:123``, ``HP:0001234``, ``openi-1``).
        text: full document text; chunk offsets refer to it.
        title: document or section title.
        source: corpus name (``medcbm-starter``, ``hpo``, ``openi``, ``pubmed``, or the file stem).
        license: licence of the text (``unknown`` when the input does not say).
        modality: imaging modality the text is about (``dermoscopy``, ``chest_xray``) or ``""``.
        section: section label inside the document (``FINDINGS``, ``Methods``) or ``""``.
        path: file the document came from (``""`` for bundled resources).
        metadata: extra provenance fields (``reference``, ``topic``, ...), JSON-serialisable.
        sections: ``(start offset, label)`` pairs for labelled parts of ``text`` (abstract sections,
            JATS body sections, report sections, PDF pages), sorted by offset.
    """

    doc_id: str
    text: str
    title: str = ""
    source: str = ""
    license: str = "unknown"
    modality: str = ""
    section: str = ""
    path: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    sections: tuple[tuple[int, str], ...] = ()

    def section_at(self, offset: int) -> str:
        """Label of the section containing character ``offset`` (``sections`` holds ``(start, label)``)."""
        label = self.section
        for start, name in self.sections:
            if start > offset:
                break
            label = name
        return label


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with its score and full provenance.

    ``start``/``end`` are character offsets of ``text`` inside the source document's text, so
    ``document.text[start:end] == text`` (modulo whitespace normalisation at chunk edges).
    """

    chunk_id: str
    doc_id: str
    text: str
    score: float
    source: str
    title: str
    section: str
    license: str
    modality: str
    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict)
