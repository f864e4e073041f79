"""The archive cost model: arithmetic contracts (the calibration itself is measured by `medcbm bench scale`)."""

from medcbm.benchmarks.cost_model import Calibration, Cluster, Workload, estimate

CAL = Calibration(jpeg_mb=0.25, dicom_mb=8.0, hash_mb_s=500.0, jpeg_decode_s=0.004, dicom_decode_s=0.05,
                  model_s=0.03, embed_s=0.02, insert_s=0.002, worker_start_s=20.0, worker_rss_mb=800.0,
                  embed_worker_rss_mb=600.0, feature_bytes=5270.0, chunk_bytes=4000.0)
JPEG = Workload(name="1M JPEGs", kind="jpeg", count=1_000_000)


def test_more_workers_cost_less_wall_time_until_storage_is_the_bottleneck():
    walls = [estimate(CAL, JPEG, Cluster(workers=n)).wall_hours for n in (1, 4, 16)]
    assert walls[0] > walls[1] > walls[2]
    assert estimate(CAL, JPEG, Cluster(workers=1)).bottleneck == "model"
    starved = estimate(CAL, JPEG, Cluster(workers=256, storage_mb_s=50.0))
    assert starved.bottleneck == "storage bandwidth"
    # 250 GB read twice (hash pass + extraction pass) at 50 MB/s, plus the worker start
    assert abs(starved.wall_hours - (2 * 250_000 / 50 + 20) / 3600) < 1e-6


def test_dicom_decode_and_text_insert_bottlenecks_are_named():
    assert estimate(CAL, Workload(name="d", kind="dicom", count=10), Cluster(workers=64, storage_mb_s=1e6)).bottleneck == "decode"
    text = Workload(name="t", kind="text", count=10_000_000)
    assert estimate(CAL, text, Cluster(workers=1)).bottleneck == "embedding"
    many = estimate(CAL, text, Cluster(workers=64, store_servers=1))
    assert many.bottleneck == "insert" and abs(many.wall_hours - (10_000_000 * 0.002 + 20) / 3600) < 1e-6
    assert many.disk_gb == 40.0
