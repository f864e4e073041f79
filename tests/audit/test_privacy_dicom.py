"""Real DICOMs carrying identifiers (pydicom-data) go through ``import-folder`` and ``medcbm audit``: no patient
name, patient id, birth date, accession number, institution, file name or path appears in any output or log line."""

from __future__ import annotations

import json
import logging
import re
import shutil

import pytest

FILES = ["CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm", "SC_rgb.dcm", "MR2_UNCI.dcm", "RG1_UNCI.dcm"]
HEADER_FIELDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                 "ReferringPhysicianName", "StudyID", "StationName", "InstitutionAddress")


def _strings(obj):
    """Every key and string value of a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def test_no_dicom_identifier_in_any_output(dicom_file, audit_model, feature_cache, tmp_path, caplog):
    import pydicom

    from medcbm.audit.report import write_audit_report
    from medcbm.data.importers.folder import import_folder

    folder = tmp_path / "hospital_export"
    identifiers = set()
    for i, name in enumerate(FILES):
        src = dicom_file(name)
        dst = folder / ("malignant" if i % 2 else "benign") / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        for f in HEADER_FIELDS:
            v = str(ds.get(f, "") or "").strip()
            if len(v) >= 4:
                identifiers |= {v, *[p for p in v.split("^") if len(p) >= 4]}
        identifiers |= {name, str(dst), str(dst.parent)}
    assert {"CompressedSamples^CT1", "1CT1", "JFK IMAGING CENTER", "19400305"} <= identifiers  # the files do carry them
    manifest = import_folder(folder, keep_identifiers=True)
    assert "JFK IMAGING CENTER" in set(manifest.frame["site"])  # the raw header reached the manifest (opt-in) ...
    with caplog.at_level(logging.DEBUG, logger="medcbm"):
        files = write_audit_report(audit_model, manifest, tmp_path / "audit", cache_dir=feature_cache, progress=False)
    report = json.loads(files["json"].read_text())
    assert report["data"]["n_scored"] == len(FILES) and report["data"]["thumbnails"] == "photographs"
    assert not any(c["has_thumbnail"] for c in report["cases"])  # DICOM thumbnails are opt-in
    # ... and nothing of it reaches the outputs. Pure numbers (dates, numeric ids) are checked against text,
    # not against chart coordinates and probabilities where any digit string can occur by chance.
    words = {s for s in identifiers if not s.isdigit()}
    numbers = identifiers - words
    html = files["html"].read_text()
    html_text = re.sub(r"<svg.*?</svg>", "", html, flags=re.S)
    outputs = {"html": html, "model card": files["model_card"].read_text(), "json": files["json"].read_text(),
               "log": caplog.text}
    for kind, text in outputs.items():
        # whole words: a header value "WARD" must not leak, but "towards" in a cited passage is not it
        leaked = [s for s in words if re.search(rf"(?<![a-z0-9]){re.escape(s.lower())}(?![a-z0-9])", text.lower())]
        assert not leaked, f"{kind} leaks {leaked}"
    json_strings = " ".join(_strings(report))
    for kind, text in {"html text": html_text, "json strings": json_strings, "model card": outputs["model card"],
                       "log": caplog.text}.items():
        leaked = [s for s in numbers if s in text]
        assert not leaked, f"{kind} leaks {leaked}"


def test_import_folder_pseudonymises_patient_and_institution_by_default(dicom_file, tmp_path):
    """The CLI as a user runs it: the manifest file and the console hold keyed hashes, not the header values."""
    import subprocess
    import sys

    import pydicom

    folder = tmp_path / "export"
    values = set()
    for i, name in enumerate(FILES):
        dst = folder / ("a" if i % 2 else "b") / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(dicom_file(name), dst)
        ds = pydicom.dcmread(dst, stop_before_pixels=True)
        values |= {str(ds.get(f, "")).strip() for f in ("PatientID", "InstitutionName", "PatientName")} - {""}
    assert "JFK IMAGING CENTER" in values

    def run(*extra):
        out = tmp_path / f"m{len(extra)}.csv"
        r = subprocess.run([sys.executable, "-m", "medcbm.cli", "data", "import-folder", folder, "-o", out, *extra],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return out.read_text() + r.stdout + r.stderr

    text = run()
    assert not [v for v in values if v in text], "identifiers leaked"
    assert "pt-" in text and "site-" in text
    again = run("--keep-identifiers")
    assert "JFK IMAGING CENTER" in again  # the opt-in keeps them
    # the same key gives the same pseudonyms: a patient's images stay together across imports
    assert run() == text


def test_a_dermoscopy_model_flags_ct_mr_us_and_sc_images(dicom_file, audit_model, feature_cache, tmp_path, caplog):
    """Real CT, MR, ultrasound, CR and RGB secondary-capture files through a dermoscopy model: predicted, but each
    flagged out of scope with its modality, and one loud word in the log."""
    import pydicom

    from medcbm.data.importers.folder import import_folder
    from medcbm.workflows.train import predict_cbm

    folder = tmp_path / "export"
    for name in FILES:
        (folder / "x").mkdir(parents=True, exist_ok=True)
        shutil.copy(dicom_file(name), folder / "x" / name)
    modalities = [str(pydicom.dcmread(dicom_file(n), stop_before_pixels=True).Modality) for n in FILES]
    assert {"CT", "MR", "US", "OT"} <= set(modalities)  # OT: the RGB secondary capture
    with caplog.at_level(logging.WARNING, logger="medcbm"):
        manifest = import_folder(folder)
        out = predict_cbm(audit_model, manifest, cache_dir=feature_cache, progress=False)
    assert len(out) == len(FILES) and not out["in_scope"].any()
    warned = [r.getMessage() for r in caplog.records if "outside the model's scope" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"{len(FILES)} of {len(FILES)} images")
    assert f"a modality the model was not built for: {len(FILES)}" in warned[0]
    # each row names its own modality (the CSV, not the shared log)
    for reason, m in zip(out["scope_reason"], manifest.frame["modality"]):
        assert f"DICOM modality {m}, not a dermoscopy image" in reason
    assert str(folder) not in caplog.text  # no path in the log line
