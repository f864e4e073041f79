"""A cost model for a hospital archive: wall time, CPU-hours, RAM and disk, and the bottleneck, on N workers.

Pure arithmetic over a :class:`Calibration` measured on this machine by ``medcbm bench scale`` (per-core
rates of hashing, decoding, the backbone, the text embedder and store inserts). It follows how the engines
work: a hashing pass and an extraction pass each read every file once (a rerun with unchanged files skips the
hashing read); inside a Ray worker, decoding is single-threaded and the model uses the worker's CPUs; text is
embedded on the workers and inserted through one writer per Chroma server.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Calibration(BaseModel):
    """Per-core costs measured on one machine (seconds per item unless named otherwise)."""

    jpeg_mb: float
    dicom_mb: float
    hash_mb_s: float = Field(description="SHA-256 throughput of one core, MB/s")
    jpeg_decode_s: float
    dicom_decode_s: float
    model_s: float = Field(description="backbone forward per image on one core")
    embed_s: float = Field(description="text embedder per chunk on one core")
    insert_s: float = Field(description="store insert per chunk through one writer")
    worker_start_s: float
    worker_rss_mb: float
    embed_worker_rss_mb: float
    feature_bytes: float = Field(description="cache bytes per image (features, shard header, index)")
    chunk_bytes: float = Field(description="store bytes per chunk on disk")


class Workload(BaseModel):
    name: str
    kind: str  # "jpeg", "dicom" or "text"
    count: int


class Cluster(BaseModel):
    workers: int
    cpus_per_worker: float = 1.0
    storage_mb_s: float = Field(1000.0, description="aggregate read bandwidth of the shared storage (assumed)")
    store_servers: int = 1


class Estimate(BaseModel):
    workload: str
    workers: int
    wall_hours: float
    cpu_hours: float
    ram_gb: float
    disk_gb: float
    bottleneck: str
    stages_hours: dict[str, float]


def _images(cal: Calibration, w: Workload, c: Cluster) -> Estimate:
    mb = cal.jpeg_mb if w.kind == "jpeg" else cal.dicom_mb
    decode = cal.jpeg_decode_s if w.kind == "jpeg" else cal.dicom_decode_s
    cores = c.workers * c.cpus_per_worker
    read_s = w.count * mb / c.storage_mb_s  # one pass over the archive
    hash_s = max(read_s, w.count * mb / cal.hash_mb_s / cores)
    per_worker_img_s = 1.0 / (decode + cal.model_s / c.cpus_per_worker)  # decode is serial inside a worker
    stages = {"storage bandwidth": read_s, "decode": w.count * decode / c.workers,
              "model": w.count * cal.model_s / cores}
    extract_s = max(read_s, w.count / (c.workers * per_worker_img_s))
    wall = cal.worker_start_s + hash_s + extract_s
    bottleneck = max(stages, key=stages.get)
    driver_gb = w.count * (cal.feature_bytes + 200) / 1e9  # the returned feature matrix and the key index
    return Estimate(workload=w.name, workers=c.workers, wall_hours=wall / 3600, cpu_hours=wall * cores / 3600,
                    ram_gb=c.workers * cal.worker_rss_mb / 1024 + driver_gb, disk_gb=w.count * cal.feature_bytes / 1e9,
                    bottleneck=bottleneck, stages_hours={"hash": hash_s / 3600, **{k: v / 3600 for k, v in stages.items()}})


def _text(cal: Calibration, w: Workload, c: Cluster) -> Estimate:
    cores = c.workers * c.cpus_per_worker
    stages = {"embedding": w.count * cal.embed_s / cores, "insert": w.count * cal.insert_s / c.store_servers}
    wall = cal.worker_start_s + max(stages.values())  # embedding and inserting overlap
    return Estimate(workload=w.name, workers=c.workers, wall_hours=wall / 3600, cpu_hours=wall * cores / 3600,
                    ram_gb=c.workers * cal.embed_worker_rss_mb / 1024, disk_gb=w.count * cal.chunk_bytes / 1e9,
                    bottleneck=max(stages, key=stages.get), stages_hours={k: v / 3600 for k, v in stages.items()})


def estimate(cal: Calibration, workload: Workload, cluster: Cluster) -> Estimate:
    """Cost of ``workload`` on ``cluster`` under the calibration's per-core rates."""
    return _text(cal, workload, cluster) if workload.kind == "text" else _images(cal, workload, cluster)


DEFAULT_WORKLOADS = [Workload(name="1M JPEGs", kind="jpeg", count=1_000_000),
                     Workload(name="1M DICOMs", kind="dicom", count=1_000_000),
                     Workload(name="10M text chunks", kind="text", count=10_000_000)]
