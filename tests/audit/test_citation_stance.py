"""Citations chosen by stance, over the shipped banks and the concepts the shipped models can use (issue 25).

For every concept of the shipped dermoscopy ``cbm`` (PH2 + Derm7pt criteria and patterns) and chest X-ray
``cxr_cbm_reports`` (clinical-notes findings) models: at least two distinct cited passages, and the passage the
audit cites when the weight follows the model's prior argues what the prior says (``depends`` for a 0 prior).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from medcbm.audit.explain import BankLink, Citation, bank_links, choose_citations
from medcbm.bottleneck.recipe import concept_links, expert_prior_files, resolve_prior
from medcbm.bottleneck.priors import merge_prior_files
from medcbm.concepts.alignment import cxr_notes_vocab
from medcbm.data.derm7pt_vocab import DERM7PT_CONCEPTS, DERM7PT_PATTERN_CONCEPTS
from medcbm.data.ph2_vocab import PH2_CONCEPTS, PH2_PATTERN_CONCEPTS
from medcbm.methods.cbm import load_method_recipe

DERM = list(dict.fromkeys([*PH2_CONCEPTS, *PH2_PATTERN_CONCEPTS, *DERM7PT_CONCEPTS, *DERM7PT_PATTERN_CONCEPTS]))
# method, model classes, the class whose prior sign is checked, the concepts the recipe's sources provide
SHIPPED = [("cbm", ["benign", "malignant"], "malignant", DERM),
           ("cxr_cbm_reports", ["covid", "other"], "covid", list(cxr_notes_vocab()))]


def _model_prior(name: str, classes: list[str]) -> dict[str, dict[str, int]]:
    cfg = load_method_recipe(name)
    if cfg.prior == "expert":
        return merge_prior_files(expert_prior_files(cfg))[0]
    return resolve_prior(cfg, classes)[0]


@pytest.fixture(scope="module", params=SHIPPED, ids=[s[0] for s in SHIPPED])
def shipped(request):
    name, classes, positive, concepts = request.param
    links = concept_links(load_method_recipe(name), concepts, classes)
    model = SimpleNamespace(recipe_={"concept_links": links})
    return {k: bank_links(model, k) for k in concepts}, _model_prior(name, classes)[positive], positive


def test_every_concept_has_two_cited_passages(shipped):
    links, _, _ = shipped
    thin = {k: len({c.doc_id for link in v for c in link.citations}) for k, v in links.items()}
    assert len(links) >= 20
    assert all(n >= 2 for n in thin.values()), {k: n for k, n in thin.items() if n < 2}


def test_first_citation_agrees_with_the_prior(shipped):
    links, prior, positive = shipped
    assert sum(bool(v) for v in prior.values()) >= 10  # the prior has real signs to agree with
    wrong = {}
    for k in links:
        sign = prior.get(k, 0)  # a mined prior leaves out the concepts it has no sign for
        cite, counter = choose_citations(links[k], positive, sign)
        assert cite is not None, k
        if cite.support.get(positive) != sign:
            wrong[k] = (sign, cite.stance, cite.sentence[:80])
        if counter is not None:
            assert counter.support[positive] == -sign, k
    assert not wrong, wrong


def _link(*stances: str) -> list[BankLink]:
    sup = {"mel": {"malignant": 1, "benign": -1}, "nv": {"malignant": -1, "benign": 1},
           "depends": {"malignant": 0, "benign": 0}}
    cites = [Citation(doc_id=f"d{i}", chunk_id="", sentence=s, stance=s, support=sup[s]) for i, s in enumerate(stances)]
    return [BankLink(bank="b", concept_id="c", name="c", question="Is there c?", citations=cites)]


def test_choice_follows_the_weight_and_labels_the_counter_passage():
    links = _link("nv", "depends", "mel")
    cite, counter = choose_citations(links, "malignant", 1)
    assert (cite.stance, counter.stance) == ("mel", "nv")
    cite, counter = choose_citations(links, "benign", 1)  # the same finding read for the other class
    assert (cite.stance, counter.stance) == ("nv", "mel")
    cite, counter = choose_citations(links, "malignant", -1)  # absence speaks for malignant: cite the nv passage
    assert (cite.stance, counter.stance) == ("nv", "mel")
    cite, counter = choose_citations(links, "malignant", 0)
    assert cite.stance == "depends" and counter is None


def test_no_agreeing_passage_never_cites_a_contradicting_one():
    cite, counter = choose_citations(_link("nv"), "malignant", 1)
    assert cite is None and counter.stance == "nv"
    cite, _ = choose_citations(_link("nv", "depends"), "malignant", 1)
    assert cite.stance == "depends"
