"""Run configuration: defaults follow the RealToxicityPrompts protocol.

A config comes from a YAML file and/or CLI flags (flags win). Its hash covers
every field that changes the samples or their scores, so a run directory can
tell whether the same command is being resumed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError

DEFAULT_MODEL = "smollm2-135m"
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE = re.compile(r"cpu|auto|mps|cuda(:\d+)?")
DEFAULT_PROMPTS = "embedded"


def default_scorer() -> str:
    from .scorers import DEFAULT_SCORER

    return DEFAULT_SCORER


@dataclass
class RunConfig:
    model: str = DEFAULT_MODEL
    adapter: str | None = None  # a trained adapter directory applied to the model (hf backend)
    prompts: str = DEFAULT_PROMPTS
    text_field: str | None = None  # text column of generic prompt files
    group_field: str | None = None  # group column of generic prompt files (default "group")
    limit: int | None = None  # stratified, seeded subset of the prompts
    samples: int = 25  # k samples per prompt
    max_new_tokens: int = 20
    top_p: float = 0.9
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0
    methods: list[str] = field(default_factory=lambda: ["none"])  # applied in order
    scorers: list[str] = field(default_factory=list)  # first one judges; empty = default
    oracle: str = "auto"  # perplexity LM: auto | none | a model spec
    on_bad: str = "error"  # bad prompts: error | skip (skips are counted)
    prompt_format: str = "raw"  # raw: continue the text | chat: a user turn (see detoxkit/chat.py)
    instruction: str | None = None  # chat: the user turn around the prompt (None: the default)
    system_prompt: str | None = None  # chat: an optional system turn
    # execution only: do not change the samples, so they are not hashed
    device: str = "cpu"
    dtype: str = "auto"
    batch_size: int = 0  # sequences per forward; 0 = choose automatically
    out: str | None = None
    base_url: str | None = None  # API backends: the server
    api_key_env: str = "OPENAI_API_KEY"  # API backends: the variable holding the key
    api_concurrency: int = 8  # API backends: requests in flight
    api_rps: float = 0.0  # API backends: requests started per second (0: no cap)
    api_timeout: float = 60.0  # API backends: seconds per request
    api_retries: int = 5  # API backends: retries of a failed request
    api_samples_per_request: int = 1  # API backends: `n` per request (1: each sample its seed)
    executor: str = "local"  # local: this process | ray: a pool of Ray actors
    ray_address: str | None = None  # ray: a cluster's address (None: start a local one)
    workers: int = 2  # ray: actors, each with its own copy of the model
    worker_gpus: float = 0.0  # ray: GPUs per actor

    EXECUTION_FIELDS = ("device", "dtype", "batch_size", "out", "base_url", "api_key_env",
                        "api_concurrency", "api_rps", "api_timeout", "api_retries",
                        "api_samples_per_request", "executor", "ray_address", "workers",
                        "worker_gpus")
    # Fields added after runs existed: left out of the hash at their default, so that those
    # runs keep their hash and resume.
    HASHED_UNLESS_DEFAULT = {"prompt_format": "raw", "instruction": None, "system_prompt": None,
                             "adapter": None, "group_field": None}

    def __post_init__(self):
        if not self.scorers:
            self.scorers = [default_scorer()]
        if isinstance(self.methods, str):
            self.methods = [self.methods]
        if isinstance(self.scorers, str):
            self.scorers = [self.scorers]
        self.validate()

    def validate(self) -> None:
        """Every value checked before anything is loaded or written (one error each)."""
        if self.on_bad not in ("error", "skip"):
            raise InputError(f"must be 'error' or 'skip', not {self.on_bad!r}", field="on_bad")
        for name in ("samples", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise InputError(f"must be >= 1, not {getattr(self, name)}", field=name)
        if self.limit is not None and self.limit < 1:
            raise InputError(f"must be >= 1, not {self.limit}", field="limit")
        if not 0.0 < self.top_p <= 1.0:
            raise InputError(f"must be in (0, 1], not {self.top_p}", field="top_p")
        if self.temperature < 0:
            raise InputError(f"must be >= 0 (0 = greedy), not {self.temperature}", field="temperature")
        for name in ("top_k", "batch_size"):
            if getattr(self, name) < 0:
                raise InputError(f"must be >= 0 (0 = {'off' if name == 'top_k' else 'automatic'}), "
                                 f"not {getattr(self, name)}", field=name)
        if self.dtype not in DTYPES:
            raise InputError(f"must be one of {', '.join(DTYPES)}, not {self.dtype!r}", field="dtype")
        if not DEVICE.fullmatch(str(self.device)):
            raise InputError(f"must be cpu, cuda, cuda:N, mps or auto, not {self.device!r}",
                             field="device")
        if self.prompt_format not in ("raw", "chat"):
            raise InputError(f"must be raw or chat, not {self.prompt_format!r}", field="prompt_format")
        if self.prompt_format == "raw" and (self.instruction or self.system_prompt):
            raise InputError("applies to --prompt-format chat only",
                             field="instruction" if self.instruction else "system_prompt")
        if self.instruction is not None and "{prompt}" not in self.instruction:
            raise InputError("must hold {prompt}, where the prompt's text goes", field="instruction")
        if self.executor not in ("local", "ray"):
            raise InputError(f"must be local or ray, not {self.executor!r}", field="executor")
        if self.worker_gpus < 0:
            raise InputError(f"must be >= 0, not {self.worker_gpus}", field="worker_gpus")
        for name in ("api_concurrency", "api_samples_per_request", "workers"):
            if getattr(self, name) < 1:
                raise InputError(f"must be >= 1, not {getattr(self, name)}", field=name)
        if self.api_rps < 0 or self.api_timeout <= 0 or self.api_retries < 0:
            bad = "api_rps" if self.api_rps < 0 else "api_timeout" if self.api_timeout <= 0 else "api_retries"
            raise InputError(f"out of range ({getattr(self, bad)})", field=bad)
        for name in ("methods", "scorers"):
            if not getattr(self, name) or not all(isinstance(x, str) and x.strip()
                                                   for x in getattr(self, name)):
                raise InputError("must be a non-empty list of specs", field=name)

    def hashed_fields(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in self.EXECUTION_FIELDS
                and not (k in self.HASHED_UNLESS_DEFAULT and v == self.HASHED_UNLESS_DEFAULT[k])}

    def config_hash(self) -> str:
        blob = json.dumps(self.hashed_fields(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False)


def config_fields() -> dict[str, Any]:
    return {f.name: f for f in fields(RunConfig)}


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config; unknown keys and wrong types name the file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("config file not found", path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 ({exc.reason})", path=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"not valid YAML ({getattr(exc, 'problem', exc)})", path=str(path),
                         line=mark.line + 1 if mark else None) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("a config file must be a mapping of keys to values", path=str(path))
    lines = _key_lines(text)
    known = config_fields()
    for key, value in data.items():
        if key not in known:
            import difflib

            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise InputError(f"unknown config key{hint}", path=str(path), line=lines.get(key),
                             field=str(key))
        _check_type(key, value, path, lines.get(key))
    return data


def build_config(values: dict[str, Any], config_path: str | Path | None = None,
                 from_file: dict[str, Any] | None = None) -> RunConfig:
    """A RunConfig from merged values; a bad value that came from the config file is reported
    at its file and line."""
    try:
        return RunConfig(**values)
    except InputError as exc:
        key = exc.field
        if (config_path and exc.path is None and key in (from_file or {})
                and values.get(key) == from_file[key]):
            line = _key_lines(Path(config_path).read_text(encoding="utf-8")).get(key)
            raise InputError(exc.reason, path=str(config_path), line=line, field=key) from None
        raise


def _key_lines(text: str) -> dict[str, int]:
    node = yaml.compose(text)
    return {k.value: k.start_mark.line + 1 for k, _ in node.value} if node is not None else {}


def _check_type(key: str, value: Any, path: Path, line: int | None) -> None:
    expected = {
        "limit": (int, type(None)), "samples": int, "max_new_tokens": int, "top_k": int,
        "seed": int, "batch_size": int, "top_p": (float, int), "temperature": (float, int),
        "api_concurrency": int, "api_retries": int, "api_samples_per_request": int,
        "api_rps": (float, int), "api_timeout": (float, int), "workers": int,
        "worker_gpus": (float, int),
        "methods": (list, str), "scorers": (list, str),
    }.get(key, (str, type(None)))
    if isinstance(value, bool) or not isinstance(value, expected):
        raise InputError(f"has the wrong type ({type(value).__name__})", path=str(path),
                         line=line, field=key)


def diff_configs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
