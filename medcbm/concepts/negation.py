"""Negation-aware phrase matching (NegEx-style) for concept mentions in passages, notes and reports.

A term mention is *negated* when a negation trigger ("no", "without", "negative for", "ruled out", ...)
precedes it in the same clause, or a post-trigger ("is absent", "was ruled out") follows it in the
same clause. Clauses end at sentence punctuation, semicolons and contrastive conjunctions ("but",
"however", "although"), which is where NegEx stops a trigger's scope.

A mention is *uncertain* when a hedge ("possible", "cannot exclude", "may represent", "suspicious for",
...) precedes it in the clause, or one ("cannot be excluded", "is not excluded", "is suspected") follows it;
a denial in the same clause wins ("not likely pneumonia" denies it), so ``negated`` reads as before.

Used by the concept prior (is a finding affirmed or denied for a class?) and by report-derived
pseudo-labels (issue 5): ``label_text(note, vocab) -> {concept: 1 | 0 | None}`` (``uncertain=`` says what
a finding mentioned only with a hedge gets).
"""

from __future__ import annotations

from medcbm._text import trim_spans

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Mapping, Sequence

# Triggers that negate what follows them in the clause (longest first so "no evidence of" wins over "no").
PRE_TRIGGERS: tuple[str, ...] = (
    "no evidence of", "no sign of", "no signs of", "negative for", "free of", "absence of", "absent",
    "without", "ruled out", "rules out", "rule out", "not seen", "not", "no", "nor", "lacks", "lack of",
    "lacking", "denies", "denied", "never", "cannot be seen", "unremarkable for", "resolution of",
    "resolved", "rarely", "seldom", "unlike", "argue against", "argues against",
)
# Triggers that negate what precedes them in the clause.
POST_TRIGGERS: tuple[str, ...] = (
    "is absent", "are absent", "was absent", "were absent", "absent", "was ruled out", "were ruled out",
    "is ruled out", "ruled out", "not seen", "not present", "is not present", "are not present",
    "not identified", "not visible", "is rare", "are rare", "unlikely", "has resolved", "have resolved",
    "resolved", "uncommon", "unusual", "rare", "argue for another", "argues for another",
)
# Hedges: what follows (UNCERTAIN_PRE) or precedes (UNCERTAIN_POST) them in the clause is uncertain.
UNCERTAIN_PRE: tuple[str, ...] = (
    "possible", "possibly", "probable", "probably", "may represent", "may be", "might be", "could be",
    "could represent", "cannot exclude", "can not exclude", "cannot rule out", "can not rule out",
    "cannot be excluded", "questionable", "question of", "suspicious for", "suspicion of", "suspected",
    "concern for", "concerning for", "equivocal", "likely", "presumed", "vs", "versus", "differential",
)
UNCERTAIN_POST: tuple[str, ...] = (
    "cannot be excluded", "can not be excluded", "cannot be ruled out", "not excluded", "is not excluded",
    "is suspected", "are suspected", "is possible", "are possible", "is likely", "are likely", "is questionable",
)
# Clause boundaries: punctuation that ends a sentence or clause, and contrastive conjunctions.
# NegEx termination terms ("suggesting", "consistent with", "residual") also close a trigger's scope.
_CLAUSE_END = re.compile(
    r"[.;:!?\n]|\b(?:but|however|although|though|whereas|except|while|which|suggesting|suggestive of|"
    r"consistent with|compatible with|indicating|secondary to|due to|apart from|aside from|residual|remaining|"
    r"persistent|persisting)\b", re.I)


@dataclass(frozen=True)
class Mention:
    """One occurrence of a vocabulary term in a text (character offsets into the text)."""

    term: str
    start: int
    end: int
    negated: bool
    surface: str = ""
    uncertain: bool = False


@lru_cache(maxsize=65536)
def _term_pattern(term: str) -> re.Pattern[str]:
    # whole-word, case-insensitive; hyphens/spaces interchangeable ("blue-white" == "blue white"),
    # optional plural s/es on the last word
    words = [re.escape(w) for w in re.split(r"[\s\-]+", term.strip()) if w]
    body = r"[\s\-]+".join(words)
    return re.compile(rf"(?<![\w-]){body}(?:e?s)?(?![\w-])", re.I)


@lru_cache(maxsize=65536)
def _first_word(term: str) -> str:
    return re.split(r"[\s\-]+", term.strip().lower(), maxsplit=1)[0]


