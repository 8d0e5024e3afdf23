"""Resumable checkpoints of an LM training run, in safetensors and JSON only (no pickles).

A checkpoint holds the trainable weights, AdamW's moments, the scheduler, the RNG states and
the data position (the step: training/lm_data.step_blocks reads blocks as a function of it).
Each is written to a temporary directory, renamed to `step-<N>`, and only then named in
`latest` (itself replaced atomically), so a kill at any moment leaves the previous checkpoint
whole; older ones are removed after.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

from ..errors import DetoxkitError

LATEST = "latest"


def settings_digest(record: dict[str, Any]) -> str:
    """The fingerprint of the settings a training depends on: its checkpoints and its finished
    output carry it, so that other settings neither resume nor pass for done."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(folder: Path, step: int, model, optimizer, scheduler,
                    state: dict[str, Any]) -> Path:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step}"
    tmp = folder / f".tmp-step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    save_file({n: p.detach().contiguous() for n, p in named.items()}, str(tmp / "weights.safetensors"))
    index = {id(p): n for n, p in named.items()}
    opt = optimizer.state_dict()
    moments, slots = {}, []
    for group in optimizer.param_groups:
        for p in group["params"]:
            slots.append(index[id(p)])
    for i, st in opt["state"].items():
        for k, v in st.items():
            moments[f"{slots[i]}::{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
    save_file(moments or {"none": torch.zeros(1)}, str(tmp / "optimizer.safetensors"))
    save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    meta = {"step": step, "slots": slots, "param_groups": opt["param_groups"],
            "scheduler": scheduler.state_dict(), "python_rng": random.getstate(), **state}
    (tmp / "state.json").write_text(json.dumps(meta, default=_jsonable), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = folder / (LATEST + ".tmp")
    pointer.write_text(final.name, encoding="utf-8")
    os.replace(pointer, folder / LATEST)
    for old in folder.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    pointer = folder / LATEST
    if not pointer.exists():
        return None
    path = folder / pointer.read_text(encoding="utf-8").strip()
    return path if (path / "state.json").exists() else None


def resume_losses(folder: Path, model, optimizer, scheduler,
                  config_hash: str) -> tuple[int, list[float], float, Path | None]:
    """(steps done, their losses, wall seconds before, the checkpoint) of the newest checkpoint
    in `folder`, restored into model, optimizer and scheduler; (0, [], 0.0, None) without one.
    For trainings that save `losses` and `wall_s` with each checkpoint."""
    ckpt = latest_checkpoint(folder)
    if ckpt is None:
        return 0, [], 0.0, None
    meta = load_checkpoint(ckpt, model, optimizer, scheduler, config_hash)
    return meta["step"], meta["losses"], meta["wall_s"], ckpt


def load_checkpoint(path: Path, model, optimizer, scheduler, config_hash: str) -> dict[str, Any]:
    """Restore a checkpoint into model, optimizer and scheduler (and the RNGs); returns its
    state.json. A checkpoint of other settings is refused."""
    import torch
    from safetensors.torch import load_file

    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if meta.get("config_hash") != config_hash:
        raise DetoxkitError(
            f"{path.parent} holds a checkpoint of a run with other settings (was "
            f"{json.dumps(meta.get('config'))[:400]}): rerun with those settings to resume it, or "
            f"remove {path.parent} (or use another --out) to start over")
    weights = load_file(str(path / "weights.safetensors"))
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != set(named):
        raise DetoxkitError(f"{path}: its weights do not match this model's trainable parameters")
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(weights[n].to(p.dtype))
    moments = load_file(str(path / "optimizer.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for i, name in enumerate(meta["slots"]):
        entry = {k.split("::", 1)[1]: v for k, v in moments.items() if k.split("::", 1)[0] == name}
        if entry:
            state[i] = entry
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch"])
    random.setstate(_python_state(meta["python_rng"]))
    return meta


def _python_state(value):
    """random.getstate() after a JSON round trip (tuples became lists)."""
    version, internal, gauss = value
    return version, tuple(internal), gauss


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    return str(value)
