"""Bank schema: round trip, validation errors that name the field, refusal of empty banks."""

from __future__ import annotations

import json

import pytest

from medcbm.concepts.schema import (
    ClassAssociation,
    ClassSpec,
    Concept,
    ConceptBank,
    GenerationConfig,
    GeneratorInfo,
    Provenance,
    default_bank_path,
    load_bank,
    save_bank,
)
from medcbm.errors import DataError


def _bank(n: int = 2) -> ConceptBank:
    classes = [ClassSpec(key="mel", name="melanoma"), ClassSpec(key="nv", name="melanocytic nevus", synonyms=["nevus"])]
    concepts = [Concept(
        id=f"c{i}", name=f"finding {i}", question=f"Is there finding {i}?", modality="dermoscopy",
        provenance=Provenance(query="melanoma dermoscopy", doc_id="d1", reference="Melanoma shows finding.",
                              store="runs/kb", corpus_hash="abc"),
        generator=GeneratorInfo(backend="extractive", model="v1", prompt_hash="h"),
        classes=[ClassAssociation(class_key="mel", prior=1), ClassAssociation(class_key="nv", prior=-1)],
    ) for i in range(n)]
    return ConceptBank(modality="dermoscopy", classes=classes, concepts=concepts,
                       config=GenerationConfig(classes=classes, modality="dermoscopy"))


def test_round_trip_and_prior_matrix(tmp_path):
    p = save_bank(_bank(), tmp_path / "bank.json")
    bank = load_bank(p)
    assert bank == _bank()
    assert bank.prior_matrix() == [[1, 1], [-1, -1]]
    assert json.loads(p.read_text())["schema_version"] == "1.0"


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["concepts"][0]["provenance"].pop("doc_id"), "concepts.0.provenance.doc_id"),
    (lambda d: d["concepts"][1].update(question="finding"), "concepts.1.question"),
    (lambda d: d.update(schema_version="9.9"), "schema_version"),
    (lambda d: d["concepts"][0]["classes"][0].update(prior=2), "concepts.0.classes.0.prior"),
    (lambda d: d["concepts"][0]["grounding"].update(status="annotation"), "concepts.0.grounding"),
])
def test_invalid_fields_are_named(tmp_path, mutate, field):
    d = _bank().model_dump(mode="json")
    mutate(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(DataError, match=f"field '{field}"):
        load_bank(p)


def test_unknown_class_duplicate_ids_empty_and_broken_files(tmp_path):
    d = _bank().model_dump(mode="json")
    d["concepts"][0]["classes"][0]["class_key"] = "bcc"
    (tmp_path / "a.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="unknown class 'bcc'"):
        load_bank(tmp_path / "a.json")
    d = _bank().model_dump(mode="json")
    d["concepts"][1]["id"] = "c0"
    (tmp_path / "b.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="duplicate concept ids: c0"):
        load_bank(tmp_path / "b.json")
    with pytest.raises(DataError, match="empty concept bank"):
        save_bank(_bank(0), tmp_path / "empty.json")
    assert not (tmp_path / "empty.json").exists()
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_bank(tmp_path / "c.json")
    with pytest.raises(DataError, match="not found"):
        load_bank(tmp_path / "missing.json")
    with pytest.raises(DataError, match="shipped: "):
        default_bank_path("ultrasound", "x")
