"""Stance-labelled citations for bank concepts, and bank entries for vocabulary concepts the bank lacks.

The starter corpus tags passages with the vocabulary concepts they are about and the class they argue for
(:mod:`medcbm.knowledge.stance`). :func:`cite_bank` uses those tags to

1. link a model concept that no bank concept is grounded to: first to an existing bank concept whose name
   or synonyms meet the concept's lexicon synonyms (``knowledge/lexicon/*.tsv``; method ``lexicon``), else
   to a new bank concept seeded from the vocabulary (question from the vocabulary, synonyms from the mapping
   file and lexicon, provenance = its first tagged passage; generator ``vocabulary``);
2. attach to every grounded bank concept the tagged passages of its targets as :class:`Citation` s (at most
   :data:`MAX_CITATIONS` per target, those arguing for a class before ``depends`` ones; the sentence quoted is
   the one that names the concept and, where possible, the class the passage argues for);
3. re-derive the class–concept prior of a concept that has stance-labelled citations from those stances
   (method ``stance``): the knowledge's own verdict instead of co-occurrence counts.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

from medcbm._io import sha256_file
from medcbm._resources import resource_path
from medcbm.concepts.alignment import EXTRA_TARGETS, TARGETS, Target, norm_term, pattern_targets
from medcbm.concepts.negation import find_mentions, sentence_spans
from medcbm.concepts.schema import (ClassAssociation, Citation, Concept, ConceptBank, Evidence, GeneratorInfo,
                                    Grounding, Provenance)
from medcbm.concepts.vocab import load_lexicon
from medcbm.knowledge.ingest import chunk_document
from medcbm.knowledge.passage import Document
from medcbm.knowledge.readers import read_jsonl
from medcbm.knowledge.stance import DEPENDS, stance_sign

logger = logging.getLogger(__name__)

#: most citations kept per bank concept and target (the audit shows one, plus a counter-passage)
MAX_CITATIONS = 8
#: a stance-derived sign needs the leading class to have this many more supporting passages than the next
SIGN_MARGIN = 2


def corpus_files(paths: Sequence[str | Path] | None = None) -> list[Path]:
    """The corpus JSONL files: ``paths``, or the shipped ``knowledge/corpus/*.jsonl``."""
    return [Path(p) for p in paths] if paths else sorted(resource_path("knowledge", "corpus").glob("*.jsonl"))


def corpus_documents(paths: Sequence[str | Path] | None = None) -> list[Document]:
    """The documents of the corpus JSONL files (default: the shipped ``knowledge/corpus/*.jsonl``)."""
    return [d for f in corpus_files(paths) for d in read_jsonl(f, source=f.stem)]


def corpus_hash(paths: Sequence[str | Path] | None = None) -> str:
    """Content hash of the corpus files (recorded in seeded concepts' provenance)."""
    return "+".join(sha256_file(f)[:16] for f in corpus_files(paths))


def modality_targets(modality: str) -> list[Target]:
    """Every grounding target of a modality: the primary vocabulary, the extra ones, then the whole-lesion patterns."""
    groups = [TARGETS[modality]()] if modality in TARGETS else []
    groups += [make() for make in EXTRA_TARGETS.get(modality, ())]
    return [t for g in groups for t in g] + pattern_targets(modality)


def _key(source: str) -> str:
    return source.split(":", 1)[1]


def lexicon_terms(modality: str, phrases: Sequence[str]) -> list[str]:
    """``phrases`` plus the synonyms of every lexicon entry that shares a term with them."""
    want = {norm_term(p) for p in phrases}
    out = list(phrases)
    try:
        lexicon = load_lexicon(modality)
    except Exception as exc:  # a modality without a lexicon only loses the expansion
        logger.info("no lexicon for %s (%s)", modality, exc)
        return out
    for entry in lexicon:
        if {norm_term(t) for t in entry.terms} & want:
            out.extend(t for t in entry.terms if t not in out)
    return out


def _class_terms(bank: ConceptBank) -> dict[str, list[str]]:
    return {c.key: c.terms for c in bank.classes}


#: words that name the kind of finding rather than the finding ("hairpin vessels" is about "hairpin")
GENERIC_WORDS = frozenset({"vessel", "vessels", "colour", "color", "pattern", "patterns", "area", "areas",
                           "structure", "structures", "lesion", "lesions", "involvement", "distribution"})
_LEAD = re.compile(r"^(?:and|or|but|while|whereas)\s+", re.I)  # a clause quoted alone drops its conjunction
#: a sentence naming this many other vocabulary concepts is a list ("six colours are counted: ...")
LIST_CONCEPTS = 3


def head_terms(terms: Sequence[str]) -> list[str]:
    """The distinctive part of each term (generic words dropped): ``hairpin vessels`` -> ``hairpin``."""
    out = []
    for t in terms:
        head = " ".join(w for w in t.split() if w.lower() not in GENERIC_WORDS)
        if len(head) >= 4 and head not in out:
            out.append(head)
    return out


def candidate_spans(text: str) -> list[str]:
    """The sentences of ``text``, plus the ``;``-separated clauses of a list-like sentence (two or more ``;``),
    so that "... hairpin vessels with a white halo in seborrheic keratosis; ..." can be quoted on its own."""
    out = []
    for s, e in sentence_spans(text):
        sent = text[s:e].strip()
        out.append(sent)
        if sent.count(";") >= 2:
            clauses = (_LEAD.sub("", c.strip(" ;.")) for c in sent.split(";"))
            out += [c for c in clauses if len(c) > 20]
    return out


def is_list(sentence: str, others: Sequence[Sequence[str]]) -> bool:
    """Whether ``sentence`` names at least :data:`LIST_CONCEPTS` of the ``others`` concepts."""
    return sum(bool(find_mentions(sentence, list(g))) for g in others) >= LIST_CONCEPTS


def best_sentence(text: str, terms: Sequence[str], support: Sequence[str], against: Sequence[str],
                  others: Sequence[Sequence[str]] = ()) -> str:
    """The sentence (or clause of a list-like sentence) of ``text`` that names the concept and the class the
    passage argues for.

    Score: +3 for an affirmed concept term (+1 for only its distinctive word, :func:`head_terms`), +1 for a
    supported-class term, −1 for a term of a class the passage argues against, −1 for a list (naming at least
    :data:`LIST_CONCEPTS` of the ``others`` concepts); ties go to the earlier candidate. Falls back to the
    first sentence.
    """
    heads = head_terms(terms)
    best, best_score = None, -9
    for sent in candidate_spans(text):
        named = any(not m.negated for m in find_mentions(sent, list(terms)))
        score = 3 if named else int(any(not m.negated for m in find_mentions(sent, heads)))
        score += bool(support and find_mentions(sent, list(support)))
        score -= bool(against and find_mentions(sent, list(against)))
        score -= is_list(sent, others)
        if score > best_score:
            best, best_score = sent, score
    return best or text.strip()


def _stance_class_terms(bank: ConceptBank, stance: str | None) -> tuple[list[str], list[str]]:
    """Terms of the bank classes a stance supports, and of those it argues against."""
    terms = _class_terms(bank)
    sup = [t for k, ts in terms.items() if stance_sign(stance, [k]) > 0 for t in ts]
    against = [t for k, ts in terms.items() if stance_sign(stance, [k]) < 0 for t in ts]
    return sup, against


def citations_for(key: str, terms: Sequence[str], docs: Sequence[Document], bank: ConceptBank,
                  others: Sequence[Sequence[str]] = ()) -> list[Citation]:
    """A citation for every document tagged with vocabulary concept ``key`` (``others``: the other concepts'
    terms, to avoid quoting a list sentence)."""
    out = []
    for d in docs:
        if key not in (d.metadata.get("concepts") or []):
            continue
        stance = d.metadata.get("stance")
        sup, against = _stance_class_terms(bank, stance)
        sentence = best_sentence(d.text, terms, sup, against, others)
        chunks = chunk_document(d)
        chunk = next((cid for cid, text, _ in chunks if sentence[:60] in text), chunks[0][0] if chunks else "")
        out.append(Citation(doc_id=d.doc_id, chunk_id=chunk, sentence=sentence, concept=key,
                            stance=stance or "", qualifier=str(d.metadata.get("qualifier") or ""),
                            reference=str(d.metadata.get("reference") or "")))
    return out


def argues(citation: Citation) -> bool:
    """Whether the cited passage argues for a class (a stance other than ``depends``)."""
    return bool(citation.stance) and citation.stance != DEPENDS


def keep_ids(found: Sequence[Citation], limit: int = MAX_CITATIONS) -> set[str]:
    """The doc ids of the at most ``limit`` citations of one target that are kept.

    The prior is read off the kept passages, so those arguing for a class come first (in corpus order) and
    descriptive ``depends`` passages early in a file cannot crowd them out; one ``depends`` passage keeps a
    place when there is one, for the audit to cite where the prior is 0.
    """
    arguing = [x for x in found if argues(x)]
    rest = [x for x in found if not argues(x)]
    n = min(len(arguing), limit - 1 if rest else limit)
    return {x.doc_id for x in [*arguing[:n], *rest[:limit - n]]}


def names_concept(sentence: str, terms: Sequence[str]) -> bool:
    """Whether ``sentence`` affirms one of ``terms`` or its distinctive word (:func:`head_terms`)."""
    return any(not m.negated for m in find_mentions(sentence, [*terms, *head_terms(terms)]))


def stance_associations(citations: Sequence[Citation], bank: ConceptBank,
                        margin: int = SIGN_MARGIN) -> list[ClassAssociation]:
    """The prior per bank class from citation stances.

    +1 for the class most passages argue for when it leads every other class by at least ``margin``
    passages; then −1 for each class no passage argues for; else 0 everywhere (a near tie such as 3 nevus
    against 2 melanoma passages, or only ``depends`` passages). A finding the literature ties to several
    classes thus points only to its main one, and only when the literature clearly favours it.
    """
    stanced = [c for c in citations if c.stance and c.stance != DEPENDS]
    support = {cls.key: [c for c in stanced if stance_sign(c.stance, [cls.key]) > 0] for cls in bank.classes}
    counts = sorted((len(v) for v in support.values()), reverse=True)
    top = counts[0] if counts else 0
    clear = top > 0 and top - (counts[1] if len(counts) > 1 else 0) >= margin
    out = []
    for cls in bank.classes:
        n = len(support[cls.key])
        prior = (1 if n == top else -1 if n == 0 else 0) if clear else 0
        pool = support[cls.key] if prior > 0 else [c for c in stanced if c not in support[cls.key]]
        ev = [Evidence(doc_id=c.doc_id, chunk_id=c.chunk_id, sentence=c.sentence, polarity=prior)
              for c in pool][:3] if prior else []
        out.append(ClassAssociation(class_key=cls.key, prior=prior, method="stance", evidence=ev))
    return out


def _lexicon_match(concepts: Sequence[Concept], terms: Sequence[str], taken: set[str]) -> Concept | None:
    want = {norm_term(t) for t in terms}
    for c in concepts:
        if c.id not in taken and c.grounding.status != "annotation" and {norm_term(t) for t in c.terms} & want:
            return c
    return None


def _seed(target: Target, terms: list[str], docs: Sequence[Document], bank: ConceptBank,
          corpus_sha: str, sources: list[str]) -> Concept | None:
    key = _key(target.source)
    tagged = [d for d in docs if key in (d.metadata.get("concepts") or [])]
    if not tagged:
        return None
    first = tagged[0]
    sentence = best_sentence(first.text, terms, [], [])
    name = terms[0] if terms else key.replace("_", " ")
    return Concept(
        id=key, name=name, question=target.question, modality=bank.modality,
        synonyms=[t for t in terms[1:] if norm_term(t) != norm_term(name)][:12], category="vocabulary",
        provenance=Provenance(query=f"vocabulary {target.source}", doc_id=first.doc_id,
                              chunk_id=chunk_document(first)[0][0], reference=sentence, source=first.source,
                              citation=str(first.metadata.get("reference") or ""), store="knowledge/corpus",
                              corpus_hash=corpus_sha),
        generator=GeneratorInfo(backend="vocabulary", model="knowledge/mappings", prompt_hash=corpus_sha[:16]),
        grounding=Grounding(status="annotation", source=sources[0], method="vocabulary", similarity=1.0,
                            extra_sources=sources[1:]))


def cite_bank(bank: ConceptBank, docs: Sequence[Document] | None = None,
              targets: Sequence[Target] | None = None, *, corpus_sha: str = "") -> ConceptBank:
    """Return a copy of ``bank`` where every target has a grounded entry with stance-labelled citations.

    Args:
        docs: tagged corpus documents (default: the shipped corpus, this bank's modality).
        targets: grounding targets (default: every vocabulary of the bank's modality).
        corpus_sha: recorded in seeded concepts' provenance (default: :func:`corpus_hash` of the shipped files).
    """
    if docs is None:
        docs = [d for d in corpus_documents() if d.modality in ("", bank.modality)]
    targets = list(targets if targets is not None else modality_targets(bank.modality))
    corpus_sha = corpus_sha or corpus_hash()
    by_key: dict[str, list[Target]] = {}
    for t in targets:
        by_key.setdefault(_key(t.source), []).append(t)
    concepts = list(bank.concepts)
    linked = {_key(s) for c in concepts for s in c.grounding.sources}
    taken: set[str] = set()
    for key, group in by_key.items():
        if key in linked:
            continue
        sources = [t.source for t in group]
        terms = lexicon_terms(bank.modality, [p for t in group for p in t.phrases])
        match = _lexicon_match(concepts, terms, taken)
        if match is not None:
            g = Grounding(status="annotation", source=sources[0], method="lexicon", similarity=1.0,
                          extra_sources=sources[1:])
            concepts = [c.model_copy(update={"grounding": g}) if c.id == match.id else c for c in concepts]
            taken.add(match.id)
        elif (seeded := _seed(group[0], terms, docs, bank, corpus_sha, sources)) is not None:
            if any(c.id == seeded.id for c in concepts):
                seeded = seeded.model_copy(update={"id": f"{seeded.id}_vocab"})
            concepts.append(seeded)
        else:
            logger.warning("target %s: no tagged passage and no lexicon match; it stays uncovered", sources[0])
    # the other concepts' distinctive words, without class names ("melanoma" names a class, not a finding)
    class_words = {norm_term(t) for ts in _class_terms(bank).values() for t in ts}
    heads = {key: [h for h in head_terms([p for t in group for p in t.phrases]) if norm_term(h) not in class_words]
             for key, group in by_key.items()}
    out = []
    for c in concepts:
        cites: list[Citation] = []
        for src in c.grounding.sources:
            group = by_key.get(_key(src), [])
            terms = lexicon_terms(bank.modality, [*c.terms, *(p for t in group for p in t.phrases)])
            others = [h for key, h in heads.items() if key != _key(src) and h and not set(h) & set(head_terms(terms))]
            have = {(x.doc_id, x.concept) for x in cites}  # ph2: and derm7pt: share keys: cite a passage once
            found = citations_for(_key(src), terms, docs, bank, others)
            keep = keep_ids(found)
            kept = [x for x in found if x.doc_id in keep]
            # passages whose quote names the concept first, list sentences last (the 8 kept stay corpus order)
            kept.sort(key=lambda x: (not names_concept(x.sentence, terms), is_list(x.sentence, others)))
            cites += [x for x in kept if (x.doc_id, x.concept) not in have]
        # tagged passages replace co-occurrence counts as the prior's evidence ("depends" ones give 0)
        update: dict = {"citations": cites, "classes": stance_associations(cites, bank)} if cites else {}
        out.append(c.model_copy(update=update))
    return bank.model_copy(update={"concepts": out})


def target_coverage(bank: ConceptBank, targets: Sequence[Target] | None = None) -> list[tuple[str, list[str], list[Citation]]]:
    """``(target source, bank concept ids grounded to it, their citations of it)`` for every target."""
    targets = list(targets if targets is not None else modality_targets(bank.modality))
    out = []
    for t in targets:
        entries = [c for c in bank.concepts if t.source in c.grounding.sources]
        cites = [x for c in entries for x in c.citations if x.concept == _key(t.source)]
        out.append((t.source, [c.id for c in entries], cites))
    return out


def eval_gold(row: dict, docs: Sequence[Document] | None = None,
              narrower: dict[str, list[str]] | None = None) -> list[str]:
    """The retrieval eval's gold for a ``concept`` or ``class`` row (``medcbm.knowledge.evalset.tagged_gold``):
    corpus tags of the target and its ``narrower`` concepts (default: the shipped hierarchy), then, for a concept,
    the HPO terms named after it in any modality whose vocabulary holds it (its mapping phrases,
    :func:`medcbm.concepts.vocab.hpo_matches`). Pass ``docs`` and ``narrower`` when deriving many rows."""
    from medcbm.concepts.vocab import hpo_matches
    from medcbm.knowledge.evalset import concept_hierarchy, tagged_gold

    docs = corpus_documents() if docs is None else docs
    narrower = concept_hierarchy() if narrower is None else narrower
    ontology: list[str] = []
    for modality in ("dermoscopy", "chest_xray") if row["kind"] == "concept" else ():
        phrases = [p for t in modality_targets(modality) if _key(t.source) == row["target"] for p in t.phrases]
        ontology += [i for i in hpo_matches(modality, phrases) if i not in ontology]
    return tagged_gold(docs, row["kind"], row["target"], narrower=narrower, ontology=ontology)
