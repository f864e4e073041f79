"""OpenAI-compatible chat-completions backend (vLLM, Ollama, llama.cpp server, OpenAI, Azure, transformers serve).

Requests go through ``httpx`` with a timeout and retries with exponential backoff on connection errors,
timeouts, 429 and 5xx. Answers are JSON (``{"concepts": [...]}``), parsed and validated with pydantic;
responses are cached on disk keyed by the prompt hash, so a rerun or resume never pays twice.
Malformed, empty or truncated outputs, items that fail validation, and items citing a document that was
not retrieved are rejected with a reason (they end up in the bank's rejected log).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any, Sequence

from pydantic import BaseModel, ValidationError

from medcbm._io import sha256_text
from medcbm.concepts.backends.base import (
    Backend,
    BackendError,
    Candidate,
    PassageLike,
    Proposal,
    ProposalRequest,
    register_backend,
)
from medcbm.concepts.cache import ResponseCache
from medcbm.concepts.negation import sentence_spans
from medcbm.concepts.schema import GeneratorInfo, RejectedCandidate

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You extract visual findings for a concept bottleneck model from clinical passages. "
    "A finding must be visible in a {modality} image, must not name a diagnosis, and must be stated in one "
    "of the passages. Answer with JSON only: "
    '{{"concepts": [{{"name": short finding, "question": yes/no question, "doc_id": id of the passage, '
    '"reference": the sentence it comes from, "visual": true}}]}}'
)
EXAMPLE_USER = "Passages:\n[ex-1] Melanoma often shows a blue-whitish veil over raised areas.\nGive at most 2 findings."
EXAMPLE_ANSWER = json.dumps({"concepts": [{
    "name": "blue-whitish veil", "question": "Is there a blue-whitish veil?", "doc_id": "ex-1",
    "reference": "Melanoma often shows a blue-whitish veil over raised areas.", "visual": True}]})
JUDGE_PROMPT = (
    "Answer the question from the passages only. Reply with JSON only: "
    '{"answer": "yes" | "no" | "unknown", "doc_id": id of the passage that supports the answer}'
)


class LLMConcepts(BaseModel):
    """Top-level shape of a concept answer (items are validated one by one as :class:`Candidate`)."""

    concepts: list[dict[str, Any]]


class LLMJudgement(BaseModel):
    """Shape of a yes/no judgement answer."""

    answer: str
    doc_id: str = ""


def extract_json(content: str) -> Any:
    """First JSON object in ``content`` (tolerates code fences and trailing text); raises ``ValueError``."""
    text = re.sub(r"^```(?:json)?|```$", "", content.strip(), flags=re.M)
    dec = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = dec.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    raise ValueError("no JSON object in the output")


def _norm(s: str) -> str:
    return re.sub(r"\W+", " ", s.lower()).strip()


def locate_reference(passage_text: str, name: str, reference: str) -> str | None:
    """The passage sentence backing a concept: the cited sentence if it is in the passage, else the
    sentence sharing most words with the concept name; ``None`` if no sentence shares any word."""
    sents = [passage_text[s:e] for s, e in sentence_spans(passage_text)]
    if reference and _norm(reference):
        for s in sents:
            if _norm(reference) in _norm(s) or _norm(s) in _norm(reference):
                return s
    words = {w for w in _norm(name).split() if len(w) > 2}
    best = max(sents, key=lambda s: len(words & set(_norm(s).split())), default=None)
    if best is None or not words & set(_norm(best).split()):
        return None
    return best


@register_backend("openai")
class OpenAIChatBackend(Backend):
    """Chat-completions client.

    Args:
        base_url: API root including the version, e.g. ``http://127.0.0.1:8000/v1``.
        model: model name sent in the request.
        api_key: bearer token (default: ``$OPENAI_API_KEY`` if set).
        timeout: seconds per request.
        max_retries: retries after the first attempt (connection errors, timeouts, 429, 5xx).
        backoff: first retry delay in seconds, doubled each retry.
        max_tokens / temperature: generation settings (part of the prompt hash).
        json_mode: send ``response_format={"type": "json_object"}`` (servers that support it).
        cache_dir: response cache folder (``None``: no caching).
    """

    can_judge = True

    def __init__(self, base_url: str = "http://127.0.0.1:8000/v1", model: str = "default", *, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3, backoff: float = 1.0, max_tokens: int = 512,
                 temperature: float = 0.0, json_mode: bool = False, cache_dir: str | os.PathLike | None = None,
                 **_: object):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.max_tokens, self.temperature, self.json_mode = max_tokens, temperature, json_mode
        self.cache = ResponseCache(cache_dir)
        self.n_requests = 0

    @property
    def url(self) -> str:
        """The chat-completions endpoint."""
        return f"{self.base_url}/chat/completions"

    def _payload(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                                "max_tokens": self.max_tokens, "stream": False}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def complete(self, messages: list[dict[str, str]]) -> tuple[dict[str, Any], str]:
        """Send (or read from cache) one chat completion; returns ``(response JSON, prompt hash)``."""
        body = self._payload(messages)
        key = sha256_text("chat", json.dumps(body, sort_keys=True))
        cached = self.cache.get(key)
        if cached is not None:
            return cached, key
        data = self._post(body)
        self.cache.put(key, data)
        return data, key

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                logger.warning("retrying %s in %.1fs (%s)", self.url, delay, last)
                time.sleep(delay)
            try:
                self.n_requests += 1
                r = httpx.post(self.url, json=body, headers=headers, timeout=self.timeout)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout:g}s"
                continue
            except httpx.TransportError as err:
                last = f"connection failed ({type(err).__name__}: {err})"
                continue
            if r.status_code == 429 or r.status_code >= 500:
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                continue
            if r.status_code >= 400:
                raise BackendError(f"chat completions request to {self.url} was refused: HTTP {r.status_code}: {r.text[:300]}")
            try:
                return r.json()
            except ValueError:
                last = f"response is not JSON: {r.text[:200]!r}"
                continue
        raise BackendError(f"chat completions request to {self.url} failed after {self.max_retries + 1} attempts: {last}. "
                           "Is the server running and the URL right (it should end in /v1)?")

    @staticmethod
    def _content(data: dict[str, Any]) -> tuple[str, str]:
        try:
            choice = data["choices"][0]
            return choice["message"].get("content") or "", choice.get("finish_reason") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            return "", "invalid-response"

    def messages_for(self, request: ProposalRequest) -> list[dict[str, str]]:
        """The chat messages for one generation step (system, one worked example, the passages)."""
        passages = "\n".join(f"[{p.doc_id}] {' '.join(p.text.split())}" for p in request.passages)
        classes = ", ".join(c.name for c in request.classes)
        user = (f"Classes (do not name them): {classes}\nQuery: {request.query}\nPassages:\n{passages}\n"
                f"Give at most {request.max_candidates} findings.")
        return [
            {"role": "system", "content": SYSTEM_PROMPT.format(modality=request.modality)},
            {"role": "user", "content": EXAMPLE_USER},
            {"role": "assistant", "content": EXAMPLE_ANSWER},
            {"role": "user", "content": user},
        ]

    def propose(self, request: ProposalRequest) -> Proposal:
        data, key = self.complete(self.messages_for(request))
        gen = GeneratorInfo(backend=self.name, model=self.model, prompt_hash=key)
        content, finish = self._content(data)

        def reject(name: str, reason: str, detail: str = "", doc_id: str = "") -> RejectedCandidate:
            return RejectedCandidate(name=name, reason=reason, detail=detail[:300], query=request.query,
                                     doc_id=doc_id, backend=self.name)

        if not content.strip():
            return Proposal([], gen, [reject("<response>", "empty_output", f"finish_reason={finish}")])
        try:
            parsed = LLMConcepts.model_validate(extract_json(content))
        except (ValueError, ValidationError) as err:
            reason = "truncated_output" if finish == "length" else "malformed_output"
            return Proposal([], gen, [reject("<response>", reason, f"{err}; output: {content[:200]!r}")])
        by_doc = {p.doc_id: p for p in request.passages}
        cands, rejected = [], []
        for i, item in enumerate(parsed.concepts[: request.max_candidates]):
            try:
                c = Candidate.model_validate(item)
            except ValidationError as err:
                rejected.append(reject(str(item.get("name", f"<item {i}>"))[:120], "invalid_item", str(err)))
                continue
            p = by_doc.get(c.doc_id)
            if p is None:
                rejected.append(reject(c.name, "unknown_doc_id", f"cites {c.doc_id!r}, retrieved: {sorted(by_doc)}", c.doc_id))
                continue
            ref = locate_reference(p.text, c.name, c.reference)
            if ref is None:
                rejected.append(reject(c.name, "not_in_passage", "no sentence of the cited passage mentions it", c.doc_id))
                continue
            cands.append(c.model_copy(update={"reference": ref, "chunk_id": getattr(p, "chunk_id", "")}))
        return Proposal(cands, gen, rejected)

    def judge(self, question: str, passages: Sequence[PassageLike]) -> tuple[int, str] | None:
        """Ask a yes/no question about the passages; ``(+1|-1|0, doc_id)``, 0 when unknown or unparseable."""
        text = "\n".join(f"[{p.doc_id}] {' '.join(p.text.split())}" for p in passages)
        data, _ = self.complete([{"role": "system", "content": JUDGE_PROMPT},
                                 {"role": "user", "content": f"Passages:\n{text}\nQuestion: {question}"}])
        content, _finish = self._content(data)
        try:
            j = LLMJudgement.model_validate(extract_json(content))
        except (ValueError, ValidationError):
            return 0, ""
        ans = j.answer.strip().lower()
        doc = j.doc_id if j.doc_id in {p.doc_id for p in passages} else ""
        return {"yes": 1, "no": -1}.get(ans, 0), doc
