"""Bench helpers: metric arithmetic, the eval set's integrity, and evaluation on the small real store."""

from __future__ import annotations

import json

import pytest

from medcbm.errors import DataError
from medcbm.knowledge.bench import evaluate, load_eval, score_rankings
from tests.knowledge.conftest import CORPUS, REPO, require, require_bundled

EVAL = REPO / "knowledge" / "eval" / "retrieval_eval.jsonl"


def test_score_rankings_arithmetic():
    rows = [{"relevant": ["a"]}, {"relevant": ["b", "c"]}, {"relevant": ["z"]}]
    ranked = [["x", "a"], ["c", "y", "y2", "y3", "y4", "b"], ["q"]]
    m = score_rankings(rows, ranked)
    assert m["recall@5"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["recall@10"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_load_eval_names_bad_row(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text(json.dumps({"qid": "q1", "query": "x", "relevant": ["a"]}) + "\n" + json.dumps({"qid": "q2", "query": "y"}) + "\n")
    with pytest.raises(DataError, match="row 2.*'relevant'"):
        load_eval(p)


@pytest.fixture(scope="module")
def eval_rows():
    require(EVAL.is_file(), "knowledge/eval/retrieval_eval.jsonl is missing")
    return load_eval(EVAL)


def test_eval_set_points_at_existing_documents(eval_rows):
    require_bundled()
    from medcbm.knowledge.resources import iter_hpo

    assert len(eval_rows) >= 60 and len({r["qid"] for r in eval_rows}) == len(eval_rows)
    starter = {json.loads(line)["id"] for f in CORPUS.glob("*.jsonl") for line in f.read_text().splitlines() if line.strip()}
    hpo = {d.doc_id for d in iter_hpo()}
    missing = [(r["qid"], d) for r in eval_rows for d in r["relevant"] if d not in starter | hpo]
    assert not missing


def test_evaluate_on_small_store(small_store, eval_rows):
    ids = {m["doc_id"] for _, _, metas in small_store.iter_all(include=("metadatas",)) for m in metas}
    rows = [r for r in eval_rows if set(r["relevant"]) <= ids]
    assert len(rows) >= 40
    res = evaluate(small_store, rows)
    for metric in ("recall@5", "recall@10", "mrr"):
        assert set(res[metric]) == {"dense", "bm25", "hybrid"}
        assert all(0.0 <= v <= 1.0 for v in res[metric].values())
    assert res["recall@10"]["hybrid"] >= 0.6  # the starter queries are answerable from the starter corpus
    assert res["recall@5"]["dense"] <= res["recall@10"]["dense"]
