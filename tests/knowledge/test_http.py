"""HttpClient against a real ``chroma run`` server started on a free loopback port."""

from __future__ import annotations

import pytest

from tests.knowledge.conftest import start_chroma


@pytest.fixture()
def chroma_server(tmp_path):
    server = start_chroma(tmp_path / "server")
    yield server.url
    server.stop()


@pytest.mark.slow
def test_http_store_ingest_search_and_embedder_check(chroma_server, tmp_path, small_docs, default_store):
    from medcbm.errors import ConfigError
    from medcbm.knowledge import add_documents, open_store

    store = open_store(url=chroma_server, collection="medcbm_http_test", cache_dir=tmp_path / "cache")
    store.copy_from(default_store)  # upserts with stored embeddings over HTTP
    hpo = [d for d in small_docs if d.source == "hpo"][:20]
    add_documents(store, hpo)  # embeds and upserts over HTTP
    n = len(store)
    assert n >= len(default_store) + 20
    for mode in ("dense", "bm25", "hybrid"):
        hits = store.search("blue-whitish veil", k=3, mode=mode)
        assert any("veil" in p.text.lower() for p in hits)
    assert store.search("enlarged heart", k=1, mode="dense", where={"source": "hpo"})[0].doc_id == "HP:0001640"
    add_documents(store, hpo)
    assert len(store) == n
    # a second client sees the recorded embedder and refuses another one
    other = open_store(url=chroma_server, collection="medcbm_http_test", embedder="st:/nowhere",
                       cache_dir=tmp_path / "cache2")
    assert other.recorded_embedder == "minilm"
    with pytest.raises(ConfigError, match="built with embedder"):
        other.search("veil")
    # the BM25 sidecar is rebuilt in a fresh cache folder from the server's chunks
    fresh = open_store(url=chroma_server, collection="medcbm_http_test", cache_dir=tmp_path / "cache3")
    assert fresh.search("blue-whitish veil", k=3, mode="bm25")[0].chunk_id == store.search(
        "blue-whitish veil", k=3, mode="bm25")[0].chunk_id
