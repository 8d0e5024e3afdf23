"""The openai backend: any OpenAI-compatible server (vLLM, llama.cpp, TGI, Ollama, hosted APIs).

`--model openai:NAME --base-url URL`: raw prompts go to /completions, chat prompts
(`--prompt-format chat`) to /chat/completions. One request per sample carries that sample's
own seed (servers that honour `seed`, such as llama.cpp's, then reproduce it), so a resumed
run asks only for what is missing; `--api-samples-per-request N` asks for `n` samples at a
time instead (fewer requests; a server that returns fewer choices gets the rest asked again).
The key is read from the environment variable named by `api_key_env` (default
OPENAI_API_KEY) at request time and never written anywhere. The server's logits are not
exposed, so only plain sampling runs here.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import DetoxkitError
from ..http import Failure, RetryingClient, RetryPolicy
from .base import Backend, Capabilities, Request, Sample, SamplingConfig
from .sampling import sample_seed

DEFAULT_URL_ENV = "OPENAI_BASE_URL"
SEED_RANGE = 2 ** 31 - 1  # servers take a signed 32-bit seed


class OpenAIBackend(Backend):
    name = "openai"
    requires = (("httpx", "pip install httpx"),)
    capabilities = Capabilities(logits=False, seeded=True, chat_template=True, batching=True,
                                loglikelihoods=False, batch_invariant=True)

    def __init__(self, model: str, device: str = "cpu", dtype: str = "auto", *,
                 base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 samples_per_request: int = 1, policy: RetryPolicy | None = None):
        self.model = model
        self.base_url = (base_url or os.environ.get(DEFAULT_URL_ENV) or "").rstrip("/")
        if not self.base_url:
            raise DetoxkitError(f"the openai backend needs the server's URL: --base-url URL (e.g. "
                                f"http://127.0.0.1:8000/v1) or ${DEFAULT_URL_ENV}")
        self.api_key_env = api_key_env
        if samples_per_request < 1:
            raise DetoxkitError("--api-samples-per-request must be >= 1")
        self.samples_per_request = samples_per_request
        self.client = RetryingClient(self.base_url, self._headers, policy, name=f"openai:{model}")
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}

    @classmethod
    def from_config(cls, model: str, cfg, **settings) -> "OpenAIBackend":
        policy = RetryPolicy(concurrency=cfg.api_concurrency, requests_per_second=cfg.api_rps,
                             timeout=cfg.api_timeout, max_retries=cfg.api_retries)
        return cls(model, base_url=cfg.base_url, api_key_env=cfg.api_key_env,
                   samples_per_request=cfg.api_samples_per_request, policy=policy, **settings)

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def describe(self) -> dict[str, Any]:
        # the key's variable name, never its value
        return {"name": f"openai:{self.model}", "backend": "openai", "base_url": self.base_url,
                "api_key_env": self.api_key_env, "revision": "served"}

    def encode(self, text: str, messages: list[dict] | None = None) -> list[int]:
        return []  # the server tokenizes; its context limit applies there

    def continuation_nll(self, prompts, continuations):
        raise DetoxkitError("the openai backend gives no log-likelihoods: use --oracle none, or an "
                            "oracle that runs here (--oracle gemma3-270m)")

    def run_stats(self) -> dict[str, Any]:
        s = self.client.stats
        return {"requests": s.requests, "retries": s.retries, "failed_requests": s.failed,
                "failures_by_reason": dict(s.by_reason), **self.usage,
                "seconds_in_requests": round(s.seconds, 2)}

    # ---- sampling -------------------------------------------------------------------------
    def generate(self, requests: list[Request], sampling: SamplingConfig, method) -> list[Sample]:
        jobs = []  # (request, sample indices, payload)
        for r in requests:
            indices = list(r.sample_indices)
            for start in range(0, len(indices), self.samples_per_request):
                chunk = indices[start:start + self.samples_per_request]
                jobs.append((r, chunk, self._payload(r, chunk, sampling)))
        results = self.client.post_many(
            "/chat/completions" if requests and requests[0].messages else "/completions",
            [p for _, _, p in jobs], _parse)
        samples, again = [], []
        for (r, chunk, _), result in zip(jobs, results):
            if isinstance(result, Failure):
                samples += [self._sample(r, i, sampling, error=result.reason) for i in chunk]
                continue
            choices, usage = result
            self.usage["prompt_tokens"] += usage.get("prompt_tokens", 0)
            self.usage["completion_tokens"] += usage.get("completion_tokens", 0)
            for i, choice in zip(chunk, choices):
                samples.append(self._sample(r, i, sampling, text=choice[0], finished=choice[1],
                                            tokens=usage.get("completion_tokens") if len(chunk) == 1
                                            else None))
            if len(choices) < len(chunk):  # the server ignored `n`: ask for the rest one by one
                again.append(Request(r.prompt_id, r.prompt_ids, chunk[len(choices):], r.text,
                                     r.messages))
        if again:
            per_request, self.samples_per_request = self.samples_per_request, 1
            try:
                samples += self.generate(again, sampling, method)
            finally:
                self.samples_per_request = per_request
        order = {(r.prompt_id, i): n for n, (r, i) in enumerate(
            (r, i) for r in requests for i in r.sample_indices)}
        return sorted(samples, key=lambda s: order[(s.prompt_id, s.sample_index)])

    def _payload(self, r: Request, chunk: list[int], sampling: SamplingConfig) -> dict:
        payload: dict[str, Any] = {"model": self.model, "max_tokens": sampling.max_new_tokens,
                                   "temperature": sampling.temperature, "top_p": sampling.top_p,
                                   "n": len(chunk),
                                   "seed": sample_seed(sampling.seed, r.prompt_id, chunk[0]) % SEED_RANGE}
        if sampling.top_k:
            payload["top_k"] = sampling.top_k  # an extension most open servers accept
        if r.messages:
            payload["messages"] = r.messages
        else:
            payload["prompt"] = r.text
        return payload

    @staticmethod
    def _sample(r: Request, i: int, sampling: SamplingConfig, *, text: str = "", finished: bool = False,
                tokens: int | None = None, error: str | None = None) -> Sample:
        return Sample(r.prompt_id, i, sample_seed(sampling.seed, r.prompt_id, i), text, [], finished,
                      tokens=tokens, error=error)


def _parse(answer: dict) -> tuple[list[tuple[str, bool]], dict]:
    """([(text, ended by the model)] per choice, usage) of a completions or chat answer."""
    choices = sorted(answer["choices"], key=lambda c: c.get("index", 0))
    out = []
    for c in choices:
        text = c["message"]["content"] if "message" in c else c["text"]
        if not isinstance(text, str):
            raise TypeError("choice text is not a string")
        out.append((text, c.get("finish_reason") == "stop"))
    if not out:
        raise ValueError("no choices")
    usage = answer.get("usage") or {}
    return out, {k: int(usage.get(k) or 0) for k in ("prompt_tokens", "completion_tokens")}

