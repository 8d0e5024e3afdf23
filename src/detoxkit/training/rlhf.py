"""`detoxkit train rlhf --reward holistic|fine-grained`: PPO on a LoRA policy with a value head
and a per-token KL penalty to the initial policy (detoxkit's own loop: current TRL releases
ship no PPO trainer for dense per-token rewards).

One step: sample `rollouts_per_prompt` continuations for each of `prompts_per_step` training
prompts with detoxkit's sampler (backends/hf/sampler.py); score them (training/rlhf_rewards.py);
per-token rewards minus kl_coef * (log p - log p_ref), where the reference is the base model
with the adapter disabled (PEFT's disable_adapter: no second copy of the weights); GAE,
whitened advantages; `ppo_epochs` passes over the batch in `minibatches` minibatches of the
clipped policy objective + clipped value loss (training/ppo.py). A checkpoint every
`checkpoint_every` steps (training/lm_checkpoint.py): rerun the same command after a kill and it
continues; the rollouts and minibatch orders depend only on (seed, step), so a resumed run
follows the uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DetoxkitError
from ..progress import Progress
from ..store import write_text_atomic
from .base import (GeneratorConfig, Trainer, command_line, corpus_half_setting, load_generator,
                   set_threads, setting, settings_record)
from .lm_adapter import METADATA_FILE

log = logging.getLogger(__name__)

LOG_FILE = "rlhf_log.jsonl"
CHECKPOINTS = "checkpoints"
VALUE_HEAD = "value_head.safetensors"
# Settings a resumed run may change (the rest must match the checkpoint's run).
RESUMABLE_CHANGES = ("threads", "checkpoint_every", "out", "device")


@dataclass
class RLHFConfig(GeneratorConfig):
    reward: str = setting("fine-grained", "reward: holistic (1 - toxicity of the whole "
                          "continuation, at its last token) or fine-grained (minus each sentence's "
                          "increase in toxicity, at its last token)", choices=("holistic", "fine-grained"))
    scorer: str = setting("detoxkit-minilm", "toxicity scorer giving the reward (a scorer spec); "
                                             "recorded as guiding the trained model")
    reward_weights: str = setting("toxicity=1", "reward terms and weights, TERM=W,...: toxicity "
                                  "(the --reward term), fluency (log p_ref per token, i.e. -NLL "
                                  "under the reference)")
    prompts: str | None = setting(None, "training prompts, a JSONL file (default: --prompt-rows "
                                        "prompts from the corpus's training pool)")
    holdout: str = setting("auto", "evaluation prompt files a --prompts file must not overlap, "
                                   "comma-separated, besides the embedded set (auto: the RTP "
                                   "challenging file where found)")
    prompt_rows: int = setting(400, "prompts taken from the corpus (half toxic rows, half not)")
    corpus_half: str | None = corpus_half_setting()
    steps: int = setting(40, "PPO steps (rollout batches)")
    prompts_per_step: int = setting(8, "prompts per step")
    rollouts_per_prompt: int = setting(2, "continuations sampled per prompt")
    max_new_tokens: int = setting(20, "tokens per continuation")
    max_prompt_tokens: int = setting(32, "prompt tokens kept (the last ones)")
    top_p: float = setting(0.9, "nucleus of the rollouts' sampling")
    temperature: float = setting(1.0, "temperature of the rollouts' sampling (and of log p)")
    ppo_epochs: int = setting(2, "passes over each rollout batch")
    minibatches: int = setting(2, "minibatches per pass")
    lr: float = setting(2e-4, "AdamW learning rate (adapter and value head)")
    max_grad_norm: float = setting(1.0, "gradient clipping norm")
    kl_coef: float = setting(0.1, "KL penalty coefficient (the initial one where adaptive)")
    kl_target: float | None = setting(None, "adaptive KL: target sequence KL in nats (Ziegler et "
                                            "al.'s controller; default: a fixed coefficient)")
    kl_horizon: float = setting(10000, "adaptive KL: horizon in rollouts")
    gamma: float = setting(1.0, "GAE discount")
    lam: float = setting(0.95, "GAE lambda")
    clip_range: float = setting(0.2, "PPO ratio clip")
    clip_range_value: float = setting(0.2, "value clip")
    vf_coef: float = setting(0.1, "value loss weight")
    rank: int = setting(8, "LoRA rank")
    alpha: float = setting(16, "LoRA alpha")
    target_modules: str = setting("q_proj,v_proj", "LoRA target modules, comma-separated")
    seed: int = setting(0, "seed of the prompts, rollouts, minibatches and initialisation")
    threads: int = setting(2, "CPU threads")
    checkpoint_every: int = setting(5, "steps between checkpoints")
    out: str | None = setting(None, "output adapter directory (default: the cache, "
                                    "$DETOXKIT_HOME/adapters/rlhf-<reward>/<model>)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "prompts_per_step", "rollouts_per_prompt", "max_new_tokens",
                     "max_prompt_tokens", "ppo_epochs", "minibatches", "rank", "checkpoint_every",
                     "prompt_rows"):
            if getattr(self, name) < 1:
                raise DetoxkitError(f"--{name.replace('_', '-')} must be >= 1")
        if not self.temperature > 0:
            raise DetoxkitError("--temperature must be > 0 (PPO needs the sampling distribution)")
        if self.minibatches > self.prompts_per_step * self.rollouts_per_prompt:
            raise DetoxkitError("--minibatches must not exceed the rollouts per step")


@dataclass
class Rollouts:
    """One step's batch: prompts left-padded to P columns, responses right-padded to R."""

    input_ids: Any  # [B, P + R]
    attention_mask: Any  # [B, P + R]
    response_mask: Any  # [B, R] float
    prompt_width: int
    texts: list[str]
    tokens: list[list[int]]


