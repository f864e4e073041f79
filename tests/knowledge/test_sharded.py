"""A store sharded over two real ``chroma run`` servers answers exactly like one embedded store."""

from __future__ import annotations

import itertools
import json

import pytest
from typer.testing import CliRunner

from medcbm.errors import ConfigError, DataError
from medcbm.knowledge import add_documents, open_store
from medcbm.knowledge.bench import load_eval
from medcbm.knowledge.sharded import ShardedStore, shard_of
from tests.knowledge.conftest import REPO, require, start_chroma

EVAL = REPO / "knowledge" / "eval" / "retrieval_eval.jsonl"
COLLECTION = "medcbm_shard_test"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    started = []
    try:
        for i in range(2):
            started.append(start_chroma(tmp_path_factory.mktemp(f"chroma{i}")))
        yield started
    finally:
        for s in started:
            s.stop()


@pytest.fixture(scope="module")
def corpus(small_docs):
    """Starter corpus, 30 OpenI reports and ~340 HPO terms (the session subset plus 250 more),
    including every HPO term the eval set points at."""
    from medcbm.knowledge.resources import iter_hpo

    require(EVAL.is_file(), "knowledge/eval/retrieval_eval.jsonl is missing")
    rows = load_eval(EVAL)
    relevant = {d for r in rows for d in r["relevant"]}
    have = {d.doc_id for d in small_docs}
    hpo = [d for d in itertools.islice(iter_hpo(), 2000) if d.doc_id not in have]
    more = [d for d in hpo if d.doc_id in relevant] + [d for d in hpo if d.doc_id not in relevant][:250]
    docs = [*small_docs, *more]
    missing = relevant - {d.doc_id for d in docs}
    docs += [d for d in iter_hpo() if d.doc_id in missing]
    return docs, rows


@pytest.fixture(scope="module")
def embed_once(default_store):
    """Embed each text once per module: the starter corpus's vectors come from the session store, the rest
    is encoded on first use (the embedder is deterministic, so every store gets the same vectors)."""
    import numpy as np

    from medcbm.knowledge import ingest

    memo = {t: e for _, docs, _, embs in default_store.iter_all(include=("documents", "metadatas", "embeddings"))
            for t, e in zip(docs, embs)}
    real = ingest.embed_texts

    def embed(store, texts, **kw):
        todo = list(dict.fromkeys(t for t in texts if t not in memo))
        if todo:
            memo.update(zip(todo, real(store, todo, **kw)))
        return np.stack([memo[t] for t in texts])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ingest, "embed_texts", embed)
        yield


@pytest.fixture(scope="module")
def pair(servers, corpus, tmp_path_factory, embed_once):
    """``(one embedded store, the same documents sharded over the two servers)``."""
    docs, _ = corpus
    root = tmp_path_factory.mktemp("shard")
    single = open_store(root / "single")
    sharded = open_store(url=[s.url for s in servers], collection=COLLECTION, cache_dir=root / "cache")
    # HNSW is approximate, and one index over everything and two smaller ones are different graphs, so
    # their approximations differ (the single store missed a top-4 neighbour at chroma's default
    # ef_search=100). With ef_search above the collection size the search visits every node: both sides
    # are exact, and what remains to compare is the merge itself.
    for col in (single.collection, *(s.collection for s in sharded.shards)):
        col.modify(configuration={"hnsw": {"ef_search": 4 * len(docs)}})
    add_documents(single, docs)
    summary = add_documents(sharded, docs)
    assert summary.added == len(single) == len(sharded)
    return single, sharded


def _ranked(store, queries, mode, **kw):
    return [[(p.chunk_id, p.score) for p in hits] for hits in store.search_batch(queries, k=10, mode=mode, **kw)]


def test_documents_are_sharded_whole_and_reingest_is_idempotent(pair, corpus):
    single, sharded = pair
    assert isinstance(sharded, ShardedStore)
    # the same chunks survive deduplication (which is corpus-wide: identical text on another shard counts)
    assert sorted(c for page, _, _ in sharded.iter_all(include=()) for c in page) == \
        sorted(c for page, _, _ in single.iter_all(include=()) for c in page)
    sizes = [len(s) for s in sharded.shards]
    assert min(sizes) > 0.3 * len(single)  # both servers hold a real share
    for i, shard in enumerate(sharded.shards):
        for _, _, metas in shard.iter_all(include=("metadatas",)):
            assert all(shard_of(m["doc_id"], 2) == i for m in metas)
    h = sharded.corpus_hash
    again = add_documents(sharded, corpus[0])
    assert again.added == 0 and again.removed == 0 and len(sharded) == len(single) and sharded.corpus_hash == h


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_sharded_top_k_equals_single_store(pair, corpus, mode):
    single, sharded = pair
    queries = [r["query"] for r in corpus[1]]
    want, got = _ranked(single, queries, mode), _ranked(sharded, queries, mode)
    assert len(want) == len(corpus[1]) == len(got)
    for q, w, g in zip(queries, want, got):
        assert [c for c, _ in g] == [c for c, _ in w], q
        assert [s for _, s in g] == pytest.approx([s for _, s in w], abs=1e-6), q
    # filters and exclusions go through the same merge
    used = {c.split("#")[0] for row in want[:5] for c, _ in row[:2]}
    kw = {"where": {"source": ["hpo", "medcbm-starter"]}, "exclude_doc_ids": used}
    assert [[c for c, _ in r] for r in _ranked(sharded, queries[:20], mode, **kw)] == \
        [[c for c, _ in r] for r in _ranked(single, queries[:20], mode, **kw)]


