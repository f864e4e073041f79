"""Query expansion with the finding lexicons' synonyms (``knowledge/lexicon/*.tsv``, columns ``term`` and
``synonyms``): a query that names a lexicon term gets that entry's other terms appended, so BM25 and the
dense encoder see the vocabulary the corpus uses ("pseudopods" also searches "streaks", "radial streaming").

Only terms of at least ``min_chars`` characters trigger an entry: short colour words ("red", "grey") would
pull in half the lexicon.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from medcbm._resources import resource_path
from medcbm.errors import DataError


@lru_cache(maxsize=4)
def lexicon_groups(folder: str | None = None) -> tuple[tuple[str, ...], ...]:
    """Every lexicon row of ``folder`` (default ``knowledge/lexicon``) as (term, *synonyms), lower-cased."""
    root = Path(folder) if folder else resource_path("knowledge", "lexicon")
    out = []
    for path in sorted(root.glob("*.tsv")):
        with path.open(encoding="utf-8", newline="") as fh:
            for i, rec in enumerate(csv.DictReader(fh, delimiter="\t"), start=2):
                term = (rec.get("term") or "").strip().lower()
                if not term:
                    raise DataError("empty term", path=str(path), row=i, field="term")
                syns = [s.strip().lower() for s in (rec.get("synonyms") or "").split("|") if s.strip()]
                out.append(tuple(dict.fromkeys([term, *syns])))
    return tuple(out)


@lru_cache(maxsize=8192)
def _pattern(term: str) -> re.Pattern:
    # compiled once per term: ~800 lexicon terms overflow the re module's own cache (30 ms a query)
    return re.compile(r"(?<![\w-])" + re.escape(term).replace(r"\ ", r"[\s-]+") + r"(?![\w-])")


def expand_query(query: str, groups: Sequence[Sequence[str]] | None = None, *, min_chars: int = 6) -> str:
    """``query`` plus the terms of every lexicon group one of whose terms (>= ``min_chars``) it names."""
    groups = lexicon_groups() if groups is None else groups
    text = query.lower()
    extra: list[str] = []
    for group in groups:
        if any(len(t) >= min_chars and _pattern(t).search(text) for t in group):
            extra += [t for t in group if t not in text and t not in extra]
    return f"{query} ({'; '.join(extra)})" if extra else query