def _recipe(config: RLHFConfig) -> str:
    return f"rlhf-{config.reward}"


def _settings(config: RLHFConfig) -> dict[str, Any]:
    return settings_record(config, RESUMABLE_CHANGES)


class Policy:
    """The LM with a LoRA adapter (PEFT) and a value head on its last hidden state."""

    def __init__(self, lm, config: RLHFConfig):
        import torch
        from peft import LoraConfig, get_peft_model

        self.lm, self.model = lm, lm.model
        self.temperature = config.temperature
        text_config = getattr(self.model.config, "get_text_config", lambda: self.model.config)()
        self.softcap = getattr(text_config, "final_logit_softcapping", None)
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        modules = [m.strip() for m in config.target_modules.split(",") if m.strip()]
        lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0,
                          target_modules=modules, task_type="CAUSAL_LM")
        try:
            # the LoRA layers go into lm.model itself: the sampler and forward() use it directly
            self.peft = get_peft_model(self.model, lora)
        except ValueError as exc:
            raise DetoxkitError(f"--target-modules {config.target_modules}: {exc}") from None
        hidden = self.model.get_output_embeddings().weight.shape[1]
        self.value_head = torch.nn.Linear(hidden, 1).to(self.model.device)
        torch.nn.init.zeros_(self.value_head.weight)  # values start at 0
        torch.nn.init.zeros_(self.value_head.bias)
        # one module holding every trainable tensor, for lm_checkpoint's named save and load
        self.trainable = torch.nn.ModuleDict({"policy": self.peft, "value_head": self.value_head})
        self.params = [p for p in self.trainable.parameters() if p.requires_grad]

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.params)

    def forward(self, batch: Rollouts, rows, with_values: bool = True):
        """(log p of each response token [b, R], values [b, R] or None) for the rows."""
        import torch

        from ..tokens import position_ids

        ids, mask = batch.input_ids[rows], batch.attention_mask[rows]
        out = self.model.get_decoder()(input_ids=ids, attention_mask=mask,
                                       position_ids=position_ids(mask), use_cache=False)
        P, R = batch.prompt_width, batch.response_mask.shape[1]
        hidden = out.last_hidden_state[:, P - 1:P + R - 1]  # the states that emit each response token
        logits = self.model.get_output_embeddings()(hidden).float()
        if self.softcap:  # what the model's own forward would do to its logits (Gemma 2)
            logits = torch.tanh(logits / self.softcap) * self.softcap
        logits = logits / self.temperature
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, P:, None]).squeeze(-1)
        values = self.value_head(hidden.float()).squeeze(-1) if with_values else None
        return logp, values

    def restore(self) -> None:
        """Take the adapter out of the shared model (load_lm's cache) and restore its flags."""
        self.peft.unload()
        for p, flag in self.flags:
            p.requires_grad_(flag)
        self.model.eval()


