"""Readers on real formats (PubMed XML, JATS, PDF, MedRAG JSONL) and real bad-input files."""

from __future__ import annotations

import json
import zlib

import pytest

from medcbm.errors import DataError
from medcbm.knowledge.readers import expand_paths, read_file
from medcbm.knowledge.resources import iter_hpo, iter_openi

PUBMED = """<?xml version="1.0"?>
<PubmedArticleSet>
 <PubmedArticle><MedlineCitation><PMID>8757449</PMID><Article>
  <ArticleTitle>Dermoscopy of pigmented skin lesions.</ArticleTitle>
  <Abstract>
   <AbstractText Label="BACKGROUND">Dermoscopy improves the diagnosis of melanoma compared with the naked eye.</AbstractText>
   <AbstractText Label="RESULTS">A blue-whitish veil and an atypical network were the features most associated with melanoma.</AbstractText>
  </Abstract></Article></MedlineCitation></PubmedArticle>
 <PubmedArticle><MedlineCitation><Article><ArticleTitle>No identifier here</ArticleTitle>
  <Abstract><AbstractText>Text without a PMID.</AbstractText></Abstract></Article></MedlineCitation></PubmedArticle>
</PubmedArticleSet>
"""

JATS = """<?xml version="1.0"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>
 <article-id pub-id-type="pmc">1234567</article-id>
 <title-group><article-title>Chest radiograph patterns of COVID-19 pneumonia</article-title></title-group>
 <permissions><license xlink:href="https://creativecommons.org/licenses/by/4.0/"><license-p>CC BY</license-p></license></permissions>
 <abstract><p>Bilateral peripheral opacities predominate.</p></abstract>
</article-meta></front>
<body>
 <sec><title>Methods</title><p>We reviewed frontal radiographs of adults with confirmed infection.</p></sec>
 <sec><title>Results</title><p>Ground-glass opacity was most frequent in the lower zones.</p>
  <sec><title>Follow-up</title><p>Consolidation increased in the second week.</p></sec></sec>
</body></article>
"""


def make_pdf(lines: list[str]) -> bytes:
    """A minimal valid one-page PDF with Helvetica text (built by hand so no PDF writer is needed)."""
    ops = "BT /F1 11 Tf 50 750 Td 14 TL " + " ".join(f"({ln}) '" for ln in lines) + " ET"
    stream = zlib.compress(ops.encode("latin-1"))
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def test_pubmed_labelled_sections_and_missing_pmid(tmp_path):
    p = tmp_path / "pubmed.xml"
    p.write_text(PUBMED)
    with pytest.raises(DataError, match=r"no PMID.*pubmed.xml.*PMID"):
        list(read_file(p))
    bad: list[DataError] = []
    docs = list(read_file(p, on_bad=bad.append))
    assert [d.doc_id for d in docs] == ["PMID:8757449"] and len(bad) == 1
    d = docs[0]
    assert d.title.startswith("Dermoscopy") and d.source == "pubmed"
    assert [s[1] for s in d.sections] == ["BACKGROUND", "RESULTS"]
    assert d.section_at(d.text.index("blue-whitish")) == "RESULTS"


def test_jats_body_sections_and_licence(tmp_path):
    p = tmp_path / "PMC1234567.nxml"
    p.write_text(JATS)
    (d,) = read_file(p)
    assert d.doc_id == "PMC1234567" and d.license == "https://creativecommons.org/licenses/by/4.0/"
    labels = [s[1] for s in d.sections]
    assert labels == ["Abstract", "Methods", "Results", "Results / Follow-up"]
    assert d.section_at(d.text.index("Consolidation increased")) == "Results / Follow-up"


def test_jats_without_ids_is_named_error(tmp_path):
    p = tmp_path / "noid.xml"
    p.write_text(JATS.replace('<article-id pub-id-type="pmc">1234567</article-id>', ""))
    with pytest.raises(DataError, match="article-id"):
        list(read_file(p))


