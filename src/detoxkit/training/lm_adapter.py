"""Adapters trained on a causal LM (dapt, sgeat, rlhf): the one place that writes them and the
one place that reads and applies them (`detoxkit run --adapter DIR`).

An adapter directory holds PEFT's files (adapter_config.json + adapter_model.safetensors, from
`save_pretrained`) and `detoxkit.json`, the metadata every recipe writes (METADATA_KEYS). A full
fine-tune is a model directory (config.json + model.safetensors + tokenizer) with the same
detoxkit.json; it loads with `--model DIR`. detoxkit.json is written last, so its presence
means the directory is complete.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DetoxkitError
from ..store import write_json_atomic

METADATA_FILE = "detoxkit.json"


# The keys every LM-training recipe records (shared by dapt, sgeat and rlhf).
METADATA_KEYS = ("recipe", "base_model", "base_revision", "data", "tokens_seen", "steps",
                 "final_loss", "wall_s", "peak_memory_mb", "trainable_params", "guided_by",
                 "command")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def default_out(recipe: str, config: Any, out: str | None) -> Path:
    """Where an LM recipe writes its model: `out`, else the cache's adapters/<recipe>/<model>."""
    from ..artefacts import output_path

    key = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(config.model)).name)[-48:]
    return output_path(key, out, f"adapters/{recipe}")


def finished_output(out: Path, config_hash: str) -> bool:
    """Whether `out` already holds the model of this config (a rerun has nothing to do); a model
    of other settings or data there is an error."""
    path = out / METADATA_FILE
    if not path.exists():
        return False
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("config_hash") != config_hash:
        raise DetoxkitError(f"{out} already holds a model trained with other settings or data "
                            f"({meta.get('command')}): use another --out, or remove it to retrain")
    return True


# ---- writing ----------------------------------------------------------------------------

def save_lm_adapter(model, out_dir: str | Path, metadata: dict[str, Any], tokenizer=None) -> Path:
    """Save a trained model and its metadata into `out_dir`.

    `model` is a PEFT model (its adapter is saved with `save_pretrained`: PEFT's format) or,
    for a full fine-tune, a plain transformers model (saved whole, in safetensors, with
    `tokenizer`). `metadata` must hold METADATA_KEYS; "format" and the detoxkit version are
    added. Returns out_dir."""
    missing = [k for k in METADATA_KEYS if k not in metadata]
    if missing:
        raise ValueError(f"adapter metadata lacks {', '.join(missing)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / METADATA_FILE).unlink(missing_ok=True)  # an incomplete directory has none
    is_peft = hasattr(model, "peft_config")
    if is_peft:
        model.save_pretrained(str(out), safe_serialization=True)
    else:
        if tokenizer is None:
            raise ValueError("a full fine-tune is saved with its tokenizer")
        model.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out))
    meta = {**metadata, "format": "peft" if is_peft else "full", "weights_mb": weights_mb(out),
            "detoxkit_version": _version()}
    write_json_atomic(out / METADATA_FILE, meta)
    return out


