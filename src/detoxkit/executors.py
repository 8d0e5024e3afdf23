"""The Ray executor: planned batches drawn by a pool of Ray actors, stored by the one run store.

Each actor loads the run's model, methods, scorers and oracle once (`pipeline.Components`)
and draws whole planned batches, so the batch layout, and with it every sample, is the one a
local run draws. Rows come back to the driver, which alone writes the run directory: resume,
kill -9 and the one-writer lock work as for a local run. An actor that dies mid-batch is
restarted by Ray and its batch is drawn again; nothing it drew was stored, so nothing is
lost or duplicated.
"""

from __future__ import annotations

import logging
from typing import Iterator

from .backends import Request, check_requirements
from .errors import DetoxkitError

log = logging.getLogger(__name__)

IN_FLIGHT = 2  # batches queued per actor (Ray runs an actor's calls one at a time, in order)


class BatchWorker:
    """One actor: the run's parts, loaded once."""

    def __init__(self, cfg):
        import uuid

        from .pipeline import Components

        self.parts = Components.load(cfg)
        self.incarnation = uuid.uuid4().hex  # a restarted actor starts its counters afresh

    def draw(self, batch: list[Request], skip: set[tuple[str, int]]) -> tuple[list[dict], dict]:
        """The batch's rows, and this actor's counters so far (the method's and the backend's
        run_stats: the driver's own copies never generate)."""
        rows = self.parts.draw(batch, skip)
        return rows, {"incarnation": self.incarnation, "method": self.parts.method.run_stats(),
                      "backend": self.parts.backend.run_stats()}


def run_on_ray(cfg, batches: list[list[Request]],
               done: set[tuple[str, int]]) -> Iterator[tuple[list[dict], dict]]:
    """(rows, the actor's counters so far) of every batch, as the actors finish them."""
    check_requirements("ray executor", (("ray", "pip install ray"),))
    import ray
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

    started = not ray.is_initialized()
    if started:
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    worker_cls = ray.remote(num_cpus=_cpus_per_worker(ray, cfg.workers), num_gpus=cfg.worker_gpus,
                            max_restarts=-1, max_task_retries=0)(BatchWorker)
    try:
        workers = [worker_cls.remote(cfg) for _ in range(cfg.workers)]
        # each actor holds IN_FLIGHT batches: it starts the next while the driver stores the last
        queue, pending, idle = list(batches), {}, list(workers) * IN_FLIGHT
        while queue or pending:
            while queue and idle:
                worker, batch = idle.pop(0), queue.pop(0)
                skip = {(r.prompt_id, i) for r in batch for i in r.sample_indices} & done
                pending[worker.draw.remote(batch, skip)] = (worker, batch)
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            worker, batch = pending.pop(ref)
            try:
                rows, counters = ray.get(ref)
            except RayTaskError as exc:  # the batch itself failed (bad input, a method's error)
                cause = exc.as_instanceof_cause()
                raise (cause if isinstance(cause, DetoxkitError) else
                       DetoxkitError(f"a Ray worker failed: {cause}")) from None
            except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
                log.warning("a Ray worker died (%s); its batch is drawn again", type(exc).__name__)
                queue.insert(0, batch)
                idle.append(worker)  # Ray restarts it (max_restarts=-1)
                continue
            idle.append(worker)
            yield rows, counters
    finally:
        if started:
            ray.shutdown()


def _cpus_per_worker(ray, workers: int) -> int:
    """The cluster's CPUs shared out over the actors, at most one node's worth each (Ray sets an
    actor's thread count from its CPUs: one CPU each would leave cores idle)."""
    total = int(ray.cluster_resources().get("CPU", 1))
    largest = max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1)
    return max(1, min(largest, total // max(1, workers)))