def test_pdf_text_and_pages(tmp_path):
    p = tmp_path / "textbook.pdf"
    p.write_bytes(make_pdf(["Dermatofibroma shows a central white scar-like patch.",
                            "A delicate peripheral pigment network surrounds it."]))
    (d,) = read_file(p)
    assert "central white scar-like patch" in d.text and d.sections == ((0, "page 1"),)


def test_markdown_title_and_sections(tmp_path):
    p = tmp_path / "notes.md"
    p.write_text("# Pneumothorax\n\nA visceral pleural line with absent lung markings beyond it.\n\n## Supine films\n\nLook for a deep sulcus sign.\n")
    (d,) = read_file(p, source="notes")
    assert d.title == "Pneumothorax" and [s[1] for s in d.sections] == ["Pneumothorax", "Supine films"]


def test_jsonl_rows_extra_fields_and_bad_rows(tmp_path):
    p = tmp_path / "c.jsonl"
    rows = [json.dumps({"id": "a1", "title": "Veil", "contents": "Blue-whitish veil over a raised area.",
                        "reference": "PMID:1", "modality": "dermoscopy", "topic": "melanoma"}),
            "{not json", json.dumps({"id": "a2", "title": "x"}), json.dumps({"id": "a1", "contents": "dup"})]
    p.write_text("\n".join(rows) + "\n")
    bad: list[DataError] = []
    docs = list(read_file(p, on_bad=bad.append))
    assert [d.doc_id for d in docs] == ["a1"] and docs[0].metadata == {"reference": "PMID:1", "topic": "melanoma"}
    assert docs[0].modality == "dermoscopy"
    msgs = [str(e) for e in bad]
    assert "row 2" in msgs[0] and "malformed JSON" in msgs[0]
    assert "'contents'" in msgs[1] and "row 3" in msgs[1] and "duplicate id" in msgs[2]


@pytest.mark.parametrize("name,content,match", [
    ("empty.txt", b"", "empty"),
    ("blob.txt", bytes(range(256)) * 4, "binary"),
    ("latin1.md", "Naevus caf\xe9-au-lait".encode("latin-1"), "not valid UTF-8 at byte"),
    ("broken.xml", b"<PubmedArticleSet><PubmedArticle>", "malformed XML"),
    ("other.xml", b"<rss><channel/></rss>", "unrecognised XML root"),
    ("corrupt.pdf", b"%PDF-1.4\nthis is not really a pdf\n", "unreadable PDF|no extractable text"),
    ("table.csv", b"a,b\n1,2\n", "unsupported file type"),
])
def test_bad_files_get_named_errors(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DataError, match=match) as exc:
        list(read_file(p))
    assert name in str(exc.value)


def test_oversized_file_refused(tmp_path):
    p = tmp_path / "huge.txt"
    p.write_text("Cardiomegaly is an enlarged cardiac silhouette. " * 100)
    with pytest.raises(DataError, match="over the .* limit"):
        list(read_file(p, max_bytes=1024))


def test_expand_paths_finds_supported_files(tmp_path):
    (tmp_path / "sub").mkdir()
    for n in ("a.txt", "sub/b.jsonl", "c.png", ".hidden.md"):
        (tmp_path / n).write_text("x")
    assert [p.name for p in expand_paths([tmp_path])] == ["a.txt", "b.jsonl"]


def test_bundled_hpo_and_openi():
    hpo = {d.doc_id: d for d in iter_hpo()}
    assert len(hpo) > 15000
    card = hpo["HP:0001640"]
    assert card.title == "Cardiomegaly" and "heart" in card.text.lower() and card.source == "hpo"
    reports = list(iter_openi(limit=20))
    assert len(reports) == 20 and all(r.doc_id.startswith("openi-") for r in reports)
    assert all(r.modality == "chest_xray" and r.license == "CC BY-NC-ND 4.0" for r in reports)
    assert {s[1] for r in reports for s in r.sections} <= {"FINDINGS", "IMPRESSION"}
