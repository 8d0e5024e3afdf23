"""`detoxkit run`: prompts -> samples -> scores -> metrics, resumable at any point.

Samples come from a backend (backends/), a batch of prompts at a time; they are
scored by every configured scorer, measured by the oracle LM, and appended to
generations.jsonl as whole lines. Re-running the same command resumes: finished samples are kept and only
missing (prompt, sample index) pairs are drawn; their seeds do not depend on
the batch, so the resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path

from .backends import Request
from .config import RunConfig, diff_configs
from .counters import add_counts, fold_counts
from .errors import DetoxkitError, InputError
from .hygiene import judge_tags, shared_teachers
from .lang import describe as lang_describe
from .metrics import compute_metrics
from .progress import Progress
from .prompts import Prompt
from .store import GENERATIONS, RunStore, json_float

log = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("detoxkit", "torch", "transformers", "tokenizers", "numpy", "peft",
                      "alt-profanity-check", "scikit-learn")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    if os.environ.get("MKL_CBWR"):  # MKL's reproducibility mode changes the last bits of logits
        out["MKL_CBWR"] = os.environ["MKL_CBWR"]
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def default_run_dir(cfg: RunConfig) -> Path:
    method = "+".join(m.replace(":", "_").replace("=", "").replace(",", "_") for m in cfg.methods)
    return Path("runs") / f"{Path(cfg.model).name}-{method}-{cfg.config_hash()[:8]}"


class Evaluation:
    """One run: owns the store, models and scorers for its duration."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.store = RunStore(cfg.out or default_run_dir(cfg))

    # ---- set-up --------------------------------------------------------------------------
    def _check_resume(self) -> dict | None:
        """The run.json of the run being resumed (None for a new run). A run started with
        another config, or with other prompts (contents, not path), is refused."""
        cfg, store = self.cfg, self.store
        if not store.exists("run.json"):
            return None
        old = store.read_json("run.json")
        if old.get("config_hash") != cfg.config_hash():
            changes = diff_configs(old.get("config", {}), cfg.hashed_fields())
            raise DetoxkitError(
                f"{store.path} holds a run with a different config ({'; '.join(changes)}). "
                "Use another --out directory, or `detoxkit score` to add a scorer to it.")
        kept = old.get("method_settings")
        if kept is not None and kept != self.method_settings:
            raise DetoxkitError(
                f"{store.path} was started with other method settings than these specs resolve to "
                f"now (was {json.dumps(kept)[:300]}, now {json.dumps(self.method_settings)[:300]}): "
                "a default changed since. Give the old settings explicitly in --method to resume, "
                "or use another --out directory.")
        was_adapter = (old.get("adapter") or old.get("trained_model") or {}).get("fingerprint")
        if self.adapter is not None and was_adapter and was_adapter != self.adapter.fingerprint:
            raise DetoxkitError(
                f"{store.path} was started with another adapter or model in {self.adapter.path} "
                f"(fingerprint {was_adapter}, now {self.adapter.fingerprint}): it was retrained "
                "since. Use another --out directory for the new one.")
        was = (old.get("prompts") or {}).get("fingerprint")
        now = self.prompt_set.fingerprint
        if was and was != now:
            raise DetoxkitError(
                f"{store.path} was started with other prompts than {self.prompt_set.source} holds "
                f"now (content fingerprint {was[:12]}, now {now[:12]}): the prompt file changed. "
                f"Restore it to resume this run, or use another --out directory for the new prompts.")
        return old

    def _read_adapter(self):
        """The run's trained adapter, checked before anything is written (None without one)."""
        from .backends import split_model_spec
        from .training.lm_adapter import read_adapter, read_trained_model

        if not self.cfg.adapter:  # a full fine-tune's detoxkit.json counts as one
            return read_trained_model(self.cfg.model) if split_model_spec(self.cfg.model)[0] == "hf" \
                else None

        backend = split_model_spec(self.cfg.model)[0]
        if backend != "hf":
            raise DetoxkitError(f"--adapter applies to models of the hf backend (transformers in "
                                f"this process), not to {self.cfg.model}: serve the merged model "
                                f"there instead (a full fine-tune, or the adapter merged with PEFT)")
        return read_adapter(self.cfg.adapter)

    def _load_prompts(self) -> list[Prompt]:
        from .prompts import load_prompts

        pset = load_prompts(self.cfg.prompts, limit=self.cfg.limit, seed=self.cfg.seed,
                            text_field=self.cfg.text_field, on_bad=self.cfg.on_bad,
                            group_field=self.cfg.group_field)
        self.prompt_set = pset
        self.skipped = list(pset.skipped)
        if not pset.prompts:
            raise DetoxkitError(f"prompt set '{self.cfg.prompts}' has no usable prompts")
        return pset.prompts

    def _tokenize(self, prompts: list[Prompt]) -> dict[str, list[int]]:
        """Prompt token ids; a prompt too long for the model is an error or a counted skip."""
        ctx = self.backend.context_length
        ids = {}
        for p in prompts:
            pid = self.backend.encode(p.text, self._messages(p))
            if ctx is not None and len(pid) + self.cfg.max_new_tokens > ctx:
                reason = (f"prompt is {len(pid)} tokens; with {self.cfg.max_new_tokens} new tokens "
                          f"it exceeds the model's context of {ctx}")
                if self.cfg.on_bad == "error":
                    raise InputError(reason + " (use --on-bad skip to skip such prompts)",
                                     path=self.prompt_set.source, line=p.meta.get("line"),
                                     field="text")
                self.skipped.append({"prompt_id": p.id, "reason": reason, "field": "text",
                                     "file": self.prompt_set.source, "line": p.meta.get("line")})
                continue
            ids[p.id] = pid
        return ids

    def _load_components(self) -> None:
        from .pipeline import Components

        self.parts = Components.load(self.cfg, self.method)
        self.backend, self.scorers, self.oracle = (self.parts.backend, self.parts.scorers,
                                                   self.parts.oracle)

    def _messages(self, p: Prompt) -> list[dict] | None:
        """The conversation of a prompt in chat mode (None in raw mode)."""
        if self.cfg.prompt_format != "chat":
            return None
        from .chat import messages_for

        return messages_for(p.text, p.meta, self.cfg.instruction, self.cfg.system_prompt)

    def _guidance(self, judge: dict) -> tuple[list[str], list[str]]:
        """(guided_by, judge_also_guided): what steers the method and the trained model, and
        which of it shares a teacher with the judge (detoxkit.hygiene)."""
        # what chose a trained adapter's data (filter scorer, reward, corpus labels) guides too
        guided = self.method.guided_by()
        if self.adapter is not None:
            guided = sorted(set(guided) | set(self.adapter.guided_by))
        return guided, shared_teachers(guided, judge_tags(judge))

    def _provenance(self) -> dict:
        judge = self.scorers[0].info()
        guided, overlap = self._guidance(judge)
        return {
            "config_hash": self.cfg.config_hash(),
            "config": self.cfg.hashed_fields(),
            "model": self.backend.describe(),
            "adapter": self.adapter.describe() if self.adapter and self.cfg.adapter else None,
            # a full fine-tune given as --model DIR: what trained it
            "trained_model": self.adapter.describe() if self.adapter and not self.cfg.adapter else None,
            "method": self.method.describe(),
            "scorer": judge,
            "scorers": [s.info() for s in self.scorers],
            "oracle": self.oracle.describe() if self.oracle else None,
            "guided_by": guided,
            "judge_also_guided": overlap,
            "prompts": {"spec": self.cfg.prompts, "source": self.prompt_set.source,
                        "fingerprint": self.prompt_set.fingerprint,
                        "provenance": self.prompt_set.provenance},
            "seed": self.cfg.seed,
            "versions": library_versions(),
            "language_id": lang_describe(),  # what detected prompt and sample languages
        }

    # ---- the run -------------------------------------------------------------------------
    def run(self) -> dict:
        """Check every input, then generate, score and measure what is missing. Nothing is
        created before the inputs are known to be good; a run directory this call created is
        removed again if it fails before its first sample."""
        from .methods import build_method
        from .scorers import check_scorer_spec

        self.method = build_method(self.cfg.methods)
        self.adapter = self._read_adapter()
        # the settings the specs resolve to, defaults included: a newer detoxkit may change a
        # default, and a resume must not mix the two
        self.method_settings = json.loads(json.dumps(self.method.describe(), default=str))
        for spec in self.cfg.scorers:
            check_scorer_spec(spec)
        prompts = self._load_prompts()
        created = not self.store.path.exists()
        try:
            with self.store.locked():
                return self._run_locked(prompts)
        except BaseException:
            if created and not self.store.exists(GENERATIONS):
                shutil.rmtree(self.store.path, ignore_errors=True)
            raise

    def _run_locked(self, prompts: list[Prompt]) -> dict:
        store, cfg = self.store, self.cfg
        removed = store.remove_temporary_files()
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted write", removed)
        old = self._check_resume()
        if old is not None and old.get("status") == "complete" and store.exists("metrics.json"):
            log.info("the run in %s is complete: nothing to do", store.path)
            return store.read_json("metrics.json")  # a finished run's files stay as they are
        if old is not None:
            log.info("resuming run in %s", store.path)
            self._keep_dtype(old)
        self._load_components()
        token_ids = self._tokenize(prompts)
        prompts = [p for p in prompts if p.id in token_ids]
        batch_rows = self._batch_rows(old)
        prov = self._provenance()
        prov["batch_rows"] = batch_rows
        prov["method_settings"] = self.method_settings
        if prov["judge_also_guided"]:
            log.warning("the judging scorer %s also guided the method or the trained model (%s): "
                        "its scores grade them by their own teacher; judge with an independent "
                        "scorer",
                        prov["scorer"]["name"], ", ".join(prov["judge_also_guided"]))
        if not store.exists("config.yaml"):  # what started the run; resumes do not rewrite it
            store.write_text("config.yaml", cfg.to_yaml())
        store.write_json("run.json", {**prov, "status": "running"})
        store.write_jsonl("prompts.jsonl", self._prompt_rows(prompts))

        cut = store.repair()
        if cut:
            log.warning("dropped %d bytes of a sample line torn by an earlier interruption", cut)
        done = {(r["prompt_id"], r["sample_index"]) for r in store.generations()
                if not r.get("failed")}  # a failed sample is drawn again
        requests = [Request(p.id, token_ids[p.id], list(range(cfg.samples)), p.text, self._messages(p))
                    for p in prompts]
        total = len(prompts) * cfg.samples
        progress = Progress(total, "generating+scoring", initial=len(done & {
            (p.id, i) for p in prompts for i in range(cfg.samples)}))
        t0 = time.monotonic()
        try:
            actors = self._generate_all(requests, done, {p.id: p for p in prompts}, progress, prov)
        finally:
            progress.close()
        elapsed = time.monotonic() - t0
        # read after the work they describe: artefact paths and training metadata are known
        # once the method was bound, scorers' counters (e.g. Perspective's) once they scored
        prov["method"] = self.method.describe()
        prov["scorers"] = [s.info() for s in self.scorers]
        prov["scorer"] = prov["scorers"][0]
        # an artefact found by tokenizer tells its own guided_by only once bound
        guided, overlap = self._guidance(prov["scorer"])
        if (guided, overlap) != (prov["guided_by"], prov["judge_also_guided"]):
            log.info("the method's artefacts record guided_by %s (judge also guided: %s)",
                     ", ".join(guided) or "-", ", ".join(overlap) or "none")
        prov["guided_by"], prov["judge_also_guided"] = guided, overlap
        # under Ray the actors generated (`actors`: their counters), not this process
        session = (fold_counts([a["backend"] for a in actors]) if actors is not None
                   else self.backend.run_stats())
        backend_stats = add_counts((old or {}).get("backend_stats") or {}, session)
        if backend_stats:  # summed over every session of the run (requests, tokens, time)
            prov["backend_stats"] = backend_stats
        metrics = compute_metrics(store, prov, self.skipped)
        metrics["elapsed_s"] = round(elapsed, 2)
        # counters of this process's generate calls (a resumed run counts the resumed part)
        metrics["method_stats"] = (self.method.merge_run_stats([a["method"] for a in actors])
                                   if actors is not None else self.method.run_stats())
        if backend_stats:
            metrics["backend_stats"] = backend_stats
        store.write_json("metrics.json", metrics)
        # "incomplete": some samples could not be drawn; the same command asks for them again
        status = "incomplete" if metrics.get("n_generation_failed") else "complete"
        store.write_json("run.json", {**prov, "status": status, "skipped": self.skipped})
        return metrics

    def _keep_dtype(self, old: dict) -> None:
        """A resumed run keeps the precision it started with (`auto` may resolve otherwise on
        another CPU or in a newer detoxkit), so that its samples are all drawn alike."""
        kept = (old.get("model") or {}).get("dtype")
        if not kept or kept == self.cfg.dtype:
            return
        if self.cfg.dtype != "auto":
            log.warning("keeping this run's precision (%s, not %s) so that the resumed samples "
                        "are drawn as the others were", kept, self.cfg.dtype)
        self.cfg = replace(self.cfg, dtype=kept)

    def _batch_rows(self, old: dict | None) -> int:
        """Sequences per generate call. A resumed run keeps the layout it started with, so
        that its samples equal an uninterrupted run's (see docs/reliability.md)."""
        asked = self.cfg.batch_size or self.backend.default_batch_rows()
        kept = (old or {}).get("batch_rows")
        if kept and kept != asked:
            log.warning("keeping this run's batch layout (%d sequences per batch, not %d) so that "
                        "the resumed samples equal an uninterrupted run's", kept, asked)
        return int(kept or asked)

    def _prompt_rows(self, prompts: list[Prompt]) -> list[dict]:
        """Prompts with their toxicity: the set's reference score, else the judge's score."""
        unknown = [p for p in prompts if p.toxicity is None]
        judged = {}
        if unknown:
            values = self.scorers[0].score([p.text for p in unknown])["toxicity"]
            judged = {p.id: json_float(v) for p, v in zip(unknown, values)}
        judge = f"scorer:{self.scorers[0].name}"
        return [{"prompt_id": p.id, "text": p.text,
                 "toxicity": p.toxicity if p.toxicity is not None else judged[p.id],
                 "toxicity_source": "reference" if p.toxicity is not None else judge,
                 "challenging": p.challenging, "meta": with_language(p.meta, p.text)}
                for p in prompts]

    def _generate_all(self, requests: list[Request], done: set[tuple[str, int]],
                      by_id: dict[str, Prompt], progress: Progress,
                      prov: dict) -> list[dict] | None:
        """Draw every planned batch that holds a missing sample. A batch is generated whole,
        as the uninterrupted run drew it, and only its missing samples are stored (a backend
        whose samples do not depend on their batch is asked for the missing ones only).
        Returns the Ray actors' counters (each incarnation's last report), None locally."""
        rows_per_batch = prov["batch_rows"]
        queue = self._pending(plan_batches(requests, rows_per_batch), done)
        if self.cfg.executor == "ray":
            from .executors import run_on_ray

            latest: dict[str, dict] = {}  # each actor incarnation's counters, as last reported
            for rows, counters in run_on_ray(self.cfg, queue, done):
                self.store.append_generations(rows)
                progress.update(len(rows))
                latest[counters["incarnation"]] = counters
            return list(latest.values())
        while queue:
            batch = queue.pop(0)
            try:
                rows = self.parts.draw(batch, done)
            except Exception as exc:
                if not self.backend.is_out_of_memory(exc) or rows_per_batch == 1:
                    raise
                rows_per_batch = max(1, rows_per_batch // 2)
                log.warning("out of memory; retrying with %d sequences per batch", rows_per_batch)
                self.backend.release_memory()
                queue = plan_batches(batch, rows_per_batch) + queue
                prov["batch_rows"] = rows_per_batch  # a resume continues with the smaller layout
                self.store.write_json("run.json", {**prov, "status": "running"})
                continue
            self.store.append_generations(rows)
            progress.update(len(rows))
        return None

    def _pending(self, batches: list[list[Request]], done: set[tuple[str, int]]) -> list[list[Request]]:
        out = []
        for batch in batches:
            if all((r.prompt_id, i) in done for r in batch for i in r.sample_indices):
                continue
            if self.backend.capabilities.batch_invariant:  # separate requests: only what is missing
                batch = [replace(r, sample_indices=[i for i in r.sample_indices
                                                    if (r.prompt_id, i) not in done]) for r in batch]
                batch = [r for r in batch if r.sample_indices]
            out.append(batch)
        return out


def with_language(meta: dict, text: str) -> dict:
    """A prompt's meta with its language: the prompt set's (as a base code; a regional tag
    kept as `locale`), else detected from the text, with `language_source` saying which."""
    from .lang import detect, normalize_language

    given = normalize_language(meta.get("language")) if meta.get("language") else None
    if given:
        extra = {"language": given, "language_source": "given"}
        if str(meta["language"]) != given:
            extra["locale"] = meta.get("locale") or str(meta["language"])
        return {**meta, **extra}
    found = detect(text)
    return {**meta, "language": found.language, "language_source": "detected",
            "language_confidence": round(found.confidence, 4)}


def plan_batches(requests: list[Request], rows_per_batch: int) -> list[list[Request]]:
    """Requests packed into generate calls of at most `rows_per_batch` sequences, in order: whole
    prompts where they fit, a prompt's samples split where it alone holds more."""
    queue, batches = list(requests), []
    while queue:
        batch, n_rows = [], 0
        while queue and (not batch or n_rows + len(queue[0].sample_indices) <= rows_per_batch):
            req = queue.pop(0)
            if len(req.sample_indices) > rows_per_batch:
                queue.insert(0, replace(req, sample_indices=req.sample_indices[rows_per_batch:]))
                req = replace(req, sample_indices=req.sample_indices[:rows_per_batch])
            batch.append(req)
            n_rows += len(req.sample_indices)
        batches.append(batch)
    return batches
