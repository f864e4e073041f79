"""Chunking on real HPO text: offsets, size bounds, tail merging, fragment dropping, dedup hashing."""

from __future__ import annotations

import itertools

import pytest

from medcbm.knowledge.chunking import chunk_text, text_hash
from medcbm.knowledge.resources import iter_hpo


@pytest.fixture(scope="module")
def hpo_long_text() -> str:
    # definitions of consecutive HPO terms joined into a multi-kilobyte document
    return " ".join(d.text for d in itertools.islice(iter_hpo(), 60))


def test_chunks_respect_bounds_and_offsets(hpo_long_text):
    chunks = chunk_text(hpo_long_text, max_chars=1000, min_chars=100)
    assert len(chunks) >= 3
    for start, end, text in chunks:
        assert hpo_long_text[start:end] == text
        assert 100 <= len(text) <= 1100  # a merged tail may add < min_chars
        assert text[-1] in ".!?)\"'" or end == len(hpo_long_text.rstrip())  # sentence-aware boundaries
    starts = [c[0] for c in chunks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_short_tail_merges_into_previous_chunk():
    body = "The lesion shows an atypical pigment network with irregular meshes. " * 14  # ~950 chars
    text = body + "Regression."
    chunks = chunk_text(text, max_chars=1000, min_chars=100)
    assert len(chunks) == 1 and chunks[0][2].endswith("Regression.")


def test_fragments_dropped_unless_whole_short_document_kept():
    assert chunk_text("Cardiomegaly.", min_chars=100) == []
    assert chunk_text("Cardiomegaly.", min_chars=100, keep_short_docs=True) == [(0, 13, "Cardiomegaly.")]


def test_overlong_sentence_split_at_words():
    text = " ".join(["consolidation"] * 300)  # one 4199-char "sentence"
    chunks = chunk_text(text, max_chars=1000, min_chars=100)
    assert all(len(c[2]) <= 1000 for c in chunks) and len(chunks) >= 4
    assert "".join(c[2] for c in chunks).replace(" ", "") == text.replace(" ", "")


def test_text_hash_ignores_case_and_whitespace():
    assert text_hash("No  acute\ncardiopulmonary abnormality.") == text_hash("no acute cardiopulmonary ABNORMALITY.")
    assert text_hash("Small left effusion.") != text_hash("Small right effusion.")


def test_bad_bounds_rejected():
    with pytest.raises(ValueError, match="max_chars"):
        chunk_text("x", max_chars=50, min_chars=100)
