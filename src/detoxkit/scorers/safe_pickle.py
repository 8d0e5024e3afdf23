"""Restricted unpicklers for the two third-party pickles detoxkit must read once.

detoxkit never loads an untrusted pickle with the stock unpickler. Two packages
ship their artefacts only as pickles: alt-profanity-check (joblib files of a
scikit-learn TfidfVectorizer and CalibratedClassifierCV) and
toxic-comment-classifier (a Keras Tokenizer). Each is read exactly once, by an
unpickler whose find_class admits only an explicit allow-list of classes (and,
for joblib, no object-dtype arrays, whose payload joblib would hand to the
unrestricted pickle module); the result is converted to JSON + safetensors in
detoxkit's cache, and only those files are read afterwards.
"""

from __future__ import annotations

import pickle
from typing import BinaryIO, Iterable

from ..errors import DetoxkitError


class ForbiddenPickle(DetoxkitError):
    """The pickle references a class outside the allow-list."""


def _allowed(module: str, name: str, allow: set[tuple[str, str]]) -> bool:
    return (module, name) in allow


class _KerasTokenizerState:
    """Stand-in for keras' Tokenizer: keeps the pickled __dict__ and nothing else."""

    def __init__(self, *args, **kwargs):
        self.state: dict = {}

    def __setstate__(self, state):
        self.state = dict(state)


KERAS_TOKENIZER_CLASSES = {
    ("keras.src.legacy.preprocessing.text", "Tokenizer"),
    ("keras.preprocessing.text", "Tokenizer"),
    ("keras_preprocessing.text", "Tokenizer"),
}
KERAS_TOKENIZER_ALLOW = {("collections", "OrderedDict"), ("collections", "defaultdict"),
                         ("builtins", "int"), ("builtins", "dict"), ("builtins", "list")}


class _KerasTokenizerUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in KERAS_TOKENIZER_CLASSES:
            return _KerasTokenizerState
        if _allowed(module, name, KERAS_TOKENIZER_ALLOW):
            return super().find_class(module, name)
        raise ForbiddenPickle(f"refusing to unpickle {module}.{name}: not on the allow-list")


def load_keras_tokenizer_state(fh: BinaryIO) -> dict:
    """The attribute dict of a pickled keras Tokenizer, without keras and without running code."""
    obj = _KerasTokenizerUnpickler(fh).load()
    if not isinstance(obj, _KerasTokenizerState):
        raise ForbiddenPickle(f"expected a keras Tokenizer, found {type(obj).__name__}")
    return obj.state


SKLEARN_PROFANITY_ALLOW = {
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("numpy", "dtype"), ("numpy", "ndarray"), ("numpy", "float64"), ("numpy", "int64"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("sklearn.feature_extraction.text", "TfidfVectorizer"),
    ("sklearn.feature_extraction.text", "TfidfTransformer"),
    ("sklearn.calibration", "CalibratedClassifierCV"),
    ("sklearn.calibration", "_CalibratedClassifier"),
    ("sklearn.calibration", "_SigmoidCalibration"),
    ("sklearn.svm._classes", "LinearSVC"),
}


def load_joblib_restricted(path: str, allow: Iterable[tuple[str, str]] = SKLEARN_PROFANITY_ALLOW):
    """joblib.load with an allow-list of classes and no object arrays."""
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    allow = set(allow)

    class _Restricted(NumpyUnpickler):
        def find_class(self, module, name):
            if not _allowed(module, name, allow):
                raise ForbiddenPickle(f"refusing to unpickle {module}.{name}: not on the allow-list")
            return super().find_class(module, name)

        dispatch = dict(NumpyUnpickler.dispatch)

    def _guarded_build(self):
        stack = self.stack
        state = stack[-1]
        inst = stack[-2] if len(stack) > 1 else None
        if isinstance(inst, NumpyArrayWrapper) and isinstance(state, dict):
            dtype = state.get("dtype")
            if dtype is not None and getattr(dtype, "hasobject", False):
                raise ForbiddenPickle("refusing an object-dtype array inside a joblib file")
        return NumpyUnpickler.load_build(self)

    _Restricted.dispatch[pickle.BUILD[0]] = _guarded_build
    with open(path, "rb") as fh:
        return _Restricted(path, fh, True).load()