def _trigger_pattern(triggers: Sequence[str]) -> re.Pattern[str]:
    alts = sorted({t.lower() for t in triggers}, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(?:" + "|".join(r"\s+".join(map(re.escape, a.split())) for a in alts) + r")(?![\w-])", re.I)


_PRE = _trigger_pattern(PRE_TRIGGERS)
_POST = _trigger_pattern(POST_TRIGGERS)
_UNC_PRE = _trigger_pattern(UNCERTAIN_PRE)
_UNC_POST = _trigger_pattern(UNCERTAIN_POST)


def clause_spans(text: str) -> list[tuple[int, int]]:
    """Split ``text`` into clause spans ``(start, end)`` at sentence/clause boundaries."""
    spans, start = [], 0
    for m in _CLAUSE_END.finditer(text):
        # a full stop inside a number ("0.5 cm") or abbreviation-like token does not end a clause
        if m.group(0) == "." and m.end() < len(text) and not text[m.end()].isspace():
            continue
        if m.start() > start:
            spans.append((start, m.start()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Split ``text`` into sentence spans (ends at ``.``, ``!``, ``?`` or newline followed by space/end)."""
    spans, start = [], 0
    for m in re.finditer(r"[.!?](?=\s|$)|\n+", text):
        end = m.end()
        if text[start:end].strip():
            spans.append((start, end))
        start = end
    if text[start:].strip():
        spans.append((start, len(text)))
    return trim_spans(text, spans, drop_empty=False)


def _is_negated(text: str, clause: tuple[int, int], start: int, end: int) -> bool:
    cs, ce = clause
    before = text[cs:start]
    after = text[end:ce]
    if _PRE.search(before):
        return True
    return bool(_POST.search(after))


def _is_uncertain(text: str, clause: tuple[int, int], start: int, end: int) -> bool:
    return bool(_UNC_PRE.search(text[clause[0]:start]) or _UNC_POST.search(text[end:clause[1]]))


def find_mentions(text: str, terms: Iterable[str] | Mapping[str, Sequence[str]]) -> list[Mention]:
    """Find every mention of the given terms, with negation status.

    Args:
        text: free text (a passage, clinical note or report).
        terms: term strings, or ``{canonical term: [synonyms...]}``; a synonym hit is reported under
            its canonical term.

    Returns:
        Mentions sorted by position. Overlapping hits keep the longest (so "atypical pigment network"
        is not also reported as "pigment network").
    """
    if isinstance(terms, Mapping):
        variants = [(canon, v) for canon, syns in terms.items() for v in {canon, *syns} if v and v.strip()]
    else:
        variants = [(t, t) for t in terms if t and t.strip()]
    clauses = clause_spans(text)
    low = text.lower()
    hits: list[Mention] = []
    for canon, variant in variants:
        if _first_word(variant) not in low:  # cheap pre-check before the regex
            continue
        for m in _term_pattern(variant).finditer(text):
            clause = next(((s, e) for s, e in clauses if s <= m.start() < e), (0, len(text)))
            negated = _is_negated(text, clause, m.start(), m.end())  # a denial wins: "not likely X" denies X
            hedged = not negated and _is_uncertain(text, clause, m.start(), m.end())
            hits.append(Mention(canon, m.start(), m.end(), negated, m.group(0), hedged))
    hits.sort(key=lambda h: (h.start, -(h.end - h.start)))
    kept: list[Mention] = []
    for h in hits:
        if kept and h.start < kept[-1].end:
            continue  # overlaps a longer (or earlier) hit
        kept.append(h)
    return kept


def label_text(text: str | None, vocab: Mapping[str, Sequence[str]], *,
               uncertain: float | None = 1) -> dict[str, float | None]:
    """Label each concept as affirmed (1), denied (0) or not mentioned (None) in ``text``.

    A concept affirmed anywhere is 1 even if also denied elsewhere (reports often say "no effusion
    on the left, small effusion on the right"); denied-only is 0. A concept mentioned with a hedge and
    never affirmed gets ``uncertain``.

    Args:
        text: the note or report; ``None``/empty gives all ``None``.
        vocab: ``{concept: [synonyms...]}``.
        uncertain: the label of a hedged-only finding (default 1: read as affirmed, the NegEx convention;
            e.g. ``0.5`` or a sentinel to treat it apart).
    """
    labels: dict[str, float | None] = {c: None for c in vocab}
    if not text:
        return labels
    hedged: set[str] = set()
    for m in find_mentions(text, vocab):
        if m.uncertain:
            hedged.add(m.term)
        elif not m.negated:
            labels[m.term] = 1
        elif labels[m.term] is None:
            labels[m.term] = 0
    for c in hedged:
        if labels[c] != 1:
            labels[c] = uncertain
    return labels