def rollout(policy: Policy, prompts: list[tuple[str, list[int]]], config: RLHFConfig,
            step: int) -> Rollouts:
    """Sample the step's continuations with detoxkit's sampler; EOS, where drawn, is a token."""
    import torch

    from ..backends import Request, SamplingConfig
    from ..backends.hf.sampler import TransformersSampler
    from ..tokens import left_pad

    sampling = SamplingConfig(num_samples=config.rollouts_per_prompt, top_p=config.top_p,
                              max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                              seed=config.seed * 1_000_003 + step)
    sampler = TransformersSampler(policy.lm, sampling)
    requests = [Request(pid, ids, list(range(config.rollouts_per_prompt))) for pid, ids in prompts]
    samples = sampler.generate(requests)
    eos = sampler.eos_ids[0]
    by_id = dict(prompts)
    tokens = [s.token_ids + [eos] if s.finished else list(s.token_ids) for s in samples]
    prompt_ids, prompt_mask = left_pad([by_id[s.prompt_id] for s in samples], sampler.pad_id)
    R = max(len(t) for t in tokens)
    response = torch.full((len(tokens), R), sampler.pad_id, dtype=torch.long)
    response_mask = torch.zeros((len(tokens), R))
    for i, t in enumerate(tokens):
        response[i, :len(t)] = torch.tensor(t)
        response_mask[i, :len(t)] = 1
    device = policy.model.device
    return Rollouts(torch.cat([prompt_ids, response], 1).to(device),
                    torch.cat([prompt_mask, response_mask.long()], 1).to(device),
                    response_mask.to(device), prompt_ids.shape[1], [s.text for s in samples], tokens)


def _chunks(n: int, parts: int) -> list[list[int]]:
    size = math.ceil(n / parts)
    return [list(range(i, min(n, i + size))) for i in range(0, n, size)]


def score_rollouts(batch: Rollouts, policy: Policy, scorer, config: RLHFConfig, weights, kl_coef):
    """Old log p, reference log p, values, per-token rewards (KL included) and the stats."""
    import torch

    from .ppo import kl_per_token
    from .rlhf_rewards import toxicity_rewards

    n = len(batch.tokens)
    with torch.no_grad():
        old = [policy.forward(batch, rows) for rows in _chunks(n, config.minibatches)]
        with policy.peft.disable_adapter():
            ref = [policy.forward(batch, rows, with_values=False)[0]
                   for rows in _chunks(n, config.minibatches)]
    logp = torch.cat([o[0] for o in old])
    values = torch.cat([o[1] for o in old])
    ref_logp = torch.cat(ref)
    mask = batch.response_mask
    decode = lambda ids: policy.lm.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    tox_rewards, toxicity, segments = toxicity_rewards(
        config.reward, batch.tokens, decode, lambda texts: scorer.score(texts)["toxicity"])
    R = mask.shape[1]
    score = torch.tensor([r + [0.0] * (R - len(r)) for r in tox_rewards], device=mask.device)
    score = weights["toxicity"] * score + weights["fluency"] * ref_logp * mask
    kl = kl_per_token(logp, ref_logp, mask)
    rewards = score - kl_coef * kl
    finite = [t for t in toxicity if not math.isnan(t)]
    stats = {"reward_mean": float(score.sum(1).mean()), "kl": float(kl.sum(1).mean()),
             "toxicity": sum(finite) / len(finite) if finite else math.nan,
             "segments_mean": sum(segments) / n, "response_tokens": int(mask.sum())}
    return logp, ref_logp, values, rewards, stats


def ppo_update(policy: Policy, optimizer, batch: Rollouts, old_logp, old_values, rewards,
               config: RLHFConfig, step: int) -> dict[str, float]:
    """GAE on the per-token rewards, then the PPO epochs over shuffled minibatches."""
    import torch

    from .ppo import gae, masked_whiten, ppo_loss

    mask = batch.response_mask
    advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
    advantages = masked_whiten(advantages, mask)
    n = len(batch.tokens)
    totals = {"loss": 0.0, "policy_loss": 0.0, "value_loss": 0.0, "clip_frac": 0.0, "approx_kl": 0.0}
    updates = 0
    for epoch in range(config.ppo_epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(
            config.seed * 7919 + step * 101 + epoch)).tolist()
        for part in _chunks(n, config.minibatches):
            rows = [order[i] for i in part]
            logp, values = policy.forward(batch, rows)
            out = ppo_loss(logp, old_logp[rows], advantages[rows], values, old_values[rows],
                           returns[rows], mask[rows], config.clip_range, config.clip_range_value,
                           config.vf_coef)
            optimizer.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.params, config.max_grad_norm)
            optimizer.step()
            for key, value in (("loss", float(out.loss.detach())), ("policy_loss", out.policy),
                               ("value_loss", out.value), ("clip_frac", out.clip_fraction),
                               ("approx_kl", out.approx_kl)):
                totals[key] += value
            updates += 1
    return {k: v / updates for k, v in totals.items()}


