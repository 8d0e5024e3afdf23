"""`detoxkit train experts` and `detoxkit train gedi`: two LoRA adapters on the generator's top
layers (the fused two-adapter runtime of methods/lora.py), from the corpus's training pool.

- experts: DExperts' expert / anti-expert (plain LM loss on non-toxic / toxic rows).
- gedi: GeDi's class-conditional LM, one adapter per control code, hybrid loss with a learned
  scale of the class log-likelihoods (GeDi's train_GeDi.py with --logit_scale, as its
  scripts/run_training.sh runs it).

A training writes a resumable checkpoint (training/lm_checkpoint.py) every `checkpoint_every`
steps into <out>/checkpoints: the same command, rerun after a kill, continues from the last one,
and a rerun after the end has nothing to do.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artefacts import output_path
from ..corpus import clean_text, training_rows
from ..progress import Progress
from .base import (GeneratorConfig, Trainer, corpus_guided_by, corpus_half_setting, load_generator,
                   command_line, setting, settings_record)

log = logging.getLogger(__name__)

EXECUTION_ONLY = ("out", "device", "checkpoint_every")  # settings the adapters do not depend on


@dataclass
class ExpertsConfig(GeneratorConfig):
    rows: int = setting(4000, "balanced corpus rows")
    steps: int = setting(150, "optimiser steps")
    batch: int = setting(16, "rows per step (half non-toxic, half toxic)")
    max_len: int = setting(48, "tokens per row")
    layers: int = setting(4, "top layers carrying the adapters")
    rank: int = setting(8, "LoRA rank")
    lr: float = setting(1e-3, "AdamW learning rate (warm-up 10 steps, then linear decay)")
    seed: int = setting(0, "seed of the rows, batches and initialisation")
    corpus_half: str | None = corpus_half_setting()
    checkpoint_every: int = setting(25, "write a resumable checkpoint every N steps (0: never)")
    out: str | None = setting(None, "output directory (default: the cache, "
                                    "$DETOXKIT_HOME/methods/experts/<model key>)")


@dataclass
class GeDiConfig(ExpertsConfig):
    gen_weight: float = setting(0.6, "weight of the generative loss (the rest: discriminative)")
    logit_scale: bool = setting(True, "learn a scale of the class log-likelihoods in the "
                                      "discriminative loss (GeDi's --logit_scale); saved in "
                                      "detoxkit.json, gedi applies it")
    out: str | None = setting(None, "output directory (default: the cache, "
                                    "$DETOXKIT_HOME/methods/gedi/<model key>)")


def _batch_rows(labels: list[int], batch: int, seed: int):
    """Balanced batches of row indices, endlessly: batch/2 non-toxic rows, then batch/2 toxic
    rows. A function of the seed alone, so a resumed training skips the batches it has read."""
    rng = random.Random(seed)
    by_class = [[i for i, y in enumerate(labels) if y == c] for c in (0, 1)]
    half = max(1, batch // 2)
    while True:
        for pool in by_class:
            rng.shuffle(pool)
        for start in range(0, min(map(len, by_class)) - half + 1, half):
            yield by_class[0][start:start + half] + by_class[1][start:start + half]


def _encode(idx: list[int], texts: list[str], labels: list[int], tokenizer, max_len: int):
    import torch

    enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                    max_length=max_len, add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"], torch.tensor([labels[i] for i in idx])


def _lower_hidden(model, first: int, ids, mask):
    """The hidden state entering the first adapted layer, and the rotary embeddings (no grad)."""
    import torch

    from ..tokens import position_ids

    pos = position_ids(mask)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True,
                    use_cache=False)
        hidden = out.hidden_states[first]
        pe = model.model.rotary_emb(hidden, pos)
    return hidden, pe


def _class_nll(model, top, hidden, pe, ids, mask, groups: int = 2):
    """Per-row mean NLL of ids under each adapter: [groups, B] (and token counts [B])."""
    import torch

    from ..methods.lora import causal_mask4d, head_logits

    B, T = ids.shape
    mask4d = causal_mask4d(mask, T, hidden.dtype)
    h = top(torch.cat([hidden] * groups), torch.cat([mask4d] * groups),
            tuple(torch.cat([p.expand(B, *p.shape[1:])] * groups) for p in pe), None)
    logits = head_logits(model, h[:, :-1])  # [groups * B, T-1, V]
    target = ids[:, 1:].repeat(groups, 1)
    tmask = (mask[:, 1:] * mask[:, :-1]).float().repeat(groups, 1)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    summed = (nll * tmask).sum(-1).view(groups, B)
    n = tmask[:B].sum(-1).clamp(min=1)
    return summed / n, n


def _loss(kind: str, model, top, hidden, pe, ids, mask, y, gen_weight: float, scale=None):
    import torch

    if kind == "experts":  # first half (non-toxic rows) through adapter 0, second through 1
        nll, _ = _class_nll(model, top, hidden, pe, ids, mask, groups=1)
        return nll[0].mean()
    # gedi: every row under both codes: [2, B], row 0 = non-toxic adapter
    nll, _ = _class_nll(model, top, hidden, pe, ids, mask, groups=2)
    own = torch.where(y.bool(), nll[1], nll[0])
    class_logits = -nll if scale is None else -nll * scale  # GeDi's class logits (x logit_scale)
    logpost = class_logits - torch.logsumexp(class_logits, dim=0, keepdim=True)  # log P(class | x)
    disc = -torch.where(y.bool(), logpost[1], logpost[0])
    return gen_weight * own.mean() + (1 - gen_weight) * disc.mean()


def _mean(values: list[float]) -> float:
    return round(sum(values) / max(1, len(values)), 4)


def train_adapters(config: ExpertsConfig, kind: str) -> Path:
    """Two LoRA adapters on the top `layers` layers of the generator, saved in PEFT's format
    (adapter_config.json + adapter_model.safetensors per adapter, detoxkit.json). Resumes from
    <out>/checkpoints when they are there."""
    import torch

    from ..methods.experts import model_key
    from ..methods.lora import TopLayers
    from .lm_checkpoint import resume_losses, save_checkpoint, settings_digest
    from .lm_adapter import finished_output

    t0 = time.time()
    gen_weight = getattr(config, "gen_weight", 0.0)
    lm = load_generator(config)
    out = output_path(model_key(lm), config.out, f"methods/{kind}")
    # what the adapters depend on: settings and the base weights (a changed base under the same
    # name must neither resume nor pass for done)
    record = {**settings_record(config, EXECUTION_ONLY), "kind": kind, "base_revision": lm.revision}
    digest = settings_digest(record)
    if finished_output(out, digest):
        log.info("%s already holds these %s adapters: nothing to do", out, kind)
        return out
    torch.manual_seed(config.seed)
    model, tok = lm.model, lm.tokenizer  # shared with other users of load_lm: restored below
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    trainable = torch.nn.Module()  # every trainable tensor, named, for lm_checkpoint
    trainable.top = top = TopLayers(model, config.layers, config.rank, scaling=2.0, trainable=True)
    top.train()
    params = [t for _, _, m in top.lora_modules() for t in (m.lora_A, m.lora_B)]
    scale = None
    if kind == "gedi" and getattr(config, "logit_scale", False):
        scale = torch.nn.Parameter(torch.ones((), device=model.device))  # as GeDi: starts at 1
        trainable.logit_scale = scale
        params.append(scale)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    steps = config.steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 10) * max(0.1, 1 - s / max(steps, 1)))
    data = training_rows(config.rows, config.seed, balance=True, half=config.corpus_half)
    eos = tok.eos_token or ""
    texts = [clean_text(r.text) + eos for r in data]
    labels = [int(r.is_offensive) for r in data]  # 1 = toxic
    names = ("expert", "antiexpert") if kind == "experts" else ("nontoxic", "toxic")
    folder = out / "checkpoints"
    start, history, wall_before, ckpt = resume_losses(folder, trainable, opt, sched, digest)
    if ckpt is not None:
        log.info("resuming %s adapters from %s (step %d of %d)", kind, ckpt, start, steps)
    was_training = model.training
    model.eval()
    batches = _batch_rows(labels, config.batch, config.seed)
    for _ in range(start):  # the batches the checkpoint has read
        next(batches)
    bar = Progress(steps, f"{kind} adapters", unit="steps", initial=start)
    for step in range(start, steps):
        ids, mask, y = (t.to(model.device) for t in _encode(next(batches), texts, labels, tok,
                                                             config.max_len))
        hidden, pe = _lower_hidden(model, top.first, ids, mask)
        loss = _loss(kind, model, top, hidden, pe, ids, mask, y, gen_weight, scale)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        bar.update(1)
        if (step + 1) % 10 == 0:
            bar.note(f"loss {_mean(history[-10:]):.4f}")
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and step + 1 < steps:
            save_checkpoint(folder, step + 1, trainable, opt, sched,
                            {"config_hash": digest, "config": record, "losses": history,
                             "wall_s": wall_before + time.time() - t0})
    bar.close()
    model.train(was_training)
    for p, flag in frozen:
        p.requires_grad_(flag)
    extra: dict[str, Any] = {"base_model": lm.name, "base_revision": lm.revision, "kind": kind,
                             "rows": len(data), "steps": steps, "batch": config.batch,
                             "max_len": config.max_len, "lr": config.lr, "seed": config.seed,
                             "seconds": round(wall_before + time.time() - t0, 1),
                             "loss_first10": _mean(history[:10]), "loss_last10": _mean(history[-10:]),
                             "created_by": f"detoxkit train {kind}", "command": command_line(kind, config),
                             "guided_by": corpus_guided_by(config.corpus_half),
                             "config": record, "config_hash": digest}
    if kind == "gedi":
        extra["gen_weight"] = gen_weight
        if scale is not None:
            extra["logit_scale"] = round(float(scale.detach()), 6)
    top.save_adapters(out, names, lm.name, extra)
    shutil.rmtree(folder, ignore_errors=True)  # the adapters are whole: checkpoints are spent
    log.info("%s adapters -> %s", kind, out)
    return out


def train_experts(config: ExpertsConfig) -> Path:
    """DExperts: adapter "expert" on non-toxic rows, "antiexpert" on toxic rows, each with the
    plain LM loss. The lower layers run once per batch without gradients."""
    return train_adapters(config, "experts")


def train_gedi(config: GeDiConfig) -> Path:
    """GeDi: adapters "nontoxic" / "toxic" as one class-conditional LM trained on every row
    with the hybrid loss gen_weight * NLL(x | true class) + (1 - gen_weight) *
    -log P(true class | x), P(class | x) by Bayes' rule over the two classes'
    length-normalised likelihoods times a learned logit_scale (GeDi's train_GeDi.py:
    class logits -mean NLL x logit_scale, loss CE x (1 - gen_weight) + gen_weight x the
    true class's mean NLL). The whole row is scored (no prompt / continuation split), as
    gedi's paper mode scores prompt and continuation."""
    return train_adapters(config, "gedi")


EXPERTS = Trainer("experts", ExpertsConfig, train_experts)
GEDI = Trainer("gedi", GeDiConfig, train_gedi)
