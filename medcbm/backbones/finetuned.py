"""Fine-tuned backbones as artifacts: saved as safetensors + JSON, resolved as ``finetuned:<name>``.

An artifact is a folder ``<store>/<name>/`` holding

- ``backbone.safetensors``: the full state dict of the base architecture (no classifier);
- ``concept_head.safetensors``: the concept head fine-tuning trained (kept for audit; grounding fits its
  own calibrated probes on the features);
- ``finetune.json``: base spec, config, data hashes per dataset and split, history, held-out AUROC, cost,
  and the content hashes of the images it trained on (so probes fitted later can leave them out).

The store is ``runs/finetuned`` under the working directory unless ``MEDCBM_FINETUNED_DIR`` says otherwise;
a name containing ``/`` is a folder path. Specs carry the weights' SHA-256, so features are cached by
content and a changed file is refused instead of silently mixing features.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from medcbm._io import atomic_write_bytes, atomic_write_json, json_safe, sha256_file
from medcbm.backbones._registry import BackboneSpec, get_backbone_spec, register_prefix
from medcbm.errors import MissingWeightsError

FORMAT = "medcbm-finetuned-backbone/1"
WEIGHTS, HEAD, RECORD = "backbone.safetensors", "concept_head.safetensors", "finetune.json"


def finetuned_store() -> Path:
    """Where named fine-tuned backbones live (``MEDCBM_FINETUNED_DIR``, default ``runs/finetuned``)."""
    return Path(os.environ.get("MEDCBM_FINETUNED_DIR", "runs/finetuned"))


def artifact_dir(name: str) -> Path:
    """The folder of ``finetuned:<name>`` (a name with a ``/`` is a path)."""
    return Path(name) if "/" in name or os.sep in name else finetuned_store() / name


def read_record(name: str) -> dict:
    """The artifact's ``finetune.json``.

    Raises:
        MissingWeightsError: no such artifact, or not one this version can read.
    """
    path = artifact_dir(name) / RECORD
    if not path.is_file():
        have = sorted(p.parent.name for p in finetuned_store().glob(f"*/{RECORD}"))
        raise MissingWeightsError(f"no fine-tuned backbone '{name}' ({path} is missing); run `medcbm finetune` "
                                  f"first (available: {', '.join(have) or 'none'})")
    record = json.loads(path.read_text())
    if record.get("format") != FORMAT:
        raise MissingWeightsError(f"{path}: format {record.get('format')!r} is not {FORMAT!r}")
    return record


@register_prefix("finetuned")
def _finetuned(name: str) -> BackboneSpec:
    """``finetuned:<name>``: a backbone written by ``medcbm finetune`` (base architecture, new weights)."""
    record = read_record(name)
    base = BackboneSpec.model_validate(record["base_spec"])
    return base.model_copy(update={
        "name": f"finetuned:{name}", "weights": f"finetuned:{name}", "weights_sha256": record["weights_sha256"],
        "description": f"{base.name} fine-tuned on concept labels ({', '.join(record['data'])})"})


def load_finetuned_weights(spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """The state dict behind ``spec.weights`` (``finetuned:<name>``), after checking its SHA-256."""
    from safetensors.torch import load_file

    path = artifact_dir(spec.weights.partition(":")[2]) / WEIGHTS
    if not path.is_file():
        raise MissingWeightsError(f"fine-tuned weights not found: {path}")
    if spec.weights_sha256 and sha256_file(path) != spec.weights_sha256:
        raise MissingWeightsError(f"{path} does not match the SHA-256 recorded for {spec.name}: the file changed "
                                  "after the features or model that refer to it were made; fine-tune again")
    return load_file(str(path))


def save_finetuned(out: str | os.PathLike, *, state_dict: dict[str, torch.Tensor], head: dict[str, torch.Tensor],
                   base: BackboneSpec, record: dict) -> Path:
    """Write an artifact folder atomically per file; returns it. ``record`` is completed with hashes."""
    from safetensors.torch import save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / WEIGHTS, save(state_dict))
    atomic_write_bytes(out / HEAD, save(head))
    full = {"format": FORMAT, **record, "base_spec": json.loads(base.model_dump_json()),
            "weights_sha256": sha256_file(out / WEIGHTS)}
    atomic_write_json(out / RECORD, json_safe(full))  # written last: a folder without it is not an artifact
    return out


def trained_image_hashes(backbone: str) -> set[str]:
    """Content hashes of the images a ``finetuned:`` backbone trained on (also inside ``ensemble:``/``tta:``)."""
    seen: set[str] = set()
    for spec in _weight_specs(get_backbone_spec(backbone)):
        if spec.weights.startswith("finetuned:"):
            seen.update(read_record(spec.weights.partition(":")[2]).get("trained_image_sha256", []))
    return seen


def _weight_specs(spec: BackboneSpec) -> list[BackboneSpec]:
    """The specs that hold weights under an ensemble or flip-averaging wrapper."""
    from medcbm.backbones.ensemble import PREFIX as ENSEMBLE, member_specs
    from medcbm.backbones.tta import PREFIX as TTA, inner_spec

    if spec.family == TTA:
        return _weight_specs(inner_spec(spec))
    if spec.family == ENSEMBLE:
        return [w for m in member_specs(spec) for w in _weight_specs(m)]
    return [spec]


def create_finetuned_backbone(*, datasets: tuple[str, ...] = ("ph2", "derm7pt"), manifests: tuple[str, ...] = (),
                              config=None, name: str | None = None, data_root=None, progress: bool = True,
                              force: bool = False) -> str:
    """Fine-tune on concept annotations and register the result; returns its backbone name ``finetuned:<name>``.

    The default name is content-addressed (base, config, and the hashes of every image and label), so a
    second call with the same inputs reuses the artifact instead of training again.

    Args:
        datasets: built-in concept-annotated datasets (``medcbm data list``).
        manifests: further manifest files with ``concept_<name>`` columns (a ``split`` column is honoured).
        config: a :class:`~medcbm.backbones.concept_finetune.FinetuneConfig` (default recipe when ``None``).
        name: artifact name in the store, or a folder path.
        data_root: where the built-in datasets live (default ``MEDCBM_DATA``).
        force: train again even when the artifact exists.
    """
    import logging

    from medcbm._io import sha256_text
    from medcbm.backbones.concept_finetune import FinetuneConfig, finetune_concepts
    from medcbm.backbones.finetune_data import load_concept_images
    from medcbm.data.concept_splits import TRAIN
    from medcbm.data.importers import import_dataset
    from medcbm.data.manifest import load_manifest

    config = config or FinetuneConfig()
    sources = {d: import_dataset(d, data_root) for d in datasets}
    sources.update({Path(m).stem: load_manifest(m).check_files() for m in manifests})
    images = load_concept_images(sources, min_positives=config.min_positives)
    data = images.data_summary()
    key = sha256_text(config.model_dump_json(), json.dumps(data, sort_keys=True), "|".join(images.names))[:10]
    name = name or f"{config.base}-concepts-{key}"
    out = artifact_dir(name)
    if not force and (out / RECORD).is_file() and read_record(name).get("key") == key:
        logging.getLogger(__name__).info("fine-tuned backbone %s is up to date (reused)", name)
        return f"finetuned:{name}"
    result = finetune_concepts(images, config, progress=progress)
    trained = sorted({images.image_sha256[i] for i in images.rows(TRAIN)})
    save_finetuned(out, state_dict=result.state_dict, head=result.head, base=result.spec, record={
        "name": name, "key": key, "config": json.loads(config.model_dump_json()), "concepts": result.concept_names,
        "data": data, "no_leakage": "held-out AUROC is scored on each dataset's heldout split only (Derm7pt: the "
        "official test split; others: a hash of the image id); HAM10000 diagnoses are never read",
        "trained_image_sha256": trained, **result.record})
    return f"finetuned:{name}"
