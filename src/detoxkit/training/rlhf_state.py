"""Resumable checkpoints of `detoxkit train rlhf`: adapter, value head, optimizer, KL
controller, RNG and step, without pickles.

A checkpoint is a directory `checkpoints/step-NNNNNN` written under a temporary name and
renamed when complete (its state.json last), so a process killed at any moment leaves either
the previous checkpoint or the new one, never a torn one. Optimizer state (AdamW's moments and
step counts) and the torch RNG state are safetensors; the rest is JSON.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

CHECKPOINTS = "checkpoints"
STATE = "state.json"


def _optimizer_tensors(optimizer) -> tuple[dict[str, Any], list[dict]]:
    state = optimizer.state_dict()
    tensors = {f"{index}.{name}": value.detach().clone().contiguous()
               for index, slots in state["state"].items() for name, value in slots.items()}
    return tensors, state["param_groups"]


def _restore_optimizer(optimizer, tensors: dict[str, Any], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(root: Path, step: int, peft_model, value_head, optimizer,
                    state: dict[str, Any]) -> Path:
    """Write checkpoint `step` atomically and drop the older ones."""
    import torch
    from safetensors.torch import save_file

    folder = root / CHECKPOINTS
    final = folder / f"step-{step:06d}"
    tmp = folder / f".step-{step:06d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    peft_model.save_pretrained(str(tmp / "adapter"))
    save_file({k: v.detach().contiguous() for k, v in value_head.state_dict().items()},
              str(tmp / "value_head.safetensors"))
    tensors, groups = _optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    body = json.dumps({**state, "step": step, "optimizer_groups": groups}, indent=1)
    (tmp / STATE).write_text(body, encoding="utf-8")
    if final.exists():  # a rerun writing the same step again
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in folder.iterdir():
        if old != final and (old.name.startswith("step-") or old.name.startswith(".step-")):
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under root, or None."""
    folder = root / CHECKPOINTS
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.iterdir() if p.name.startswith("step-") and (p / STATE).is_file())
    return done[-1] if done else None


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE).read_text(encoding="utf-8"))


def load_checkpoint(checkpoint: Path, peft_model, value_head, optimizer) -> dict[str, Any]:
    """Restore the adapter, value head, optimizer and RNG; return the JSON state."""
    import torch
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = read_state(checkpoint)
    device = next(value_head.parameters()).device
    adapter = load_file(str(checkpoint / "adapter" / "adapter_model.safetensors"), device=str(device))
    set_peft_model_state_dict(peft_model, adapter)
    value_head.load_state_dict(load_file(str(checkpoint / "value_head.safetensors"), device=str(device)))
    _restore_optimizer(optimizer, load_file(str(checkpoint / "optimizer.safetensors")),
                       state["optimizer_groups"])
    torch.set_rng_state(load_file(str(checkpoint / "rng.safetensors"))["torch"])
    return state


def read_log(path: Path, up_to_step: int) -> list[dict]:
    """The step log's entries up to a checkpoint's step (a torn last line is dropped)."""
    entries = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("step", 0) <= up_to_step:
                entries.append(entry)
    return entries


def write_log(path: Path, entries: list[dict]) -> None:
    """Rewrite the step log atomically (on resume: the steps after the checkpoint are redone)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    os.replace(tmp, path)


def append_log(path: Path, entry: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def peak_memory_mb() -> float:
    """The process's peak resident memory (CUDA's peak allocation where a GPU is used)."""
    import resource

    import torch

    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
