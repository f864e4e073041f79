"""The retrieval eval set (``knowledge/eval/retrieval_eval.jsonl``): loading, gold from the corpus tags, splits.

Rows are ``{"qid", "query", "relevant": [doc ids], "kind", "split", ...}``. Kinds:

* ``starter`` / ``hpo``: hand-written queries with hand-picked gold (the original set);
* ``concept``: one query per vocabulary concept of the shipped models (``target`` = the concept key);
  gold = every corpus passage whose ``concepts`` tags list that key or one of its narrower concepts
  (``knowledge/mappings/concept_hierarchy.yaml``), then the HPO terms of the modality's vocabulary named after
  the concept (``medcbm.concepts.vocab.hpo_matches``; ``gold_from: "concepts+narrower+hpo"``);
* ``class``: one query per class (HAM10000, with Bowen's disease as a second ``akiec`` query, and the chest
  X-ray classes); gold = every passage whose ``stance`` is that class (``gold_from: "stance"``).

``split`` is ``tune`` or ``report``: alternate rows within each kind, in file order (the first of a kind is
``tune``). Anything chosen from eval results (fusion weights, query expansion) is chosen on ``tune`` only;
the numbers a target is judged on come from ``report``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from medcbm._resources import resource_path
from medcbm.errors import DataError
from medcbm.knowledge.passage import Document

SPLITS = ("tune", "report")
GOLD_FIELDS = {"concept": "concepts", "class": "stance"}


def load_eval(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Eval rows ``{"qid","query","relevant":[doc ids],"kind","split"}``; a bad row is a :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("retrieval eval set not found", path=str(path))
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg})", path=str(path), row=i) from None
        for key in ("qid", "query", "relevant"):
            if not row.get(key):
                raise DataError("missing field", path=str(path), row=i, field=key)
        if row.get("split", "report") not in SPLITS:
            raise DataError(f"split must be one of {', '.join(SPLITS)}", path=str(path), row=i, field="split")
        if row.get("kind") in GOLD_FIELDS and not row.get("target"):
            raise DataError(f"a {row['kind']} query needs its target", path=str(path), row=i, field="target")
        rows.append(row)
    return rows


def concept_hierarchy(path: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """``{concept: [narrower concepts]}`` from ``knowledge/mappings/concept_hierarchy.yaml``."""
    path = Path(path or resource_path("knowledge", "mappings", "concept_hierarchy.yaml"))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read the concept hierarchy ({exc})", path=str(path)) from None
    narrower = data.get("narrower")
    if not isinstance(narrower, dict) or not all(isinstance(v, list) for v in narrower.values()):
        raise DataError("'narrower' must map each concept to a list of concepts", path=str(path), field="narrower")
    return {str(k): [str(c) for c in v] for k, v in narrower.items()}


def tagged_gold(docs: Iterable[Document], kind: str, target: str, *, narrower: dict[str, list[str]] | None = None,
                ontology: Sequence[str] = ()) -> list[str]:
    """Doc ids the corpus tags give as gold for a ``concept`` query (``concepts`` lists it or one of its
    ``narrower`` concepts; then the ``ontology`` term ids named after it) or a ``class`` query (``stance`` is
    it), in corpus order."""
    if kind not in GOLD_FIELDS:
        raise DataError(f"no tag-derived gold for kind {kind!r} (one of {', '.join(GOLD_FIELDS)})", field="kind")
    keys = {target, *((narrower or {}).get(target, ()))}
    out = []
    for d in docs:
        value = d.metadata.get(GOLD_FIELDS[kind])
        if (keys & set(value or []) if kind == "concept" else value == target):
            out.append(d.doc_id)
    return out + [i for i in ontology if i not in out] if kind == "concept" else out


def assign_splits(rows: Sequence[dict]) -> list[dict]:
    """Rows with ``split`` set: alternate ``tune`` / ``report`` within each kind, in row order."""
    seen: dict[str, int] = {}
    out = []
    for r in rows:
        n = seen.get(r.get("kind", "all"), 0)
        seen[r.get("kind", "all")] = n + 1
        out.append({**r, "split": SPLITS[n % 2]})
    return out


def groups(rows: Sequence[dict]) -> dict[str, list[int]]:
    """Row indices per group: ``all``, ``split:<s>``, ``kind:<k>`` and ``<s>/<k>``."""
    out: dict[str, list[int]] = {"all": list(range(len(rows)))}
    for i, r in enumerate(rows):
        kind, split = r.get("kind", "all"), r.get("split", "report")
        for name in (f"split:{split}", f"kind:{kind}", f"{split}/{kind}"):
            out.setdefault(name, []).append(i)
    return dict(sorted(out.items()))
