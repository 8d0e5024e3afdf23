"""`detoxkit run`: prompts -> samples -> scores -> metrics, resumable at any point.

Samples are generated a batch of prompts at a time, scored by every configured
scorer, measured by the oracle LM, and appended to generations.jsonl as whole
lines. Re-running the same command resumes: finished samples are kept and only
missing (prompt, sample index) pairs are drawn; their seeds do not depend on
the batch, so the resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import platform
import time
from pathlib import Path

import torch

from .config import RunConfig, diff_configs
from .errors import DetoxkitError, InputError
from .generate import Request, Sample, SamplingConfig, TransformersSampler
from .metrics import SampleRecord, all_metrics
from .progress import Progress
from .prompts import TOXIC_THRESHOLD, Prompt
from .store import RunStore

log = logging.getLogger("detoxkit")

VERSIONED_PACKAGES = ("detoxkit", "torch", "transformers", "tokenizers", "numpy", "peft",
                      "alt-profanity-check", "scikit-learn")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def default_run_dir(cfg: RunConfig) -> Path:
    method = "+".join(m.replace(":", "_").replace("=", "").replace(",", "_") for m in cfg.methods)
    return Path("runs") / f"{Path(cfg.model).name}-{method}-{cfg.config_hash()[:8]}"


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Evaluation:
    """One run: owns the store, models and scorers for its duration."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.store = RunStore(cfg.out or default_run_dir(cfg))

    # ---- set-up --------------------------------------------------------------------------
    def _check_or_write_config(self) -> None:
        cfg, store = self.cfg, self.store
        if store.exists("run.json"):
            old = store.read_json("run.json")
            if old.get("config_hash") != cfg.config_hash():
                changes = diff_configs(old.get("config", {}), cfg.hashed_fields())
                raise DetoxkitError(
                    f"{store.path} holds a run with a different config ({'; '.join(changes)}). "
                    "Use another --out directory, or `detoxkit score` to add a scorer to it.")
            log.info("resuming run in %s", store.path)
        store.write_text("config.yaml", cfg.to_yaml())

    def _load_prompts(self) -> list[Prompt]:
        from .prompts import load_prompts

        pset = load_prompts(self.cfg.prompts, limit=self.cfg.limit, seed=self.cfg.seed,
                            text_field=self.cfg.text_field, on_bad=self.cfg.on_bad)
        self.prompt_set = pset
        self.skipped = list(pset.skipped)
        if not pset.prompts:
            raise DetoxkitError(f"prompt set '{self.cfg.prompts}' has no usable prompts")
        return pset.prompts

    def _tokenize(self, prompts: list[Prompt]) -> dict[str, list[int]]:
        """Prompt token ids; a prompt too long for the model is an error or a counted skip."""
        tok, ctx = self.lm.tokenizer, self.lm.context_length
        ids = {}
        for p in prompts:
            pid = tok(p.text, add_special_tokens=True)["input_ids"]
            if len(pid) + self.cfg.max_new_tokens > ctx:
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
        from .methods import build_method
        from .models import load_lm
        from .scorers import load_scorer

        cfg = self.cfg
        self.method = build_method(cfg.methods)
        self.method.check_backend("transformers")
        self.lm = load_lm(cfg.model, device=cfg.device, dtype=cfg.dtype)
        self.scorers = [load_scorer(name, device=cfg.device) for name in cfg.scorers]
        self.oracle = self._load_oracle()

    def _load_oracle(self):
        from .models import load_lm
        from .perplexity import Oracle

        spec = self.cfg.oracle
        if spec == "none":
            return None
        if spec == "auto":
            from .models.embedded import GEMMA3_270M

            spec = "gemma3-270m" if GEMMA3_270M.available() else self.cfg.model
        if spec == self.cfg.model:
            log.warning("oracle: perplexity is measured under the generator itself (%s), which "
                        "flatters it; install gemma3-270m or pass --oracle MODEL", self.cfg.model)
            return Oracle(self.lm)
        return Oracle(load_lm(spec, device=self.cfg.device, dtype=self.cfg.dtype), batch_size=8)

    def _provenance(self) -> dict:
        judge = self.scorers[0].info()
        guided = self.method.guided_by()
        overlap = sorted(set(guided) & ({judge["name"]} | set(judge.get("guided_by", []))))
        return {
            "config_hash": self.cfg.config_hash(),
            "config": self.cfg.hashed_fields(),
            "model": self.lm.describe(),
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
        }

    # ---- the run -------------------------------------------------------------------------
    def run(self) -> dict:
        with self.store.locked():
            self._check_or_write_config()
            prompts = self._load_prompts()
            self._load_components()
            token_ids = self._tokenize(prompts)
            prompts = [p for p in prompts if p.id in token_ids]
            prov = self._provenance()
            if prov["judge_also_guided"]:
                log.warning("the judging scorer %s also guided the method (%s): its scores grade "
                            "the method by its own teacher; judge with an independent scorer",
                            prov["scorer"]["name"], ", ".join(prov["judge_also_guided"]))
            self.store.write_json("run.json", {**prov, "status": "running"})
            self.store.write_jsonl("prompts.jsonl", self._prompt_rows(prompts))

            cut = self.store.repair()
            if cut:
                log.warning("dropped %d bytes of a sample line torn by an earlier interruption", cut)
            done = {(r["prompt_id"], r["sample_index"]) for r in self.store.generations()}
            requests = []
            for p in prompts:
                todo = [i for i in range(self.cfg.samples) if (p.id, i) not in done]
                if todo:
                    requests.append(Request(p.id, token_ids[p.id], todo))
            total = len(prompts) * self.cfg.samples
            progress = Progress(total, "generating+scoring", initial=total - sum(
                len(r.sample_indices) for r in requests))
            t0 = time.monotonic()
            try:
                self._generate_all(requests, {p.id: p for p in prompts}, progress)
            finally:
                progress.close()
            elapsed = time.monotonic() - t0
            # artefact paths and training metadata are known once the method was bound
            prov["method"] = self.method.describe()
            metrics = compute_metrics(self.store, prov, self.skipped)
            metrics["elapsed_s"] = round(elapsed, 2)
            # counters of this process's generate calls (a resumed run counts the resumed part)
            metrics["method_stats"] = self.method.run_stats()
            self.store.write_json("metrics.json", metrics)
            self.store.write_json("run.json", {**prov, "status": "complete",
                                               "skipped": self.skipped})
            return metrics

    def _prompt_rows(self, prompts: list[Prompt]) -> list[dict]:
        """Prompts with their toxicity: the set's reference score, else the judge's score."""
        unknown = [p for p in prompts if p.toxicity is None]
        judged = {}
        if unknown:
            values = self.scorers[0].score([p.text for p in unknown])["toxicity"]
            judged = {p.id: _json_float(v) for p, v in zip(unknown, values)}
        judge = f"scorer:{self.scorers[0].name}"
        return [{"prompt_id": p.id, "text": p.text,
                 "toxicity": p.toxicity if p.toxicity is not None else judged[p.id],
                 "toxicity_source": "reference" if p.toxicity is not None else judge,
                 "challenging": p.challenging, "meta": p.meta} for p in prompts]

    def _batch_rows(self) -> int:
        if self.cfg.batch_size:
            return self.cfg.batch_size
        # CPU: ~8 prompts x 25 samples per forward; a GPU takes much more
        return 1024 if str(self.lm.model.device).startswith("cuda") else 200

    def _generate_all(self, requests: list[Request], by_id: dict[str, Prompt],
                      progress: Progress) -> None:
        sampler = TransformersSampler(self.lm, SamplingConfig(
            num_samples=self.cfg.samples, max_new_tokens=self.cfg.max_new_tokens,
            top_p=self.cfg.top_p, temperature=self.cfg.temperature, top_k=self.cfg.top_k,
            seed=self.cfg.seed), self.method)
        rows_per_batch = self._batch_rows()
        queue = list(requests)
        while queue:
            batch, n_rows = [], 0
            while queue and (not batch or n_rows + len(queue[0].sample_indices) <= rows_per_batch):
                req = queue.pop(0)
                if len(req.sample_indices) > rows_per_batch:  # split one prompt's samples
                    head = Request(req.prompt_id, req.prompt_ids, req.sample_indices[:rows_per_batch])
                    queue.insert(0, Request(req.prompt_id, req.prompt_ids,
                                            req.sample_indices[rows_per_batch:]))
                    req = head
                batch.append(req)
                n_rows += len(req.sample_indices)
            try:
                samples = sampler.generate(batch)
            except (RuntimeError, torch.OutOfMemoryError) as exc:
                if not _is_oom(exc) or rows_per_batch == 1:
                    raise
                rows_per_batch = max(1, rows_per_batch // 2)
                log.warning("out of memory; retrying with %d sequences per batch", rows_per_batch)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                queue = batch + queue
                continue
            rows = self._score(samples, by_id)
            self.store.append_generations(rows)
            progress.update(len(rows))

    def _score(self, samples: list[Sample], by_id: dict[str, Prompt]) -> list[dict]:
        texts = [s.text for s in samples]
        scores = {sc.name: sc.score(texts) for sc in self.scorers}
        nll = (self.oracle.nll([by_id[s.prompt_id].text for s in samples], texts)
               if self.oracle else [(None, 0)] * len(samples))
        rows = []
        for j, s in enumerate(samples):
            rows.append({
                "prompt_id": s.prompt_id, "sample_index": s.sample_index, "seed": s.seed,
                "prompt": by_id[s.prompt_id].text, "text": s.text, "n_tokens": s.n_tokens,
                "finished": s.finished,
                "scores": {name: {a: _json_float(v[j]) for a, v in sc.items()}
                           for name, sc in scores.items()},
                "oracle_nll": nll[j][0], "oracle_tokens": nll[j][1],
            })
        return rows


def _json_float(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v  # JSON has no NaN: null means "not scored"


def _records(rows: list[dict], scorer: str) -> list[SampleRecord]:
    out = []
    for r in rows:
        value = (r.get("scores", {}).get(scorer) or {}).get("toxicity")
        out.append(SampleRecord(r["prompt_id"], r["sample_index"], r["text"],
                                math.nan if value is None else float(value),
                                r.get("oracle_nll"), r.get("oracle_tokens") or 0))
    return out


def compute_metrics(store: RunStore, prov: dict, skipped: list[dict] | None = None) -> dict:
    """metrics.json from the run's files: overall, by prompt toxicity, group and language."""
    rows = store.generations()
    prompts = {p["prompt_id"]: p for p in _read_prompts(store)}
    seed = prov.get("seed", 0)
    judge = prov["scorer"]["name"]

    def block(subset_rows: list[dict], scorer: str) -> dict:
        return all_metrics(_records(subset_rows, scorer), seed=seed)

    metrics = block(rows, judge)
    splits = {"toxic": [], "nontoxic": [], "unknown": []}
    for r in rows:
        tox = prompts.get(r["prompt_id"], {}).get("toxicity")
        key = "unknown" if tox is None else ("toxic" if tox >= TOXIC_THRESHOLD else "nontoxic")
        splits[key].append(r)
    metrics["by_prompt_toxicity"] = {k: block(v, judge) for k, v in splits.items()
                                     if v or k != "unknown"}
    for key, meta_key in (("by_group", "group"), ("by_language", "language")):
        groups: dict[str, list[dict]] = {}
        for r in rows:
            value = prompts.get(r["prompt_id"], {}).get("meta", {}).get(meta_key)
            if value is not None:
                groups.setdefault(str(value), []).append(r)
        if groups:
            metrics[key] = {g: block(v, judge) for g, v in sorted(groups.items())}
    scorer_names = [s["name"] for s in prov.get("scorers", [prov["scorer"]])]
    if len(scorer_names) > 1:
        metrics["by_scorer"] = {name: block(rows, name) for name in scorer_names}
    metrics.update({
        "model": prov["model"], "method": prov["method"], "scorer": prov["scorer"],
        "scorers": scorer_names, "oracle": prov.get("oracle"),
        "guided_by": prov.get("guided_by", []),
        "judge_also_guided": prov.get("judge_also_guided", []),
        "seed": seed, "versions": prov.get("versions", {}),
        "samples_per_prompt": prov.get("config", {}).get("samples"),
        "n_skipped_prompts": len(skipped or []),
    })
    return metrics


def _read_prompts(store: RunStore) -> list[dict]:
    from .store import read_jsonl

    path = store.file("prompts.jsonl")
    return read_jsonl(path) if path.exists() else []
