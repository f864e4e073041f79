"""Generation loop, filters, prior and grounding on the real starter-corpus knowledge store."""

from __future__ import annotations

import json

import pytest

from medcbm.concepts.alignment import align_bank, coverage, ph2_targets
from medcbm.concepts.backends import Candidate, get_backend
from medcbm.concepts.filters import CandidateFilter, embed_minilm, names_class
from medcbm.concepts.generate import StoreRetriever, build_bank, generate_bank, parse_classes
from medcbm.concepts.prior import compute_priors
from medcbm.concepts.schema import GenerationConfig, load_bank, save_bank
from medcbm.errors import ConfigError, DataError, RegistryError

CLASSES = parse_classes(["mel=melanoma|melanomas", "bcc=basal cell carcinoma|basal cell carcinomas",
                         "df=dermatofibroma|dermatofibromas"])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from medcbm.knowledge import build_default_store

    return build_default_store(tmp_path_factory.mktemp("kb"))


@pytest.fixture(scope="module")
def big_bank(store):
    cfg = _config(store, target_size=40, k=8, max_queries=25)
    return generate_bank(StoreRetriever(store, where={"modality": "dermoscopy"}), get_backend("extractive"), cfg)


def _config(store, **kw) -> GenerationConfig:
    base = dict(classes=CLASSES, modality="dermoscopy", target_size=8, k=6, corpus_hash=store.corpus_hash,
                where={"modality": "dermoscopy"})
    base.update(kw)
    return GenerationConfig(**base)


def test_extractive_bank_has_complete_provenance_and_priors(store, tmp_path):
    bank = build_bank(store, _config(store), backend=get_backend("extractive"), name="t")
    assert len(bank.concepts) == 8 and bank.stats["stopped"] == "target_size"
    texts = {}
    for c in bank.concepts:
        pv = c.provenance
        # look the passage up by its own sentence: a concept may be named by a lexicon synonym ("pearly")
        passage = store.search(pv.reference, k=50, mode="bm25", where={"doc_id": pv.doc_id})
        texts[pv.doc_id] = passage[0].text
        assert pv.reference in texts[pv.doc_id], c.id  # the reference sentence is in the cited passage
        assert pv.corpus_hash == store.corpus_hash and pv.store and pv.query and pv.citation
        assert c.generator.backend == "extractive" and c.generator.prompt_hash
        assert c.question.endswith("?") and {a.class_key for a in c.classes} == {"mel", "bcc", "df"}
        assert not names_class(c.name, CLASSES)
    ids = [c.id for c in bank.concepts]
    assert len(set(ids)) == len(ids)
    # seed queries come first; every accepted concept is queued as a new query
    assert bank.concepts[0].provenance.query == "melanoma dermoscopy"
    # the prior has evidence for its non-zero entries, and knows arborizing vessels belong to BCC
    for c in bank.concepts:
        for a in c.classes:
            assert (a.prior == 0) or all(e.polarity == a.prior for e in a.evidence) and a.evidence
    p = save_bank(bank, tmp_path / "b.json")
    assert load_bank(p) == bank


def test_prior_from_negation_aware_evidence(store, big_bank):
    by_id = {c.id: c for c in big_bank.concepts}
    assert "arborizing_vessels" in by_id
    [c] = compute_priors([by_id["arborizing_vessels"]], CLASSES, StoreRetriever(store, where={"modality": "dermoscopy"}))
    prior = {a.class_key: a.prior for a in c.classes}
    assert prior["bcc"] == 1
    assert any("basal cell" in e.sentence.lower() for a in c.classes if a.class_key == "bcc" for e in a.evidence)


def test_resume_after_interruption_gives_the_same_bank(store, tmp_path):
    retr = StoreRetriever(store, where={"modality": "dermoscopy"})
    cfg = _config(store, target_size=10, max_per_query=2)
    full = generate_bank(retr, get_backend("extractive"), cfg)

    class Crash(Exception):
        pass

    real = get_backend("extractive")
    calls = {"n": 0}

    class Flaky(type(real)):
        def propose(self, request):
            calls["n"] += 1
            if calls["n"] == 3:
                raise Crash
            return super().propose(request)

    state = tmp_path / "state.json"
    with pytest.raises(Crash):
        generate_bank(retr, Flaky(), cfg, state_path=state)
    saved = json.loads(state.read_text())
    assert len(saved["done_queries"]) == 2 and saved["concepts"]
    resumed = generate_bank(retr, get_backend("extractive"), cfg, state_path=state)
    assert [c.id for c in resumed.concepts] == [c.id for c in full.concepts]
    assert [c.provenance for c in resumed.concepts] == [c.provenance for c in full.concepts]
    with pytest.raises(ConfigError, match="different generation config"):
        generate_bank(retr, get_backend("extractive"), _config(store, target_size=9), state_path=state)


def test_never_a_silently_empty_bank(store):
    cfg = _config(store, min_words=6, max_words=6, max_queries=3)  # every finding name is shorter
    with pytest.raises(DataError, match=r"no concept accepted after 3 queries; rejections: \{'length': \d+"):
        generate_bank(StoreRetriever(store, where={"modality": "dermoscopy"}), get_backend("extractive"), cfg)


def test_filters_reject_with_reasons():
    f = CandidateFilter(CLASSES, embed_minilm, dedup_threshold=0.9, max_words=4,
                        exclude_categories=["acquisition"])
    ok = Candidate(name="blue-whitish veil", doc_id="d")
    assert f.check(ok) is None
    assert f.check(Candidate(name="blue whitish veil", doc_id="d"))[0] == "duplicate"
    reason, detail = f.check(Candidate(name="blue-whitish veils", doc_id="d"))
    assert reason == "near_duplicate" and "blue-whitish veil" in detail
    assert f.check(Candidate(name="pigmented basal cell carcinoma", doc_id="d"))[0] == "names_class"
    assert f.check(Candidate(name="melanomas", doc_id="d"))[0] == "names_class"
    assert f.check(Candidate(name="a very long finding name here", doc_id="d"))[0] == "length"
    assert f.check(Candidate(name="lesion growth", doc_id="d", visual=False))[0] == "not_visual"
    assert f.check(Candidate(name="polarised light", doc_id="d", category="acquisition"))[0] == "confounder_category"
    assert f.check(Candidate(name="arborizing vessels", doc_id="d")) is None


def test_grounding_map_covers_ph2_criteria(big_bank):
    bank = big_bank
    aligned = align_bank(bank)
    cov = coverage(aligned, ph2_targets())
    covered = [k for k, v in cov.items() if v]
    assert len(covered) >= 8, cov
    bwv = [c for c in aligned.concepts if c.id == "blue_whitish_veil"]
    assert bwv and bwv[0].grounding.source == "ph2:blue_whitish_veil" and bwv[0].grounding.method == "mapping"
    # reviewed overrides win and are checked against the targets
    first = aligned.concepts[0].id
    over = align_bank(bank, overrides={first: None})
    assert over.concepts[0].grounding.status == "not_groundable"
    with pytest.raises(DataError, match="unknown target"):
        align_bank(bank, overrides={first: "ph2:nope"})


def test_registry_and_class_spec_errors():
    with pytest.raises(RegistryError, match="Available: extractive, openai"):
        get_backend("gpt5")
    with pytest.raises(ConfigError, match="distinct class keys"):
        parse_classes(["mel=melanoma", "mel=melanomas"])
    assert [c.key for c in parse_classes(["No Finding,covid=COVID-19|SARS-CoV-2"])] == ["no_finding", "covid"]
