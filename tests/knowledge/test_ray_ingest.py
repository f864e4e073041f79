"""``--engine ray``: chunks embedded by a Ray actor pool equal the local engine's; ``local`` never imports Ray."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from medcbm.knowledge import add_documents, open_store
from tests.knowledge.conftest import require


def _vectors(store) -> dict[str, np.ndarray]:
    return {c: np.asarray(e) for ids, _, _, embs in store.iter_all(include=("documents", "metadatas", "embeddings"))
            for c, e in zip(ids, embs)}


@pytest.mark.slow
def test_ray_embeddings_equal_local(tmp_path, small_docs):
    require(importlib.util.find_spec("ray") is not None, "ray[data] (medcbm[ray]) is not installed")
    from medcbm.engines import EngineConfig, engine_scope

    # long starter passages and short HPO terms, so batches mix lengths (padding) differently on each engine
    docs = [d for d in small_docs if d.source == "medcbm-starter"][:12] + [d for d in small_docs if d.source == "hpo"][:28]
    local = open_store(tmp_path / "local")
    add_documents(local, docs)
    remote = open_store(tmp_path / "ray")
    with engine_scope(EngineConfig(engine="ray", workers=2, batch_size=16)):
        import ray

        assert not ray.is_initialized()  # started on first use, not by the scope
        summary = add_documents(remote, docs)
        assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2  # ray.init(num_cpus=2), kept for the scope
    assert not ray.is_initialized()
    want, got = _vectors(local), _vectors(remote)
    assert summary.added == len(want) == len(got) and got.keys() == want.keys()
    for cid, vec in want.items():
        np.testing.assert_allclose(got[cid], vec, rtol=0, atol=1e-6, err_msg=cid)
    assert remote.corpus_hash == local.corpus_hash
    q = "regression structures"
    assert [p.chunk_id for p in remote.search(q, k=5)] == [p.chunk_id for p in local.search(q, k=5)]


def test_local_engine_never_imports_ray(tmp_path, monkeypatch):
    from medcbm.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` now raises ImportError
    doc = tmp_path / "ptx.md"
    doc.write_text("# Pneumothorax\n\nA visceral pleural line with no lung markings beyond it indicates a pneumothorax.")
    store = str(tmp_path / "s")
    r = CliRunner().invoke(app, ["knowledge", "ingest", str(doc), "--store", store, "--engine", "local"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["knowledge", "stats", "--store", store])
    assert json.loads(r.output)["n_chunks"] == 1
