"""Hugging Face sequence-classification models as scorers, and Detoxify's models.

``hf:<hub id or local directory>`` loads any ``AutoModelForSequenceClassification``
checkpoint (safetensors only: detoxkit never loads pickled ``.bin``/``.ckpt``
weights). Labels are mapped to detoxkit attributes by name
(``toxic``/``toxicity``/``TOXICITY`` -> toxicity, ``severe_toxic`` ->
severe_toxicity, ``identity_hate`` -> identity_attack, ...); labels that mean
"not toxic" (``neutral``, ``non-toxic``, ``LABEL_0`` of a two-label model, ...) are
dropped; a two-label model whose labels are unnamed (``LABEL_0``/``LABEL_1``) is
read as [not toxic, toxic]. ``labels="name:attribute,..."`` overrides the mapping.
Probabilities are a softmax for single-label models and a sigmoid for
multi-label ones (``config.problem_type``, or ``activation=`` to force one).

``detoxify:<original|unbiased|multilingual>`` are Detoxify's three models through
their Hugging Face copies (unitary/toxic-bert, unitary/unbiased-toxic-roberta,
unitary/multilingual-toxic-xlm-roberta), with Detoxify's label names. Detoxify's
own release files are Lightning pickles and are not loaded. Both need a network
(or a local copy) and a safetensors revision (``revision=`` picks one, e.g. a
``refs/pr/N`` conversion branch).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DetoxkitError
from .base import Scorer

# Label names seen in public toxicity classifiers -> detoxkit attribute (None: "not toxic", dropped).
LABEL_ALIASES: dict[str, str | None] = {
    "toxic": "toxicity", "toxicity": "toxicity", "toxic_comment": "toxicity", "offensive": "toxicity",
    "severe_toxic": "severe_toxicity", "severe_toxicity": "severe_toxicity",
    "obscene": "obscene", "threat": "threat", "insult": "insult", "profanity": "profanity",
    "identity_hate": "identity_attack", "identity_attack": "identity_attack",
    "sexual_explicit": "sexual_explicit", "sexually_explicit": "sexual_explicit",
    "neutral": None, "non-toxic": None, "non_toxic": None, "nontoxic": None, "not_toxic": None,
    "not toxic": None, "normal": None, "clean": None, "none": None, "ok": None, "safe": None,
    "not_offensive": None, "non-offensive": None,
}

DETOXIFY_MODELS = {
    "original": "unitary/toxic-bert",
    "unbiased": "unitary/unbiased-toxic-roberta",
    "multilingual": "unitary/multilingual-toxic-xlm-roberta",
}
DETOXIFY_LANGUAGES = {"original": ("en",), "unbiased": ("en",),
                      "multilingual": ("en", "fr", "es", "it", "pt", "tr", "ru")}


def _normalise(label: str) -> str:
    return str(label).strip().lower().replace(" ", "_")


def parse_label_map(spec) -> dict[str, str | None]:
    """'toxic:toxicity,neutral:-' or a dict -> {model label: attribute or None}."""
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return {str(k): (v or None) for k, v in spec.items()}
    out = {}
    for part in str(spec).split(","):
        if not part.strip():
            continue
        label, sep, attr = part.partition(":")
        if not sep:
            raise DetoxkitError(f"labels wants 'label:attribute,...', not {spec!r}")
        attr = attr.strip()
        out[label.strip()] = None if attr in ("", "-", "none") else attr
    return out


def map_labels(id2label: dict[int, str], override: dict[str, str | None] | None = None
               ) -> list[tuple[int, str]]:
    """[(output index, attribute)] for the outputs that become attributes; toxicity first."""
    override = override or {}
    labels = {int(i): str(name) for i, name in id2label.items()}
    unnamed = all(_normalise(n).startswith("label_") for n in labels.values())
    pairs = []
    for i in sorted(labels):
        name = labels[i]
        if name in override:
            attr = override[name]
        elif unnamed and len(labels) == 2:
            attr = "toxicity" if i == 1 else None
        elif unnamed and len(labels) == 1:
            attr = "toxicity"
        else:
            key = _normalise(name)
            attr = LABEL_ALIASES.get(key, key)
        if attr:
            pairs.append((i, attr))
    attrs = [a for _, a in pairs]
    if "toxicity" not in attrs:
        raise DetoxkitError(f"no model label maps to 'toxicity' (labels: {list(labels.values())}); "
                            "pass labels='<label>:toxicity'")
    if len(set(attrs)) != len(attrs):
        raise DetoxkitError(f"two labels map to the same attribute: {pairs}")
    return sorted(pairs, key=lambda p: p[1] != "toxicity")


class HFClassifierScorer(Scorer):
    """Any Hugging Face sequence-classification model (hub id or local directory; safetensors)."""

    name = "hf"
    attributes = ("toxicity",)
    languages = ("en",)

    def __init__(self, device: str = "cpu", batch_size: int = 32, model: str | None = None,
                 labels=None, activation: str | None = None, revision: str | None = None,
                 max_length: int = 512, languages: str | None = None):
        super().__init__(device, batch_size)
        if not model:
            raise DetoxkitError("the hf scorer needs a model: hf:<hub id or local directory>")
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model_id = str(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_id, revision=revision)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                self.model_id, revision=revision, use_safetensors=True)
        except OSError as exc:
            raise DetoxkitError(
                f"could not load {self.model_id!r} as a sequence-classification model with safetensors "
                f"weights (pickled weights are never loaded; a hub id needs a network): {exc}") from None
        self.model.to(device).eval()
        config = self.model.config
        self.pairs = map_labels(config.id2label, parse_label_map(labels))
        self.attributes = tuple(a for _, a in self.pairs)
        self.index = [i for i, _ in self.pairs]
        if activation is None:
            if config.problem_type == "multi_label_classification":
                activation = "sigmoid"
            elif config.problem_type == "single_label_classification":
                activation = "softmax"
            else:
                activation = "sigmoid" if config.num_labels == 1 or len(self.pairs) > 1 else "softmax"
        if activation not in ("sigmoid", "softmax"):
            raise DetoxkitError(f"activation must be sigmoid or softmax, not {activation!r}")
        self.activation = activation
        self.max_length = min(int(max_length), getattr(self.tokenizer, "model_max_length", 512) or 512)
        if languages:
            self.languages = tuple(x.strip() for x in str(languages).split(",") if x.strip())
        self.name = f"hf:{self.model_id}"
        self.version = f"{self.model_id}@{self._revision(revision)}"
        self.guided_by = (self.model_id,)

    def _revision(self, revision: str | None) -> str:
        path = Path(self.model_id)
        if path.is_dir():
            from ..backends.hf.models import weights_revision

            return weights_revision(path)
        return getattr(self.model.config, "_commit_hash", None) or revision or "main"

    def _score_batch(self, texts):
        import torch

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            logits = self.model(**enc).logits.float()
        if self.activation == "softmax" and logits.shape[-1] > 1:
            probs = torch.softmax(logits, dim=-1)
        else:
            probs = torch.sigmoid(logits)
        probs = probs.double().cpu().numpy()
        return {attr: probs[:, i] for i, attr in self.pairs}


class DetoxifyScorer(HFClassifierScorer):
    """Detoxify's models (original / unbiased / multilingual) via their Hugging Face copies."""

    name = "detoxify"

    def __init__(self, device: str = "cpu", batch_size: int = 32, model: str = "original", **kwargs):
        variant = str(model)
        if variant in DETOXIFY_MODELS:
            hub_id, langs = DETOXIFY_MODELS[variant], DETOXIFY_LANGUAGES[variant]
        elif Path(variant).is_dir():
            hub_id, langs = variant, ("en",)
        else:
            raise DetoxkitError(f"unknown Detoxify model {variant!r}: use one of "
                                f"{', '.join(DETOXIFY_MODELS)} or a local directory")
        kwargs.setdefault("activation", "sigmoid")  # Detoxify: independent sigmoid per label
        super().__init__(device, batch_size, model=hub_id, **kwargs)
        self.languages = langs
        self.name = f"detoxify:{variant}"
        self.version = f"detoxify-{variant} {self.version}"
