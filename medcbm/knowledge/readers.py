"""File readers: turn txt/md, MedRAG JSONL, PubMed XML, PMC JATS XML and PDF files into :class:`Document` s.

Every reader reports bad input through ``on_bad(DataError)``: the strict caller raises it, a ``skip_bad``
caller records it and carries on with the next row or file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

from medcbm.errors import DataError
from medcbm.knowledge.passage import Document
from medcbm.knowledge.stance import parse_annotation

logger = logging.getLogger(__name__)

OnBad = Callable[[DataError], None]
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text")
SUPPORTED_SUFFIXES = (*TEXT_SUFFIXES, ".jsonl", ".xml", ".nxml", ".pdf")
#: Files larger than this are refused (a knowledge file that big is almost certainly the wrong file).
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
_WS = re.compile(r"[ \t\r\f\v]+")


def _clean(text: str | None) -> str:
    return _WS.sub(" ", text or "").strip()


def _raise(err: DataError) -> None:
    raise err


def check_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """Refuse missing, empty and oversized files; return the size in bytes."""
    if not path.is_file():
        raise DataError("no such file", path=str(path))
    size = path.stat().st_size
    if size == 0:
        raise DataError("file is empty", path=str(path))
    if size > max_bytes:
        raise DataError(
            f"file is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit (raise max_bytes if intended)",
            path=str(path),
        )
    return size


def read_text_file(path: Path) -> str:
    """Read UTF-8 text, refusing binary content and other encodings with a clear message."""
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise DataError("file looks binary (NUL bytes), expected UTF-8 text", path=str(path))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 at byte {exc.start} (re-encode the file as UTF-8)", path=str(path)) from None
    if not text.strip():
        raise DataError("file has no text", path=str(path))
    return text


def read_plain(path: Path, *, source: str, on_bad: OnBad = _raise) -> Iterator[Document]:
    """A .txt/.md file is one document; Markdown headings become sections and the first one the title."""
    text = read_text_file(path)
    sections = tuple((m.start(), m.group(2).strip()) for m in re.finditer(r"^(#{1,6})\s+(.+)$", text, re.M))
    title = sections[0][1] if sections else path.stem
    yield Document(doc_id=path.stem, text=text, title=title, source=source, path=str(path), sections=sections)


_JSONL_CORE = {"id", "title", "contents", "source", "license", "modality", "section"}


def read_jsonl(path: Path, *, source: str, on_bad: OnBad = _raise) -> Iterator[Document]:
    """MedRAG JSONL (``{"id","title","contents"}`` per line); extra fields are kept as metadata.

    ``concepts`` / ``stance`` / ``qualifier``, when a row has them, are validated
    (:class:`~medcbm.knowledge.stance.PassageAnnotation`).
    """
    text = read_text_file(path)
    seen: set[str] = set()
    for row, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            on_bad(DataError(f"malformed JSON ({exc.msg} at column {exc.colno})", path=str(path), row=row))
            continue
        if not isinstance(obj, dict):
            on_bad(DataError("line is not a JSON object", path=str(path), row=row))
            continue
        missing = [k for k in ("id", "contents") if not isinstance(obj.get(k), str) or not obj[k].strip()]
        if missing:
            on_bad(DataError("missing or empty required field", path=str(path), row=row, field=missing[0]))
            continue
        if obj["id"] in seen:
            on_bad(DataError(f"duplicate id {obj['id']!r}", path=str(path), row=row, field="id"))
            continue
        _, msg, bad_field = parse_annotation(obj)
        if msg:
            on_bad(DataError(f"invalid {bad_field}: {msg}", path=str(path), row=row, field=bad_field))
            continue
        seen.add(obj["id"])
        extra = {k: v for k, v in obj.items() if k not in _JSONL_CORE and v is not None}
        yield Document(
            doc_id=obj["id"],
            text=obj["contents"],
            title=str(obj.get("title") or ""),
            source=str(obj.get("source") or source),
            license=str(obj.get("license") or "unknown"),
            modality=str(obj.get("modality") or ""),
            section=str(obj.get("section") or ""),
            path=str(path),
            metadata=extra,
        )


def _itertext(el: ET.Element | None) -> str:
    return _clean(" ".join(el.itertext())) if el is not None else ""


def _join_sections(parts: list[tuple[str, str]]) -> tuple[str, tuple[tuple[int, str], ...]]:
    """Join ``(label, text)`` parts into one text with a blank line between parts; return section starts."""
    text, sections = "", []
    for label, body in parts:
        if not body:
            continue
        if text:
            text += "\n\n"
        sections.append((len(text), label))
        text += body
    return text, tuple(sections)


def _parse_xml(path: Path) -> ET.Element:
    read_text_file(path)  # same binary / encoding checks as text files
    try:
        # ElementTree does not fetch external entities; expat bounds entity expansion.
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"malformed XML ({exc})", path=str(path)) from None


def _pubmed_articles(root: ET.Element, path: Path, source: str, on_bad: OnBad) -> Iterator[Document]:
    articles = [root] if root.tag == "PubmedArticle" else root.findall(".//PubmedArticle")
    for i, art in enumerate(articles, start=1):
        pmid = _itertext(art.find(".//MedlineCitation/PMID"))
        if not pmid:
            on_bad(DataError(f"PubmedArticle #{i} has no PMID", path=str(path), row=i, field="PMID"))
            continue
        title = _itertext(art.find(".//Article/ArticleTitle"))
        parts = []
        for ab in art.findall(".//Article/Abstract/AbstractText"):
            label = ab.get("Label") or ab.get("NlmCategory") or "Abstract"
            parts.append((label, _itertext(ab)))
        body, sections = _join_sections(parts)
        if not body:
            on_bad(DataError(f"PMID {pmid} has no AbstractText", path=str(path), row=i, field="AbstractText"))
            continue
        if not title:
            on_bad(DataError(f"PMID {pmid} has no ArticleTitle", path=str(path), row=i, field="ArticleTitle"))
            continue
        yield Document(
            doc_id=f"PMID:{pmid}", text=body, title=title, source=source, path=str(path),
            sections=sections, metadata={"reference": f"PMID:{pmid}"},
        )


def _jats_sections(sec: ET.Element, prefix: str) -> list[tuple[str, str]]:
    title = _itertext(sec.find("title"))
    label = f"{prefix} / {title}" if prefix and title else (title or prefix or "Body")
    paras = " ".join(_itertext(p) for p in sec.findall("p"))
    out = [(label, paras)]
    for sub in sec.findall("sec"):
        out.extend(_jats_sections(sub, label))
    return out


def _jats_article(root: ET.Element, path: Path, source: str, on_bad: OnBad) -> Iterator[Document]:
    meta = root.find("front/article-meta")
    if meta is None:
        on_bad(DataError("JATS article has no front/article-meta", path=str(path), field="article-meta"))
        return
    ids = {e.get("pub-id-type"): _itertext(e) for e in meta.findall("article-id")}
    ident = (f"PMC{ids['pmc'].removeprefix('PMC')}" if ids.get("pmc") else None) or (
        f"PMID:{ids['pmid']}" if ids.get("pmid") else None) or ids.get("doi")
    if not ident:
        on_bad(DataError("JATS article has no article-id (pmc, pmid or doi)", path=str(path), field="article-id"))
        return
    title = _itertext(meta.find("title-group/article-title"))
    lic = meta.find("permissions/license")
    licence = "unknown"
    if lic is not None:
        licence = next((v for k, v in lic.attrib.items() if k.endswith("href")), "") or _itertext(lic) or "unknown"
    parts: list[tuple[str, str]] = [("Abstract", _itertext(meta.find("abstract")))]
    body = root.find("body")
    if body is not None:
        loose = " ".join(_itertext(p) for p in body.findall("p"))
        parts.append(("Body", loose))
        for sec in body.findall("sec"):
            parts.extend(_jats_sections(sec, ""))
    text, sections = _join_sections(parts)
    if not text:
        on_bad(DataError(f"JATS article {ident} has no abstract or body text", path=str(path), field="body"))
        return
    yield Document(
        doc_id=ident, text=text, title=title or ident, source=source, license=licence, path=str(path),
        sections=sections, metadata={"reference": ident},
    )


def read_xml(path: Path, *, source: str, on_bad: OnBad = _raise) -> Iterator[Document]:
    """PubMed/MEDLINE XML (``PubmedArticleSet``) or a PMC Open Access JATS ``article``."""
    root = _parse_xml(path)
    if root.tag in ("PubmedArticleSet", "PubmedArticle"):
        yield from _pubmed_articles(root, path, source, on_bad)
    elif root.tag == "article":
        yield from _jats_article(root, path, source, on_bad)
    else:
        raise DataError(f"unrecognised XML root <{root.tag}> (expected PubmedArticleSet or JATS <article>)", path=str(path))


def read_pdf(path: Path, *, source: str, on_bad: OnBad = _raise) -> Iterator[Document]:
    """A PDF (e.g. a textbook) is one document; each page is a section ``page N``."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise DataError("PDF is encrypted", path=str(path))
        pages = [(f"page {i}", _clean(p.extract_text() or "")) for i, p in enumerate(reader.pages, start=1)]
        info_title = _clean(str((reader.metadata or {}).get("/Title") or ""))
    except DataError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DataError(f"unreadable PDF ({type(exc).__name__}: {exc})", path=str(path)) from None
    text, sections = _join_sections(pages)
    if not text:
        raise DataError("PDF has no extractable text (scanned images need OCR first)", path=str(path))
    yield Document(doc_id=path.stem, text=text, title=info_title or path.stem, source=source, path=str(path),
                   sections=sections)


def read_file(path: str | os.PathLike, *, source: str | None = None, on_bad: OnBad = _raise,
              max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[Document]:
    """Read one file of any supported format into documents.

    Args:
        path: the file.
        source: corpus name recorded on every chunk (default: the file stem; JSONL rows may set their own).
        on_bad: called with a :class:`DataError` for each bad row or article (default: raise).
        max_bytes: refuse larger files.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"unsupported file type {suffix or '(none)'}; supported: {', '.join(SUPPORTED_SUFFIXES)}",
                        path=str(path))
    check_file(path, max_bytes)
    src = source or path.stem
    if suffix in TEXT_SUFFIXES:
        return read_plain(path, source=src, on_bad=on_bad)
    if suffix == ".jsonl":
        return read_jsonl(path, source=src, on_bad=on_bad)
    if suffix == ".pdf":
        return read_pdf(path, source=src, on_bad=on_bad)
    return read_xml(path, source=src, on_bad=on_bad)


def expand_paths(paths: list[str | os.PathLike]) -> list[Path]:
    """Files named directly plus supported files found (recursively, sorted) under named folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES
                           and not f.name.startswith("."))
            if not found:
                logger.warning("no supported files under %s", p)
            out.extend(found)
        else:
            out.append(p)
    return out