def config_hash(config: RLHFConfig, data_fingerprint: str) -> str:
    record = {**_settings(config), "data_fingerprint": data_fingerprint}
    from .lm_checkpoint import settings_digest

    return settings_digest(record)


def read_log(path: Path, up_to_step: int) -> list[dict]:
    """The step log's entries up to a checkpoint's step (a torn last line is dropped)."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("step", 0) <= up_to_step:
            entries.append(entry)
    return entries


def _resume(out: Path, digest: str, policy: Policy, optimizer, scheduler, kl) -> tuple[int, dict]:
    """Load the newest checkpoint (if any; of the same settings); (steps done, saved state).
    The step log keeps the steps up to it: those after it are redone."""
    from .lm_checkpoint import latest_checkpoint, load_checkpoint

    ckpt = latest_checkpoint(out / CHECKPOINTS)
    entries: list[dict] = []
    state: dict[str, Any] = {"step": 0}
    if ckpt is not None:
        state = load_checkpoint(ckpt, policy.trainable, optimizer, scheduler, digest)
        kl.value = state["kl_coef"]
        entries = read_log(out / LOG_FILE, state["step"])
        log.info("resuming rlhf from %s (step %d)", ckpt, state["step"])
    write_json_lines(out / LOG_FILE, entries)
    return state["step"], state


def write_json_lines(path: Path, entries: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(e) + "\n" for e in entries))


def train_rlhf(config: RLHFConfig) -> Path:
    """PPO with a holistic or fine-grained toxicity reward (Wu et al. 2023): a LoRA adapter in
    PEFT's format, its value head and detoxkit.json. Rerun after a kill to continue."""
    import torch

    from ..scorers import load_scorer
    from .lm_adapter import default_out, finished_output  # the LM recipes' output layout and rerun check
    from .lm_checkpoint import save_checkpoint
    from .ppo import KLController
    from .rlhf_prompts import training_prompts
    from .rlhf_rewards import parse_reward_weights

    t0 = time.time()  # wall_s covers loading the prompts, scorer and model too, as in dapt/sgeat
    set_threads(config.threads)
    weights = parse_reward_weights(config.reward_weights)
    data = training_prompts(config.prompts, config.prompt_rows, config.seed, config.holdout,
                            config.corpus_half)
    out = default_out(_recipe(config), config, config.out)
    digest = config_hash(config, data.fingerprint)
    if finished_output(out, digest):
        log.info("%s already holds this %s model: nothing to do", out, _recipe(config))
        return out
    scorer = load_scorer(config.scorer, device=config.device)
    lm = load_generator(config)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    encoded = [(pid, lm.tokenizer(text, add_special_tokens=True)["input_ids"][-config.max_prompt_tokens:])
               for pid, text in zip(data.ids, data.texts)]
    encoded = [(pid, ids) for pid, ids in encoded if ids]
    if not encoded:
        raise DetoxkitError(f"{data.source}: no prompt has a token")
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(config.seed)).tolist()
    policy = Policy(lm, config)
    try:
        optimizer = torch.optim.AdamW(policy.params, lr=config.lr, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # a constant lr
        kl = KLController(config.kl_coef, config.kl_target, config.kl_horizon)
        start, saved = _resume(out, digest, policy, optimizer, scheduler, kl)
        tokens_seen, wall = saved.get("tokens_seen", 0), saved.get("wall_s", 0.0)
        last: dict[str, Any] = saved.get("last", {})
        bar = Progress(config.steps, _recipe(config), unit="steps", initial=start)
        for step in range(start, config.steps):
            first = step * config.prompts_per_step
            prompts = [encoded[order[(first + i) % len(encoded)]] for i in range(config.prompts_per_step)]
            policy.model.eval()
            batch = rollout(policy, prompts, config, step)
            old_logp, _, old_values, rewards, stats = score_rollouts(batch, policy, scorer, config,
                                                                     weights, kl.value)
            losses = ppo_update(policy, optimizer, batch, old_logp, old_values, rewards, config, step)
            tokens_seen += stats["response_tokens"]
            last = {"step": step + 1, **{k: round(v, 6) for k, v in {**stats, **losses}.items()},
                    "kl_coef": round(kl.value, 6), "wall_s": round(wall + time.time() - t0, 1)}
            with open(out / LOG_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(last) + "\n")
            kl.update(stats["kl"], len(batch.tokens))
            bar.update(1)
            bar.note(f"reward {stats['reward_mean']:.3f}, toxicity {stats['toxicity']:.3f}, "
                     f"kl {stats['kl']:.3f}")
            if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
                save_checkpoint(out / CHECKPOINTS, step + 1, policy.trainable, optimizer, scheduler,
                                {"config_hash": digest, "config": _settings(config),
                                 "kl_coef": kl.value, "last": last, "tokens_seen": tokens_seen,
                                 "wall_s": round(wall + time.time() - t0, 1)})
        bar.close()
        wall += time.time() - t0
        _save_output(out, config, policy, lm, data, scorer, weights, kl, digest,
                     {"resumed_from_step": start or None, "tokens_seen": tokens_seen,
                      "wall_s": round(wall, 1), "last": last})
    finally:
        policy.restore()
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # the result is whole: checkpoints are spent
    log.info("%s adapter -> %s", _recipe(config), out)
    return out


def _save_output(out: Path, config: RLHFConfig, policy: Policy, lm, data, scorer, weights, kl,
                 digest: str, run: dict[str, Any]) -> None:
    """The adapter, its value head and detoxkit.json (lm_adapter.save_lm_adapter: the keys every
    LM recipe records, then the rlhf ones)."""
    from safetensors.torch import save_file

    from .lm_adapter import peak_memory_mb, save_lm_adapter

    save_file({k: v.detach().contiguous() for k, v in policy.value_head.state_dict().items()},
              str(out / VALUE_HEAD))
    last = run["last"]
    meta = {
        "recipe": _recipe(config), "base_model": config.model, "base_revision": lm.revision,
        "data": {"source": data.source, "fingerprint": data.fingerprint, "rows": len(data.texts),
                 "toxic_rows": data.toxic},
        "tokens_seen": run["tokens_seen"], "steps": config.steps, "final_loss": last.get("loss"),
        "wall_s": run["wall_s"], "peak_memory_mb": peak_memory_mb(str(policy.model.device)),
        "trainable_params": policy.trainable_params(),
        "guided_by": [scorer.name, *[g for g in (*scorer.guided_by, *data.guided_by)
                                     if g != scorer.name]],
        "command": command_line("rlhf", config),
        "reward": {"kind": config.reward, "weights": weights, "scorer": config.scorer,
                   "scorer_version": scorer.version,
                   "first_segment_baseline": 0.0 if config.reward == "fine-grained" else None},
        "kl": {"estimator": "k1", "coef_initial": config.kl_coef, "coef_final": round(kl.value, 6),
               "adaptive": config.kl_target is not None, "target": config.kl_target,
               "horizon": config.kl_horizon},
        "ppo": {k: getattr(config, k) for k in ("prompts_per_step", "rollouts_per_prompt",
                                                "ppo_epochs", "minibatches", "lr", "gamma", "lam",
                                                "clip_range", "clip_range_value", "vf_coef",
                                                "max_grad_norm", "max_new_tokens", "top_p",
                                                "temperature", "seed")},
        "lora": {"rank": config.rank, "alpha": config.alpha, "target_modules": config.target_modules},
        "value_head": VALUE_HEAD, "log": LOG_FILE, "resumed_from_step": run["resumed_from_step"],
        "final": last, "config": _settings(config), "config_hash": digest,
        "created_by": "detoxkit train rlhf",
    }
    save_lm_adapter(policy.peft, out, meta)


def report(config: RLHFConfig, path: Path) -> None:
    meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    final = meta.get("final") or {}
    print(f"{path}\n  {meta['recipe']}: {meta['steps']} PPO steps, {meta['tokens_seen']} sampled "
          f"tokens, reward {final.get('reward_mean')}, toxicity {final.get('toxicity')}, "
          f"KL {final.get('kl')} (last step), {meta['trainable_params']} trainable parameters, "
          f"{meta['wall_s']} s, peak memory {meta['peak_memory_mb']} MB, "
          f"{meta.get('weights_mb')} MB of weights")


RLHF = Trainer("rlhf", RLHFConfig, train_rlhf, report)
