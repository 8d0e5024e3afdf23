"""`detoxkit train dapt`: domain-adaptive training (RealToxicityPrompts' DAPT) of a causal LM on
non-toxic text: the corpus's non-toxic training-pool rows, or a user's text file.

A LoRA adapter through PEFT by default (saved in PEFT's format), or every weight (`--full`: a
model directory that `--model DIR` loads). The text is packed into blocks of --seq-len tokens;
steps come from the token budget. Checkpoints (training/lm_checkpoint.py) every
--checkpoint-every steps: the same command, rerun after a kill, continues from the last one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DetoxkitError
from ..progress import Progress
from .base import (GeneratorConfig, Trainer, command_line, corpus_half_setting, load_generator,
                   set_threads, setting, settings_record)
from .lm_adapter import (METADATA_FILE, default_out, finished_output, peak_memory_mb, save_lm_adapter,
                         trainable_params)
from .lm_checkpoint import resume_losses, save_checkpoint, settings_digest
from .lm_data import TrainingText, corpus_nontoxic, pack_blocks, read_text_file, step_blocks

log = logging.getLogger(__name__)

ALL_LINEAR = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
# settings that change how a run executes but not what it computes
EXECUTION_ONLY = ("threads", "checkpoint_every", "out", "device")


@dataclass
class LMTrainingConfig(GeneratorConfig):
    """What every LM-training recipe (dapt, sgeat) shares: the adapter, the schedule, the run."""

    mode: str = setting("lora", "lora: a PEFT LoRA adapter; full: every weight (a model directory)",
                        choices=("lora", "full"))
    full: bool = setting(False, "a full fine-tune (the same as --mode full)")
    rank: int = setting(16, "LoRA rank")
    alpha: float = setting(32.0, "LoRA alpha (scaling alpha / rank)")
    target_modules: str = setting(ALL_LINEAR, "comma-separated module names carrying LoRA, or "
                                              "all-linear")
    lora_dropout: float = setting(0.0, "LoRA dropout")
    tokens: int = setting(200_000, "token budget: steps = tokens / (batch x seq-len)")
    steps: int = setting(0, "optimiser steps (0: from the token budget)")
    seq_len: int = setting(128, "tokens per training block (texts packed, end-of-text between)")
    batch: int = setting(8, "blocks per step")
    lr: float | None = setting(None, "AdamW learning rate (default 2e-4 for LoRA, 2e-5 full)")
    schedule: str = setting("linear", "decay after the warm-up", choices=("linear", "cosine",
                                                                             "constant"))
    warmup: int = setting(10, "warm-up steps (linear from 0)")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    seed: int = setting(0, "seed of the data order and the initialisation")
    threads: int = setting(0, "CPU threads (0: torch's default)")
    checkpoint_every: int = setting(50, "write a resumable checkpoint every N steps (0: never)")

    @property
    def is_full(self) -> bool:
        return self.full or self.mode == "full"

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-5 if self.is_full else 2e-4)

    def total_steps(self) -> int:
        return self.steps or max(1, self.tokens // (self.batch * self.seq_len))


@dataclass
class DAPTConfig(LMTrainingConfig):
    data: str | None = setting(None, "text file to train on: .txt (one text per line) or .jsonl "
                                     "(a text field per line); default: the corpus's non-toxic "
                                     "training-pool rows")
    text_field: str = setting("text", ".jsonl: the field holding each text")
    rows: int = setting(0, "corpus rows (non-toxic) to read at most (0: all)")
    corpus_half: str | None = corpus_half_setting()
    out: str | None = setting(None, "output directory (default: the cache, "
                                    "$DETOXKIT_HOME/adapters/dapt/<model key>)")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """The learning rate's multiplier at `step`: linear warm-up, then linear or cosine decay to 0."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    done = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
    return max(0.0, 1 - done)


def wrap_model(model, config: LMTrainingConfig):
    """A trainable copy's parameters set up: LoRA through PEFT, or every weight for --full."""
    if config.is_full:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    targets = config.target_modules.strip()
    modules: Any = "all-linear" if targets == "all-linear" else [t.strip() for t in targets.split(",")
                                                                 if t.strip()]
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.lora_dropout,
                      target_modules=modules, bias="none", task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():  # PEFT calls a transformers method deprecated in v5
            warnings.simplefilter("ignore", FutureWarning)
            return get_peft_model(model, lora)
    except ValueError as exc:  # e.g. no module of that name
        raise DetoxkitError(f"--target-modules {targets}: {exc}") from None


def lm_loss(model, ids):
    """Mean next-token NLL over a block batch [B, T] (every position is text: packed blocks)."""
    return model(input_ids=ids, labels=ids, use_cache=False).loss


def train_step(model, optimizer, scheduler, ids) -> float:
    import torch

    loss = lm_loss(model, ids)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def make_optimizer(model, config: LMTrainingConfig, total: int):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, config.warmup, config.schedule))
    return opt, sched


def config_record(config: LMTrainingConfig) -> dict[str, Any]:
    return settings_record(config, EXECUTION_ONLY)


