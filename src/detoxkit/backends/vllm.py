"""The vllm backend: `--model vllm:PATH_OR_ID` samples with vLLM's engine on a GPU.

Each sample is its own vLLM request with its own seed (`sample_seed`, as the other
backends), so k samples of a prompt are k requests and a resumed run asks only for the
missing ones. Methods that only transform logits (wordban, vocab-shift, cfl, trace, a
gate around them) run inside the engine as one logits processor class,
`DetoxkitLogitsProcessor`: vLLM's V1 engine takes processor classes when it is built
and passes per-request settings in `SamplingParams.extra_args`; the per-request state
is kept by backends/vllm_rows.py. Outside detoxkit, serve it with

    vllm serve MODEL --logits-processors detoxkit.backends.vllm:DetoxkitLogitsProcessor

and send `vllm_xargs` / `extra_args` = `request_args([...])` with a request.
Methods needing their own models (DExperts, GeDi, PPLM, ...) are refused.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ..errors import DetoxkitError
from .base import Backend, Capabilities, Request, Sample, SamplingConfig
from .sampling import sample_seed
from .vllm_rows import DetoxRows, request_args

SEED_RANGE = 2 ** 31 - 1  # a seed every vLLM release takes
PROCESSOR = f"{__name__}:DetoxkitLogitsProcessor"  # for LLM(logits_processors=...), vllm serve
PIP = "pip install vllm (on a CUDA machine, in its own environment: it brings its own torch)"


def resolve_model(model: str) -> tuple[str, str | None, dict[str, Any]]:
    """(path or hub id, revision, provenance) of a model spec: an embedded name becomes its
    converted safetensors directory, `org/name@rev` a hub id at a revision."""
    from .. import registry

    if model in registry.MODELS:
        embedded = registry.MODELS.load(model)
        path = embedded.converted_dir()
        prov = {k: v for k, v in embedded.provenance().items() if k != "fingerprint"}
        return str(path), None, {"source": "embedded", "path": str(path), **prov}
    local = Path(model).expanduser()
    if local.is_dir():
        if not list(local.glob("*.safetensors")):
            raise DetoxkitError(f"{local} has no *.safetensors weights (detoxkit loads no pickles)")
        return str(local.resolve()), None, {"source": "local", "path": str(local.resolve()),
                                            "revision": "local"}
    repo_id, _, rev = model.partition("@")
    return repo_id, rev or None, {"source": "hub", "hub_id": repo_id, "revision": rev or "main"}


class VLLMBackend(Backend):
    name = "vllm"
    requires = (("vllm", PIP),)
    capabilities = Capabilities(logits=True, seeded=True, chat_template=True, batching=True,
                                loglikelihoods=False, batch_invariant=True)

    def __init__(self, model: str, device: str = "cuda", dtype: str = "auto", *,
                 gpu_memory_utilization: float = 0.85, max_model_len: int | None = None):
        from transformers import AutoTokenizer
        from vllm import LLM

        if str(device).startswith("cpu"):
            raise DetoxkitError("the vllm backend runs on a GPU: use --device cuda (or the hf "
                                "backend on a CPU)")
        self.model, self.dtype = model, dtype
        path, revision, self.provenance = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        # Chunked prefill off: a prompt split over steps would show its processors one
        # step that vLLM then drops (vllm_rows.py copes, but no stateful method needs to).
        # The class goes by name: vLLM's engine may run in another process, which imports it.
        # load_format: safetensors only, never pickle weights (as the hf backend)
        self.llm = LLM(model=path, tokenizer=path, revision=revision, dtype=dtype, seed=0,
                       load_format="safetensors", logits_processors=[PROCESSOR],
                       enable_chunked_prefill=False,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len)
        config = getattr(self.llm.llm_engine, "vllm_config", self.llm.llm_engine)
        self.context_length = getattr(getattr(config, "model_config", None), "max_model_len", None)
        self.capabilities = Capabilities(
            logits=True, seeded=True, chat_template=bool(getattr(self.tokenizer, "chat_template", None)),
            batching=True, loglikelihoods=False, batch_invariant=True)
        # what ends a sample: vLLM stops at the model's EOS ids (all special tokens here)
        self.end_ids = set(self.tokenizer.all_special_ids)

    def describe(self) -> dict[str, Any]:
        import vllm

        return {"name": f"vllm:{self.model}", "backend": "vllm", "vllm": vllm.__version__,
                "device": "cuda", "dtype": self.dtype, **self.provenance}

    def encode(self, text: str, messages: list[dict] | None = None) -> list[int]:
        from .hf import encode_prompt

        return encode_prompt(self.tokenizer, text, messages, self.model)

    def continuation_nll(self, prompts, continuations):
        raise DetoxkitError("the vllm backend is not a perplexity oracle: use --oracle MODEL "
                            "(an hf model, e.g. gemma3-270m) or --oracle none")

    def default_batch_rows(self) -> int:
        return 4096  # vLLM schedules them itself; this only bounds what one call holds

    def generate(self, requests: list[Request], sampling: SamplingConfig, method) -> list[Sample]:
        from vllm import SamplingParams

        extra = method_args(method, sampling)
        rows = [(r, i, sample_seed(sampling.seed, r.prompt_id, i))
                for r in requests for i in r.sample_indices]
        if not rows:
            return []
        params = [SamplingParams(n=1, max_tokens=sampling.max_new_tokens, seed=seed % SEED_RANGE,
                                 temperature=sampling.temperature, top_p=sampling.top_p,
                                 top_k=sampling.top_k or -1, extra_args=extra)
                  for _, _, seed in rows]
        prompts = [{"prompt_token_ids": list(r.prompt_ids)} for r, _, _ in rows]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        samples = []
        for (r, i, seed), out in zip(rows, outputs):
            done = out.outputs[0]
            toks = list(done.token_ids)
            finished = done.finish_reason == "stop"
            if finished and toks and toks[-1] in self.end_ids:
                toks = toks[:-1]  # as the hf sampler: the EOS is not part of the sample
            text = self.tokenizer.decode(toks, skip_special_tokens=True)
            samples.append(Sample(r.prompt_id, i, seed, text, toks, finished))
        return samples

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return "out of memory" in str(exc).lower()


def method_args(method, sampling: SamplingConfig) -> dict[str, Any] | None:
    """The extra_args that carry a method chain into the engine (None: plain sampling). The
    engine may run in another process, so the method goes as the specs that rebuild it."""
    if method is None or not method.changes_logits:
        return None
    method.check_backend("vllm")
    if not method.specs:
        raise DetoxkitError(f"the vllm backend rebuilds methods from their specs inside the engine; "
                            f"build '{method.name}' with detoxkit.methods.build_method(SPEC)")
    return request_args(method.specs, sampling.max_new_tokens)


@functools.cache
def processor_class() -> type:
    """vLLM's LogitsProcessor subclass around DetoxRows (vLLM must be importable)."""
    try:
        from vllm.v1.sample.logits_processor import LogitsProcessor
    except ImportError as exc:
        raise DetoxkitError(f"DetoxkitLogitsProcessor needs vLLM's V1 engine ({exc}): {PIP}") from None

    class DetoxkitLogitsProcessor(LogitsProcessor):
        """detoxkit methods on the requests whose extra_args name one (see vllm_rows.py)."""

        def __init__(self, vllm_config, device, is_pin_memory: bool):
            from transformers import AutoTokenizer

            config = vllm_config.model_config
            tokenizer = AutoTokenizer.from_pretrained(
                config.tokenizer, revision=getattr(config, "tokenizer_revision", None),
                trust_remote_code=getattr(config, "trust_remote_code", False))
            self.rows = DetoxRows(tokenizer)

        @classmethod
        def validate_params(cls, sampling_params) -> None:
            try:
                DetoxRows.validate(sampling_params)
            except DetoxkitError as exc:  # vLLM answers a ValueError as a bad request
                raise ValueError(str(exc)) from None

        def is_argmax_invariant(self) -> bool:
            return False  # methods change which token is most likely

        def needs_output_token_ids(self) -> bool:
            return True  # transforms read the generated ids (not placeholders)

        def update_state(self, batch_update) -> None:
            self.rows.update(batch_update)

        def apply(self, logits):
            return self.rows.apply(logits)

    DetoxkitLogitsProcessor.__module__ = __name__
    DetoxkitLogitsProcessor.__qualname__ = "DetoxkitLogitsProcessor"
    return DetoxkitLogitsProcessor


def __getattr__(name: str):
    # `vllm serve --logits-processors detoxkit.backends.vllm:DetoxkitLogitsProcessor` looks the
    # class up by name; it exists only where vLLM imports
    if name == "DetoxkitLogitsProcessor":
        return processor_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
