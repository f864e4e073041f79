"""Store and retrieval on a small real store: ranking, provenance, filters, re-ingest, refusals."""

from __future__ import annotations

import pytest

from medcbm.errors import ConfigError, DataError, RegistryError
from medcbm.knowledge import add_documents, get_embedder, open_store
from medcbm.knowledge.passage import Document


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_veil_query_finds_veil_passage(small_store, mode):
    hits = small_store.search("blue-whitish veil", k=3, mode=mode)
    assert len(hits) == 3
    assert any("veil" in p.text.lower() for p in hits[:3])
    scores = [p.score for p in hits]
    assert scores == sorted(scores, reverse=True)


def test_provenance_and_offsets(small_store, small_docs):
    by_id = {d.doc_id: d for d in small_docs}
    for p in small_store.search("enlarged cardiac silhouette", k=10, mode="hybrid"):
        doc = by_id[p.doc_id]
        assert doc.text[p.start:p.end] == p.text
        assert p.source == doc.source and p.license == doc.license and p.title == doc.title
        assert p.chunk_id == f"{p.doc_id}#{p.start}"
        assert set(p.metadata["ranks"]) <= {"dense", "bm25"} and p.metadata["ranks"]
    starter = small_store.search("seven-point checklist", k=1, where={"source": "medcbm-starter"})[0]
    assert starter.metadata.get("reference") and starter.modality == "dermoscopy"


def test_filters_and_exclusion(small_store):
    cxr = small_store.search("pleural effusion", k=8, mode="hybrid", where={"modality": "chest_xray"})
    assert cxr and all(p.modality == "chest_xray" for p in cxr)
    used = {p.doc_id for p in cxr[:3]}
    for mode in ("dense", "bm25", "hybrid"):
        rest = small_store.search("pleural effusion", k=8, mode=mode, where={"modality": "chest_xray"},
                                  exclude_doc_ids=used)
        assert rest and not used & {p.doc_id for p in rest}
    hpo = small_store.search("pleural effusion", k=5, mode="bm25", where={"source": ["hpo"]})
    assert hpo and all(p.source == "hpo" for p in hpo) and hpo[0].doc_id == "HP:0002202"
    with pytest.raises(ConfigError, match="filter keys"):
        small_store.search("x", where={"colour": "blue"})


def test_search_batch_matches_single(small_store):
    qs = ["cardiomegaly", "pneumothorax", "regression structures"]
    batch = small_store.search_batch(qs, k=5, mode="dense")
    assert len(batch) == 3
    for q, hits in zip(qs, batch):
        single = small_store.search(q, k=5, mode="dense")
        assert [p.chunk_id for p in hits] == [p.chunk_id for p in single]


def test_reingest_does_not_duplicate(small_store, small_docs):
    n, h = len(small_store), small_store.corpus_hash
    summary = add_documents(small_store, small_docs[:40])
    assert summary.added == 0 and summary.unchanged > 0
    assert len(small_store) == n and small_store.corpus_hash == h


def test_changed_document_replaces_its_chunks(tmp_path):
    store = open_store(tmp_path / "s")
    text = "Dermatofibroma shows a central white scar-like patch surrounded by a delicate pigment network."
    add_documents(store, [Document("df-1", text, title="DF", source="t")])
    add_documents(store, [Document("df-1", "Updated. " * 3 + text, title="DF", source="t")])
    (p,) = store.search("scar-like patch", k=5, mode="bm25")
    assert len(store) == 1 and p.text.startswith("Updated.") and p.start == 0
    s = add_documents(store, [Document("df-1", "Updated. " * 3 + text, title="Dermatofibroma", source="t")])
    (p,) = store.search("scar-like patch", k=5, mode="dense")
    assert s.added == 1 and p.title == "Dermatofibroma" and len(store) == 1


def test_identical_passages_deduplicated(tmp_path):
    store = open_store(tmp_path / "s")
    text = "No acute cardiopulmonary abnormality. The heart size and pulmonary vascularity are within normal limits."
    s = add_documents(store, [Document(f"r{i}", text, source="t") for i in range(3)])
    assert len(store) == 1 and s.duplicates == 2
    s = add_documents(store, [Document("r9", text.upper(), source="t")])
    assert len(store) == 1 and s.duplicates == 1


def test_empty_store_and_bad_mode_are_errors(tmp_path):
    store = open_store(tmp_path / "empty")
    with pytest.raises(DataError, match="empty"):
        store.search("cardiomegaly")
    with pytest.raises(ConfigError, match="dense, bm25, hybrid"):
        store.search("cardiomegaly", mode="sparse")


def test_mismatched_embedder_refused(small_store):
    other = open_store(small_store.location, embedder="st:/nonexistent/model")
    with pytest.raises(ConfigError, match="built with embedder 'minilm'"):
        other.search("cardiomegaly")
    with pytest.raises(ConfigError, match="minilm"):
        add_documents(other, [Document("x", "Some new passage about atelectasis and volume loss.")])
    assert open_store(small_store.location).embedder_name == "minilm"


def test_unknown_embedder_lists_names():
    with pytest.raises(RegistryError, match=r"Available: minilm, hf:\.\.\., st:\.\.\."):
        get_embedder("medcpt")


def test_failed_write_rolls_back(tmp_path, small_docs, monkeypatch):
    store = open_store(tmp_path / "s")
    add_documents(store, small_docs[:5])
    n, h = len(store), store.corpus_hash
    calls = {"n": 0}
    real = store.collection.upsert

    def flaky(**kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(**kw)

    monkeypatch.setattr(store.collection, "upsert", flaky)
    monkeypatch.setattr(store.client, "get_max_batch_size", lambda: 3)
    with pytest.raises(DataError, match="disk full"):
        add_documents(store, small_docs[5:20])
    assert calls["n"] == 2 and len(store) == n and store.corpus_hash == h


def test_stale_bm25_sidecar_is_rebuilt(tmp_path, small_docs):
    import shutil

    store = open_store(tmp_path / "s")
    add_documents(store, small_docs[:10])
    before = store.search("melanoma", k=3, mode="bm25")
    shutil.rmtree(store.lexical_dir)
    again = open_store(tmp_path / "s").search("melanoma", k=3, mode="bm25")
    assert [p.chunk_id for p in again] == [p.chunk_id for p in before]
    assert (store.lexical_dir / "index.json").is_file()


def test_stats(small_store):
    st = small_store.stats()
    assert st["n_chunks"] == len(small_store) and st["embedder"] == "minilm"
    assert set(st["by_source"]) >= {"medcbm-starter", "hpo", "openi"} and st["disk_bytes"] > 0