def train_lm(config: LMTrainingConfig, data: TrainingText, recipe: str, out: Path,
             extra: dict[str, Any] | None = None) -> Path:
    """Continue training config.model on `data`; save into `out` (save_lm_adapter) with the
    metadata every recipe records. Resumes from out/checkpoints when they are there."""
    import copy

    import torch

    set_threads(config.threads)
    t0 = time.time()  # wall_s: loading, tokenizing and training (summed over resumed sessions)
    lm = load_generator(config)
    # what the result depends on: settings, data and the base weights (a changed base under the
    # same name must not resume or pass for done)
    record = {**config_record(config), "data_fingerprint": data.fingerprint,
              "base_revision": lm.revision}
    config_hash = settings_digest(record)
    if finished_output(out, config_hash):
        log.info("%s already holds this %s model: nothing to do", out, recipe)
        return out
    total = config.total_steps()
    # tokenize only what one pass of the budget reads; the data recorded is what was used
    blocks, used = pack_blocks(data.texts, lm.tokenizer, config.seq_len, total * config.batch)
    if used < len(data.texts):
        data = dataclasses.replace(data, texts=data.texts[:used],
                                   details={**data.details, "rows_available": len(data.texts)})
    torch.manual_seed(config.seed)
    model = wrap_model(copy.deepcopy(lm.model), config)  # the shared base model stays as it is
    model.train()
    opt, sched = make_optimizer(model, config, total)
    folder = out / "checkpoints"
    start, history, wall_before, ckpt = resume_losses(folder, model, opt, sched, config_hash)
    if ckpt is not None:
        log.info("resuming %s from %s (step %d of %d)", recipe, ckpt, start, total)
    bar = Progress(total, f"{recipe} training", unit="steps", initial=start)
    device = model.device
    for step in range(start, total):
        ids = blocks[step_blocks(len(blocks), config.batch, step, config.seed)].to(device)
        history.append(train_step(model, opt, sched, ids))
        bar.update(1)
        if (step + 1) % 10 == 0 or step + 1 == total:
            bar.note(f"loss {sum(history[-10:]) / len(history[-10:]):.4f}")
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and step + 1 < total:
            save_checkpoint(folder, step + 1, model, opt, sched,
                            {"config_hash": config_hash, "config": record, "losses": history,
                             "blocks_read": (step + 1) * config.batch,
                             "wall_s": wall_before + time.time() - t0})
    bar.close()
    model.eval()
    _write_losses(out, history)
    tail = history[-10:]
    meta = {
        "recipe": recipe, "base_model": lm.name, "base_revision": lm.revision,
        "data": data.describe(), "tokens_seen": total * config.batch * config.seq_len,
        "steps": total, "final_loss": round(sum(tail) / len(tail), 5),
        "first_loss": round(history[0], 5), "loss_file": "loss.jsonl",
        "wall_s": round(wall_before + time.time() - t0, 1),
        "peak_memory_mb": peak_memory_mb(str(device)), "trainable_params": trainable_params(model),
        "guided_by": sorted(set(data.guided_by)), "command": command_line(recipe, config),
        "mode": "full" if config.is_full else "lora", "lr": config.learning_rate,
        "config": record, "config_hash": config_hash, **(extra or {}),
    }
    if not config.is_full:
        meta["lora"] = {"rank": config.rank, "alpha": config.alpha,
                        "target_modules": config.target_modules, "dropout": config.lora_dropout}
    save_lm_adapter(model, out, meta, tokenizer=lm.tokenizer)
    shutil.rmtree(folder, ignore_errors=True)  # the result is whole: checkpoints are spent
    log.info("%s: %d steps, %d tokens, final loss %.4f -> %s", recipe, total, meta["tokens_seen"],
             meta["final_loss"], out)
    return out


def finished_settings(out: Path, config: LMTrainingConfig) -> bool:
    """Whether `out` holds a finished model of these settings (before any data is made: sgeat
    checks it before drawing samples). Other settings are an error."""
    path = out / METADATA_FILE
    if not path.exists():
        return False
    meta = json.loads(path.read_text(encoding="utf-8"))
    was = {k: v for k, v in (meta.get("config") or {}).items()
           if k not in ("data_fingerprint", "base_revision")}
    if was != json.loads(json.dumps(config_record(config), default=str)):
        raise DetoxkitError(f"{out} already holds a model trained with other settings "
                            f"({meta.get('command')}): use another --out, or remove it to retrain")
    return True


def _write_losses(out: Path, history: list[float]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "loss.jsonl").write_text("".join(json.dumps({"step": i + 1, "loss": round(v, 6)}) + "\n"
                                            for i, v in enumerate(history)), encoding="utf-8")


def train_dapt(config: DAPTConfig) -> Path:
    """DAPT: continue training the model on non-toxic text (the corpus's non-toxic training-pool
    rows, or --data FILE); a LoRA adapter (PEFT format) or, with --full, a model directory."""
    data = (read_text_file(config.data, config.text_field) if config.data
            else corpus_nontoxic(config.rows or None, config.seed, config.corpus_half))
    return train_lm(config, data, "dapt", default_out("dapt", config, config.out))


def report(config: LMTrainingConfig, path: Path) -> None:
    meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    print(f"{path}\n  {meta['recipe']} ({meta['format']}): {meta['steps']} steps, "
          f"{meta['tokens_seen']} tokens, loss {meta['first_loss']} -> {meta['final_loss']}, "
          f"{meta['trainable_params']} trainable parameters, {meta['wall_s']} s, "
          f"peak memory {meta['peak_memory_mb']} MB, {meta.get('weights_mb')} MB of weights")


TRAINER = Trainer("dapt", DAPTConfig, train_dapt, report)
