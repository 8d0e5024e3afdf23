"""The backend seam: model specs pick a backend, optional dependencies and method support are
checked before anything runs, and the hf backend serves samples and log-likelihoods."""

import pytest

from detoxkit.backends import (Backend, Capabilities, Request, SamplingConfig, check_method_support,
                               check_requirements, load_backend, split_model_spec)
from detoxkit.backends.hf import HFBackend
from detoxkit.errors import DetoxkitError
from detoxkit.methods import build_method


def test_model_specs_pick_a_backend():
    assert split_model_spec("smollm2-135m") == ("hf", "smollm2-135m")
    assert split_model_spec("hf:org/model@abc") == ("hf", "org/model@abc")
    assert split_model_spec("org/model") == ("hf", "org/model")
    assert split_model_spec("nosuchbackend:model") == ("hf", "nosuchbackend:model")


def test_a_missing_optional_dependency_names_its_pip_command():
    with pytest.raises(DetoxkitError, match=r"needs detoxkit_no_such_module.*pip install it-now"):
        check_requirements("demo", (("detoxkit_no_such_module", "pip install it-now"), ("json", "-")))
    check_requirements("demo", (("json", "pip install json"),))  # present: nothing to say


class _TextOnly(Backend):
    """A backend that exposes no logits (as an API backend would)."""

    name = "text-only"
    capabilities = Capabilities(logits=False, seeded=False, chat_template=True, batching=False)

    def describe(self):
        return {}

    def encode(self, text):
        return []

    def generate(self, requests, sampling, method):
        return []

    def continuation_nll(self, prompts, continuations):
        return []


def test_methods_that_need_logits_are_refused_with_the_backends_they_support():
    backend = _TextOnly()
    check_method_support(build_method("none"), backend)
    check_method_support(build_method(["none", "none"]), backend)
    with pytest.raises(DetoxkitError, match=r"'dexperts'.*does not expose.*supports: hf"):
        check_method_support(build_method("dexperts"), backend)


def test_hf_backend_refuses_only_what_the_method_does_not_support(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir))
    assert isinstance(backend, HFBackend) and backend.capabilities.logits
    check_method_support(build_method(["wordban", "dexperts"]), backend)

    class VLLMOnly(type(build_method("wordban"))):
        backends = frozenset({"vllm"})

    with pytest.raises(DetoxkitError, match="does not support the hf backend"):
        check_method_support(VLLMOnly(), backend)


def test_hf_backend_samples_and_likelihoods(tiny_model_dir):
    backend = load_backend(f"hf:{tiny_model_dir}")
    ids = backend.encode("The man said that")
    assert ids and backend.context_length == 128
    sampling = SamplingConfig(num_samples=3, max_new_tokens=6, seed=4)
    samples = backend.generate([Request("p", ids, [0, 1, 2], "The man said that")], sampling,
                               build_method("none"))
    assert [s.sample_index for s in samples] == [0, 1, 2]
    again = backend.generate([Request("p", ids, [2], "The man said that")], sampling,
                             build_method("none"))
    assert again[0].token_ids == samples[2].token_ids  # a sample depends only on its seed
    texts = [s.text for s in samples]
    nll = backend.continuation_nll(["The man said that"] * 3, texts)
    assert all(n == len(backend.lm.tokenizer(t, add_special_tokens=False)["input_ids"])
               for (_, n), t in zip(nll, texts))
    assert all(v > 0 for v, n in nll if n)
    assert backend.continuation_nll(["x"], [""]) == [(0.0, 0)]
