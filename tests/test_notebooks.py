"""The notebooks in notebooks/ run top to bottom on real data, in order, as a new user would run them."""

import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_three_notebooks_and_git_holds_them_without_outputs():
    import nbformat

    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03"]
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), f"{p.name}: strip outputs"
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def _outputs(nb) -> str:
    """All text a reader would see under the cells."""
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            out.append(o.get("text", "") + json.dumps(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


@pytest.fixture(scope="module")
def executed(tmp_path_factory, data_root, feature_cache):
    """Each notebook executed in a fresh kernel, in order, sharing one work folder (notebook 3 reuses 2's model)."""
    import nbformat
    from nbclient import NotebookClient

    work = tmp_path_factory.mktemp("notebooks")
    env = {"MEDCBM_DATA": str(data_root), "MEDCBM_CACHE": str(feature_cache), "MEDCBM_NOTEBOOK_DIR": str(work),
           "MEDCBM_NOTEBOOK_N": "40", "HF_HUB_OFFLINE": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment
    try:
        done = {}
        for p in NOTEBOOKS:
            nb = nbformat.read(p, as_version=4)
            NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
            done[p.name[:2]] = nb
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return work, done


def test_notebook_1_trains_on_a_folder_and_imports_dicoms(executed):
    work, nbs = executed
    text = _outputs(nbs["01"])
    meta = json.loads((work / "01_train" / "model" / "model.json").read_text())
    assert meta["classes"] == ["benign", "malignant"] and len(meta["concepts"]) >= 20
    assert "held-out test: accuracy" in text and "features: (3, 1280)" in text
    # the DICOM table shows non-identifying columns only
    assert "modality" in text and "patient_id" not in text and "Institution" not in text


def test_notebook_2_adapts_and_scores_on_unseen_images(executed):
    work, nbs = executed
    text = _outputs(nbs["02"])
    assert "'support': 8" in text and "base model" in text and "adapted" in text and "estimated gain" in text
    assert "gain in balanced accuracy on the query" in text and "95 % interval" in text
    doc = json.loads((work / "02_adapt" / "model" / "adaptations" / "new-clinic" / "adaptation.json").read_text())
    assert doc["adapter"] == "site" and doc["support"]["n_unlabelled"] > 0
    verdict = json.loads((work / "02_adapt" / "acceptance" / "acceptance.json").read_text())["verdict"]
    assert verdict in ("ready", "adapt and re-check", "do not deploy") and verdict in text


def test_notebook_3_explains_intervenes_and_writes_the_report(executed):
    work, nbs = executed
    text = _outputs(nbs["03"])
    assert "predicted malignant" in text and "= 0" in text and "= 1" in text and "\u2014 " in text  # a citation
    report = json.loads((work / "03_audit" / "audit" / "audit.json").read_text())
    assert len(report["cases"]) == 4 and (work / "03_audit" / "audit" / "audit.html").stat().st_size > 10_000