def peak_memory_mb(device: str = "cpu") -> float:
    """Peak memory of this process: CUDA memory allocated on a GPU, else the resident set."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def trainable_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def weights_mb(path: Path) -> float:
    """Size of the saved weights (*.safetensors) of an adapter or model directory."""
    return round(sum(f.stat().st_size for f in Path(path).glob("*.safetensors")) / 2**20, 3)


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("detoxkit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ---- reading and applying ---------------------------------------------------------------

@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    metadata: dict[str, Any]
    fingerprint: str  # sha256 over the adapter's config and weights

    @property
    def guided_by(self) -> list[str]:
        return list(self.metadata.get("guided_by") or [])

    def describe(self) -> dict[str, Any]:
        """What run.json records about the adapter."""
        return {"path": str(self.path), "fingerprint": self.fingerprint, "metadata": self.metadata}


def read_adapter(path: str | Path) -> AdapterInfo:
    """A trained adapter directory, checked: PEFT's files in safetensors and detoxkit.json."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DetoxkitError(f"adapter {p}: no such directory")
    files = {f.name for f in p.iterdir()}
    if "adapter_config.json" not in files:
        if "config.json" in files:
            raise DetoxkitError(f"{p} is a model directory, not an adapter (no adapter_config.json): "
                                f"a full fine-tune loads with --model {p}")
        raise DetoxkitError(f"{p} is not an adapter directory: it has no adapter_config.json "
                            f"(train one with `detoxkit train dapt` or `detoxkit train sgeat`)")
    if "adapter_model.safetensors" not in files:
        pickled = sorted(f for f in files if f.startswith("adapter_model."))
        why = (f" (only {', '.join(pickled)}: detoxkit loads safetensors only, since a pickle "
               f"can run code when loaded)") if pickled else ""
        raise DetoxkitError(f"{p} has no adapter_model.safetensors{why}")
    if METADATA_FILE not in files:
        raise DetoxkitError(f"{p} has no {METADATA_FILE}: detoxkit cannot tell which base model it "
                            f"was trained for (or its training stopped before the end)")
    try:
        meta = json.loads((p / METADATA_FILE).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DetoxkitError(f"{p / METADATA_FILE}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or "base_revision" not in meta:
        raise DetoxkitError(f"{p / METADATA_FILE} has no base_revision: not a detoxkit LM adapter")
    return AdapterInfo(p.resolve(), meta, adapter_fingerprint(p))


def read_trained_model(spec: str) -> AdapterInfo | None:
    """A full fine-tune given as --model DIR (a model directory with detoxkit.json of format
    full): its metadata, for run.json and the hygiene check; None for any other model."""
    p = Path(str(spec)).expanduser()
    meta_file = p / METADATA_FILE
    if not (p / "config.json").is_file() or not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if not isinstance(meta, dict) or meta.get("format") != "full":
        return None
    from ..backends.hf.models import weights_revision

    return AdapterInfo(p.resolve(), meta, weights_revision(p))


def adapter_fingerprint(path: Path) -> str:
    from ..artefacts import file_sha256

    joined = "\n".join(f"{name}:{file_sha256(Path(path) / name)}" for name in ADAPTER_FILES)
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()[:16]


def check_base(info: AdapterInfo, lm) -> None:
    """Refuse an adapter trained on another base model (its weights' revision differs)."""
    meta = info.metadata
    if meta.get("base_revision") != lm.revision:
        raise DetoxkitError(
            f"adapter {info.path} was trained for {meta.get('base_model')} "
            f"(revision {meta.get('base_revision')}), not for {lm.name} (revision {lm.revision}): "
            f"evaluate it with --model {meta.get('base_model')}, or train one for this model")


_ADAPTED: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def load_adapted_lm(spec: str, adapter: str | Path, device: str = "cpu", dtype: str = "float32"):
    """The model `spec` with the adapter applied: a LoadedLM of its own (the shared base model is
    left as it is), the LoRA weights merged into a copy of the base weights, so that decoding
    methods see a plain transformers model. Cached per (spec, device, dtype, adapter content)."""
    from ..backends.hf import load_lm

    info = read_adapter(adapter)
    base = load_lm(spec, device=device, dtype=dtype)
    check_base(info, base)
    key = (spec, base.device, base.dtype, str(info.path), info.fingerprint)
    with _LOCK:
        if key not in _ADAPTED:
            _ADAPTED[key] = _merged(base, info)
        return _ADAPTED[key]


def _merged(base, info: AdapterInfo):
    from dataclasses import replace

    from peft import PeftModel

    model = copy.deepcopy(base.model)
    try:
        with warnings.catch_warnings():  # PEFT calls a transformers method deprecated in v5
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = PeftModel.from_pretrained(model, str(info.path), is_trainable=False)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise DetoxkitError(f"cannot apply adapter {info.path} to {base.name}: {exc}") from None
    merged = peft_model.merge_and_unload().eval()
    summary = {"path": str(info.path), "fingerprint": info.fingerprint,
               "recipe": info.metadata.get("recipe")}
    return replace(base, model=merged, info={**base.info, "adapter": summary})


def clear_adapted() -> None:
    with _LOCK:
        _ADAPTED.clear()
