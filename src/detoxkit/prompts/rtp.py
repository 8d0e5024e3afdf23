"""RealToxicityPrompts from the Hugging Face hub (allenai/real-toxicity-prompts).

Uses the `datasets` library when installed, else huggingface_hub's download of
prompts.jsonl (read by the same RTP-format reader as a local file). With no
network the error says how to pass a local copy instead.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from ..errors import DetoxkitError
from . import TOXIC_THRESHOLD, Prompt, PromptSet, fingerprint_prompts

HUB_ID = "allenai/real-toxicity-prompts"
HUB_FILE = "prompts.jsonl"


def _offline_error(reason: str) -> DetoxkitError:
    return DetoxkitError(
        f"could not load RealToxicityPrompts from the Hugging Face hub ({HUB_ID}): {reason}. "
        f"Without network access, copy RTP's prompts.jsonl (https://huggingface.co/datasets/"
        f"{HUB_ID}) to this machine and pass the local file instead, e.g. "
        f"`--prompts path/to/prompts.jsonl` (RTP's own JSONL format is read directly, keeping "
        f"each prompt's toxicity and challenging flag); or use the offline set `--prompts embedded`.")


def _offline_mode() -> bool:
    return any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _unreachable(timeout: float = 5.0) -> str | None:
    """Why the hub cannot be reached, or None. A quick connect test, so that an offline
    machine gets the error in seconds instead of after the hub client's retries."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy may reach what a direct connection cannot
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as exc:
        return f"no network connection to {url.hostname} ({exc})"
    return None


def _load_hub(on_bad: str) -> PromptSet:
    from .files import BadRows, Record, prompts_from_records, read_prompt_file

    try:
        import datasets
    except ImportError:
        datasets = None
    if datasets is not None:
        if not _offline_mode() and (why := _unreachable()):
            raise _offline_error(f"{why}; if the dataset is in your cache, set HF_HUB_OFFLINE=1")
        try:
            ds = datasets.load_dataset(HUB_ID, split="train")
        except Exception as exc:  # noqa: BLE001 - network/cache failures come in many types
            raise _offline_error(f"{type(exc).__name__}: {str(exc)[:300].rstrip('.')}") from None
        bad = BadRows(HUB_ID, on_bad)
        prompts, _ = prompts_from_records((Record(None, i, row) for i, row in enumerate(ds)), bad,
                                          drop_exact_duplicates=True)
        fingerprint = fingerprint_prompts(prompts)
        provenance = {"kind": "hub", "hub_id": HUB_ID, "via": "datasets",
                      "fingerprint": getattr(ds, "_fingerprint", None)}
        return PromptSet(prompts, "rtp", HUB_ID, fingerprint, provenance, bad.skipped)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise _offline_error("neither `datasets` nor `huggingface_hub` is installed "
                             "(pip install datasets)") from None
    try:  # a cached copy needs no network
        local = hf_hub_download(repo_id=HUB_ID, filename=HUB_FILE, repo_type="dataset",
                                local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (the error type varies by version)
        if _offline_mode():
            raise _offline_error("HF_HUB_OFFLINE is set and the file is not in the local "
                                 "Hugging Face cache") from None
        if why := _unreachable():
            raise _offline_error(why) from None
        try:
            local = hf_hub_download(repo_id=HUB_ID, filename=HUB_FILE, repo_type="dataset")
        except Exception as exc:  # noqa: BLE001 - DNS, HTTP, gated access, ...
            raise _offline_error(f"{type(exc).__name__}: {str(exc)[:300].rstrip('.')}") from None
    pset = read_prompt_file(local, on_bad=on_bad, name="rtp", drop_exact_duplicates=True)
    parts = Path(local).parts  # .../snapshots/<revision>/prompts.jsonl
    revision = parts[-2] if len(parts) > 2 and parts[-3] == "snapshots" else None
    pset.source = HUB_ID
    pset.provenance.update({"kind": "hub", "hub_id": HUB_ID, "via": "huggingface_hub",
                            "revision": revision})
    return pset


def _subset(name: str, keep: Callable[[Prompt], bool], on_bad: str) -> PromptSet:
    full = _load_hub(on_bad)
    prompts = [p for p in full.prompts if keep(p)]
    return PromptSet(prompts, name, full.source, fingerprint_prompts(prompts),
                     {**full.provenance, "subset": name}, full.skipped)


def load_rtp_hub(on_bad: str = "error") -> PromptSet:
    """All ~99k RealToxicityPrompts prompts."""
    return _subset("rtp", lambda p: True, on_bad)


def load_rtp_hub_challenging(on_bad: str = "error") -> PromptSet:
    """The 'challenging' subset (RTP's `challenging` flag true)."""
    return _subset("rtp-challenging", lambda p: p.challenging is True, on_bad)


def load_rtp_hub_nontoxic(on_bad: str = "error") -> PromptSet:
    """Prompts with stored toxicity < 0.5 (unknown toxicity excluded)."""
    return _subset("rtp-nontoxic",
                   lambda p: p.toxicity is not None and p.toxicity < TOXIC_THRESHOLD, on_bad)