def test_fresh_client_rebuilds_the_merged_bm25_index(pair, corpus, servers, tmp_path):
    single, _ = pair
    fresh = open_store(url=[s.url for s in servers], collection=COLLECTION, cache_dir=tmp_path / "c")
    queries = [r["query"] for r in corpus[1][:15]]
    assert _ranked(fresh, queries, "bm25") == _ranked(single, queries, "bm25")
    assert (tmp_path / "c" / "bm25" / "index.json").is_file()


def test_cli_search_and_stats_over_two_servers(pair, servers, tmp_path, monkeypatch):
    from medcbm.cli import app

    monkeypatch.chdir(tmp_path)  # the client-side caches go to ./runs/knowledge-http

    single, sharded = pair
    urls = [a for s in servers for a in ("--store-url", s.url)]
    r = CliRunner().invoke(app, ["knowledge", "search", "blue-whitish veil", *urls, "--collection", COLLECTION,
                                 "--mode", "bm25", "-k", "5", "--json"])
    assert r.exit_code == 0, r.output
    assert [h["chunk_id"] for h in json.loads(r.output)] == \
        [p.chunk_id for p in single.search("blue-whitish veil", k=5, mode="bm25")]
    r = CliRunner().invoke(app, ["knowledge", "stats", *urls, "--collection", COLLECTION])
    assert r.exit_code == 0, r.output
    st = json.loads(r.output)
    assert st["n_chunks"] == len(single) and [s["n_chunks"] for s in st["shards"]] == [len(s) for s in sharded.shards]


def test_wrong_order_single_shard_and_mixed_embedders_are_refused(pair, servers, tmp_path):
    import chromadb

    a, b = (s.url for s in servers)
    with pytest.raises(ConfigError, match=r"holds shard 1/2 of a sharded store but was opened as --store-url "
                                          r"number 0/2; pass every --store-url"):
        open_store(url=[b, a], collection=COLLECTION, cache_dir=tmp_path / "c1")
    with pytest.raises(ConfigError, match="holds shard 0/2 of a sharded store but was opened on its own"):
        open_store(url=a, collection=COLLECTION, cache_dir=tmp_path / "c2")
    for i, (url, emb) in enumerate([(a, "minilm"), (b, "st:/models/other")]):
        host, port = url.removeprefix("http://").split(":")
        chromadb.HttpClient(host=host, port=int(port)).get_or_create_collection(
            "medcbm_mixed", embedding_function=None, metadata={"embedder": emb, "shard": f"{i}/2", "corpus_hash": "x"})
    with pytest.raises(ConfigError, match=rf"different embedders \({a}/medcbm_mixed: 'minilm', "
                                          rf"{b}/medcbm_mixed: 'st:/models/other'\)"):
        open_store(url=[a, b], collection="medcbm_mixed", cache_dir=tmp_path / "c3")


def test_server_down_mid_ingest_then_rerun_resumes(servers, corpus, tmp_path, monkeypatch, embed_once):
    from medcbm.knowledge import ingest
    from medcbm.knowledge.ingest import chunk_document

    docs = [d for d in corpus[0] if d.source == "medcbm-starter"]
    third = start_chroma(tmp_path / "third")
    try:
        urls = [servers[0].url, third.url]
        store = open_store(url=urls, collection="medcbm_resume", cache_dir=tmp_path / "cache")
        real = ingest.embed_texts

        def embed_then_server_dies(*args, **kwargs):
            out = real(*args, **kwargs)
            third.stop()
            return out

        monkeypatch.setattr(ingest, "embed_texts", embed_then_server_dies)
        with pytest.raises(DataError) as err:
            add_documents(store, docs)
        msg = str(err.value)
        assert msg.startswith(f"chroma server {third.url}/medcbm_resume failed during the write") and "\n" not in msg
        assert "rerun the same ingest" in msg
        monkeypatch.undo()
        with pytest.raises(DataError, match=f"chroma server {third.url}/medcbm_resume failed"):
            store.search("blue-whitish veil", k=3, mode="dense")
        from medcbm.cli import app

        monkeypatch.chdir(tmp_path)
        r = CliRunner().invoke(app, ["knowledge", "ingest", str(tmp_path), "--store-url", urls[0], "--store-url",
                                     urls[1], "--collection", "medcbm_resume"])
        assert r.exit_code != 0 and isinstance(r.exception, DataError) and third.url in str(r.exception)
        kept = store.shards[0]
        n0 = len(kept)
        assert n0 > 0 and not kept.write_pending  # the healthy shard kept and finalised its part
        # the server comes back (at another port, same data folder) and the same ingest resumes
        third = start_chroma(third.path)
        store = open_store(url=[servers[0].url, third.url], collection="medcbm_resume", cache_dir=tmp_path / "cache")
        again = add_documents(store, docs)
        want = sorted(c for d in docs for c, _, _ in chunk_document(d))
        assert again.unchanged == n0 and again.added == len(want) - n0 > 0 and len(store) == len(want)
        assert sorted(c for page, _, _ in store.iter_all(include=()) for c in page) == want
        assert not store.write_pending and store.search("blue-whitish veil", k=1, mode="bm25")
    finally:
        third.stop()
