"""`detoxkit corpus scan --executor ray` on a real local Ray cluster: Ray Data actors score the
same shards to the same scores as a local scan, and a Ray scan resumes a local one."""

from __future__ import annotations

import pytest

from corpus_fixtures import rtp_records, write_jsonl
from detoxkit.corpus_scan.scan import ScanConfig, run_scan
from detoxkit.corpus_scan.shards import SHARDS, load_table, read_manifest

pytestmark = [pytest.mark.requires_ray, pytest.mark.slow]

SCORERS = ["profanity-svm", "detoxkit-minilm"]


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module (a scan leaves a cluster it did not start running)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_scan_equals_the_local_scan_and_resumes_it(tmp_path, cluster):
    path = write_jsonl(tmp_path / "c.jsonl", rtp_records(36))
    # one torch thread in this process and in every actor: a neural scorer's last digits depend
    # on the thread count (3 of 2,396 RTP documents differed at 1e-9 between 2 threads and 1)
    cfg = dict(inputs=[str(path)], scorers=SCORERS, shard_docs=6, units="sentences", threads=1)
    local = run_scan(ScanConfig(out=str(tmp_path / "local"), **cfg))
    ray_dir = run_scan(ScanConfig(out=str(tmp_path / "ray"), executor="ray", workers=2, **cfg))
    reference = load_table(local)
    assert reference.num_rows == 36 and load_table(ray_dir).equals(reference)
    assert read_manifest(ray_dir)["scorers"] == read_manifest(local)["scorers"]
    # a local scan with shards missing is finished by a Ray scan, to the same table
    for name in sorted(read_manifest(local)["shards"])[2:4]:
        (local / SHARDS / name).unlink()
    run_scan(ScanConfig(out=str(local), executor="ray", workers=1, **cfg))
    assert load_table(local).equals(reference)
