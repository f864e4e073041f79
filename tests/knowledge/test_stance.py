"""Corpus ``concepts`` / ``stance`` / ``qualifier`` fields: validation with file, row and field, and the shipped corpus."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from medcbm.concepts.citations import corpus_documents, modality_targets
from medcbm.errors import DataError
from medcbm.knowledge.readers import read_jsonl
from medcbm.knowledge.stance import stance_sign

OK = {"id": "a", "contents": "Arborizing vessels suggest basal cell carcinoma.", "concepts": ["vascular_arborizing"],
      "stance": "bcc", "reference": "Argenziano G et al. Arch Dermatol 2004", "license": "CC-BY-4.0"}


def _write(tmp_path, *rows) -> str:
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize("bad, field, words", [
    ({"stance": "cancer"}, "stance", "unknown stance 'cancer'"),
    ({"stance": "depends"}, "stance", "needs a qualifier"),
    ({"concepts": "vascular_arborizing"}, "concepts", "valid list"),
    ({"concepts": ["Arborizing vessels"]}, "concepts", "lower-case keys"),
    ({"concepts": []}, "stance", "needs the concepts"),
    ({"qualifer": "x"}, None, None),  # an unknown extra key is kept as metadata, not an error
])
def test_bad_annotations_name_file_row_and_field(tmp_path, bad, field, words):
    p = _write(tmp_path, {"id": "old", "contents": "A row without the new fields still reads."}, {**OK, **bad})
    if field is None:
        assert [d.doc_id for d in read_jsonl(p, source="t")] == ["old", "a"]
        return
    with pytest.raises(DataError) as err:
        list(read_jsonl(p, source="t"))
    msg = str(err.value)
    assert words in msg and str(p) in msg and "row 2" in msg and f"field '{field}'" in msg


def test_annotations_reach_the_document_metadata(tmp_path):
    [doc] = read_jsonl(_write(tmp_path, {**OK, "stance": "depends", "qualifier": "regular vs irregular"}), source="t")
    assert doc.metadata["concepts"] == ["vascular_arborizing"]
    assert doc.metadata["stance"] == "depends" and doc.metadata["qualifier"] == "regular vs irregular"


def test_stance_sign_maps_classes_and_groups():
    assert stance_sign("mel", ["malignant"]) == 1 and stance_sign("mel", ["benign"]) == -1
    assert stance_sign("akiec", ["malignant"]) == 1 and stance_sign("bkl", ["benign"]) == 1
    assert stance_sign("malignant", ["bcc"]) == 1 and stance_sign("malignant", ["nv"]) == -1
    assert stance_sign("pneumonia", ["pneumonia", "no_finding"]) == 1 and stance_sign("covid", ["pneumonia"]) == -1
    assert stance_sign("depends", ["mel"]) == 0 and stance_sign(None, ["mel"]) == 0


def test_shipped_corpus_tags_every_vocabulary_concept_and_class():
    docs = corpus_documents()
    tagged = [d for d in docs if d.metadata.get("stance")]
    assert len(docs) >= 230 and len(tagged) >= 150
    for d in tagged:
        assert d.metadata.get("reference") and d.license != "unknown", d.doc_id
    keys = {t.source.split(":", 1)[1] for m in ("dermoscopy", "chest_xray") for t in modality_targets(m)}
    named = Counter(c for d in tagged for c in d.metadata["concepts"])
    assert set(named) <= keys, set(named) - keys
    assert {k for k in keys if named[k] < 2} == set()
    stances = Counter(d.metadata["stance"] for d in tagged)
    for cls in ("nv", "mel", "bkl", "bcc", "akiec", "df", "vasc", "covid", "pneumonia", "no_finding"):
        assert stances[cls] >= 2, cls
    # both directions where the literature has both: a benign and a malignant passage on these findings
    for k in ("regression_areas", "color_blue_gray", "color_red", "color_white", "vascular_dotted", "atypical_pattern"):
        signs = {stance_sign(d.metadata["stance"], ["malignant"]) for d in tagged if k in d.metadata["concepts"]}
        assert {1, -1} <= signs, k
