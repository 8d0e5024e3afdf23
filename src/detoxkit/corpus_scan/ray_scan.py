"""`detoxkit corpus scan --executor ray`: shards scored and written by Ray Data actors.

The driver reads the corpus (readers.py) and plans the shards as a local scan does; a window of
pending shards becomes a Ray Dataset of one row per shard, and `map_batches` runs ShardScorer,
a callable class Ray Data keeps in a pool of `--workers` actors, each of which loads the scorers
once, scores its shards with the same shards.score_docs a local scan calls (so the scores are
the same) and writes their Parquet files itself into the scan directory (on a cluster: a shared
filesystem or a mount of object storage that every node sees at the same path). The driver gets
back each shard's fingerprint and alone writes the manifest, so resume and kill -9 behave as
for a local scan: a shard an actor wrote but the manifest does not list is simply redone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..backends import check_requirements

log = logging.getLogger(__name__)

WINDOW_SHARDS = 256  # shards per Ray Dataset (actors load their scorers once per window)


class ShardScorer:
    """One Ray Data actor: the scorers, loaded once; scores and writes whole shards."""

    def __init__(self, specs: list[str], device: str, batch_size: int | None, units: str,
                 unit_size: int, out: str, language: bool = True, threads: int = 0):
        from ..scorers import load_scorer
        from .scan import set_threads

        set_threads(threads)  # else Ray's: the actor's CPUs

        self.specs, self.units, self.unit_size, self.out = specs, units, unit_size, Path(out)
        self.language = language
        self.scorers = [load_scorer(s, device, batch_size) for s in specs]
        self.infos = json.dumps([s.info() for s in self.scorers])

    def __call__(self, batch: dict) -> dict:
        from .shards import score_docs, write_shard

        names, entries = [], []
        for name, fi, docs in zip(batch["name"], batch["file"], batch["docs"]):
            table = score_docs(json.loads(docs), int(fi), self.scorers, self.specs, self.units,
                               self.unit_size, self.language)
            names.append(str(name))
            entries.append(json.dumps(write_shard(self.out, str(name), table)))
        return {"name": names, "entry": entries, "scorers": [self.infos] * len(names)}


class RayScorer:
    """The scan's sink for --executor ray: buffers shards, scores each window on Ray Data."""

    def __init__(self, config, out: Path):
        check_requirements("ray executor", (("ray", "pip install ray"),))
        import ray

        self.config, self.out = config, out.resolve()
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        from ..executors import _cpus_per_worker

        self.cpus = _cpus_per_worker(ray, config.workers)
        self.buffer: list[dict] = []
        self.window = int(config.extra.get("window_shards", WINDOW_SHARDS))

    def submit(self, name: str, file_index: int, shard_index: int, docs: list[dict]):
        self.buffer.append({"name": name, "file": file_index, "docs": json.dumps(docs, ensure_ascii=False)})
        if len(self.buffer) >= self.window:
            yield from self.flush()

    def flush(self):
        if not self.buffer:
            return
        import ray.data

        rows, self.buffer = self.buffer, []
        ray.data.DataContext.get_current().enable_progress_bars = False
        c = self.config
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            ShardScorer, batch_size=1, batch_format="numpy", concurrency=c.workers,
            num_cpus=self.cpus, fn_constructor_kwargs={
                "specs": list(c.scorers), "device": c.device, "batch_size": c.batch_size,
                "units": c.units, "unit_size": c.unit_size, "out": str(self.out),
                "language": c.language, "threads": c.threads})
        for row in ds.iter_rows():  # as the actors finish them: each is listed at once
            yield str(row["name"]), json.loads(row["entry"]), json.loads(row["scorers"])

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
