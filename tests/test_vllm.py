"""The vllm backend: per-request method state in vLLM's persistent batch (synthetic batches,
no vLLM needed), the backend's refusals, and, where vLLM and a GPU are here, real sampling."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

import pytest
import torch

from test_methods import tables, words_file  # noqa: F401  (fixtures)
from detoxkit.backends import Request, SamplingConfig, load_backend
from detoxkit.backends.vllm import method_args, processor_class
from detoxkit.backends.vllm_rows import DetoxRows, request_args
from detoxkit.errors import DetoxkitError
from detoxkit.methods import build_method
from detoxkit.methods.tables import CFL
from detoxkit.tokens import TokenizerOnlyLM

HAS_VLLM = importlib.util.find_spec("vllm") is not None


# What vLLM hands a processor, as plain data: BatchUpdate's three lists and SamplingParams'
# two fields that matter here (vllm/v1/sample/logits_processor/interface.py).
class Direction(Enum):
    UNIDIRECTIONAL = auto()
    SWAP = auto()


@dataclass
class Update:
    removed: list[int] = field(default_factory=list)
    added: list[tuple] = field(default_factory=list)
    moved: list[tuple] = field(default_factory=list)


@dataclass
class Params:
    extra_args: dict[str, Any] | None = None
    max_tokens: int = 8


class Req:
    """A request: its params, ids, and a reference transform bound for it alone."""

    def __init__(self, tok, text: str, specs: list[str] | None):
        self.params = Params(request_args(specs, 8) if specs else None)
        self.prompt = tok(text, add_special_tokens=False)["input_ids"]
        self.output: list[int] = []  # the live list vLLM appends to
        self.ref = None
        if specs:
            self.ref = build_method(specs).bind(TokenizerOnlyLM(tok))
            self.ref.max_new_tokens = 8

    def added(self, index: int) -> tuple:
        return (index, self.params, self.prompt, self.output)

    def expected(self, logits_row: torch.Tensor) -> torch.Tensor:
        if self.ref is None:
            return logits_row
        ids = torch.tensor([self.prompt + self.output])
        return self.ref(ids, logits_row[None])[0]


def gate_spec(words, cfl) -> str:
    return f"gate:wrap=(wordban:words={words}),check=cfl,table={cfl},threshold=0.3,hold=2"


def test_rows_follow_adds_removes_moves_and_swaps(tiny_lm, words_file, tables):  # noqa: F811
    tok = tiny_lm.tokenizer
    words, _, _ = words_file
    vs, cfl = tables
    reqs = {
        "ban": Req(tok, "I said that", [f"wordban:words={words}"]),
        "ban2": Req(tok, "I said that", [f"wordban:words={words}"]),  # shares ban's transform
        "cfl": Req(tok, "The man was", [f"cfl:path={cfl}"]),
        "gate": Req(tok, "You are a", [gate_spec(words, cfl)]),
        "plain": Req(tok, "Then she", None),
        "late": Req(tok, "He is", [f"cfl:path={cfl},strength=2"]),
        "chain": Req(tok, "We", [f"vocab-shift:path={vs}", f"cfl:path={cfl},strength=5"]),
    }
    # (the update before the step, the layout it leaves), layouts written out by hand
    script = [
        (Update(added=[reqs[n].added(i) for i, n in enumerate(["ban", "cfl", "gate", "plain", "ban2"])]),
         {0: "ban", 1: "cfl", 2: "gate", 3: "plain", 4: "ban2"}),
        (Update(moved=[(0, 2, Direction.SWAP)]), {0: "gate", 1: "cfl", 2: "ban", 3: "plain", 4: "ban2"}),
        (Update(removed=[1], added=[reqs["late"].added(1)]),
         {0: "gate", 1: "late", 2: "ban", 3: "plain", 4: "ban2"}),
        (Update(removed=[0, 4], moved=[(3, 0, Direction.UNIDIRECTIONAL)]),  # gate leaves, running
         {0: "plain", 1: "late", 2: "ban"}),
        (Update(added=[reqs["gate"].added(3), reqs["chain"].added(4)]),  # gate back: same lists
         {0: "plain", 1: "late", 2: "ban", 3: "gate", 4: "chain"}),
        (Update(moved=[(1, 4, Direction.SWAP)]), {0: "plain", 1: "chain", 2: "ban", 3: "gate", 4: "late"}),
        (None, {0: "plain", 1: "chain", 2: "ban", 3: "gate", 4: "late"}),
    ]
    rows = DetoxRows(tok)
    gen = torch.Generator().manual_seed(0)
    V = len(tok) + 3  # logits wider than the tokenizer, as model vocabularies often are
    gate_transform = None
    for step, (update, layout) in enumerate(script):
        rows.update(update)
        assert set(rows.rows) == {i for i, n in layout.items() if n != "plain"}
        if step == 2:
            gate_transform = rows.rows[0].transform
        if step == 4:
            assert rows.rows[3].transform is gate_transform  # state kept while it was out
        logits = torch.randn(max(layout) + 1, V, generator=gen) * 3
        out = rows.apply(logits.clone())
        for index, name in layout.items():
            expected = reqs[name].expected(logits[index])
            torch.testing.assert_close(out[index], expected, msg=f"step {step}, {name}")
            if name == "plain":
                assert torch.equal(out[index], logits[index])
            reqs[name].output.append(int(expected.argmax()))
    assert rows.rows[2].shared and rows.rows[2].transform is rows._shared[rows.rows[2].key]
    stats = rows.method((gate_spec(words, cfl),)).run_stats()
    assert 0 < stats["open_steps"] < stats["steps"] == 6  # the gate both opened and stayed shut


def test_a_repeated_first_step_counts_once(tiny_lm, words_file, tables):  # noqa: F811
    """vLLM runs a prompt's earlier prefill chunks through the processors too, then drops
    their tokens: only the last call at the first length may shape the request's state."""
    tok = tiny_lm.tokenizer
    words, _, _ = words_file
    req = Req(tok, "You are a", [gate_spec(words, tables[1])])
    rows = DetoxRows(tok)
    rows.update(Update(added=[req.added(0)]))
    effects = CFL(path=str(tables[1])).effects(tok)
    risky, safe = int(effects.argmax()), int(effects.argmin())
    gen = torch.Generator().manual_seed(1)
    chunk = torch.zeros(1, len(tok))
    chunk[0, risky] = 50.0  # opens the gate (for `hold` steps) if its call were to count
    rows.apply(chunk)  # an earlier prefill chunk: vLLM drops its token
    for _ in range(3):  # each step shut: almost all mass on a harmless token
        logits = torch.randn(1, len(tok), generator=gen)
        logits[0, safe] += 20.0
        out = rows.apply(logits.clone())
        expected = req.expected(logits[0])
        assert torch.equal(out[0], logits[0]) and torch.equal(expected, logits[0])
        req.output.append(safe)


def test_a_word_split_over_prompt_and_output_is_banned(tiny_lm, words_file):  # noqa: F811
    """The row's ids are the prompt and vLLM's live output list: a multi-token word whose
    first pieces were generated has its last piece banned, at the step the list grew."""
    path, single, multi = words_file
    tok = tiny_lm.tokenizer
    pieces = tok(" " + multi, add_special_tokens=False)["input_ids"]
    req = Req(tok, "I said", [f"wordban:words={path}"])
    req.output.extend(pieces[:-1])
    rows = DetoxRows(tok)
    rows.update(Update(added=[req.added(0)]))
    logits = torch.zeros(1, len(tok))
    out = rows.apply(logits.clone())
    assert out[0, pieces[-1]] == float("-inf") and out[0].isfinite().any()
    req.output.append(pieces[-1])  # the next step: no batch update, a longer list
    rows.update(None)
    out = rows.apply(logits.clone())
    assert out[0, pieces[-1]] == 0  # the word is complete: its last piece is free again
    assert out[0, tok(" " + single, add_special_tokens=False)["input_ids"][0]] == float("-inf")


def test_methods_that_need_their_own_models_are_refused(tiny_lm):
    for spec in ("gedi", "dexperts", "pplm"):
        with pytest.raises(DetoxkitError, match=r"does not support the vllm backend \(supported: hf\)"):
            DetoxRows.validate(Params(request_args([spec])))
        with pytest.raises(DetoxkitError, match=r"supported: hf"):
            method_args(build_method(spec), SamplingConfig())
    with pytest.raises(DetoxkitError, match="must be a dict with 'method'"):
        DetoxRows.validate(Params({"detoxkit": "cfl"}))
    DetoxRows.validate(Params(None))  # a request without detoxkit args is fine
    DetoxRows.validate(Params({"other_processor": 1}))


def test_method_args_carry_specs(tables):  # noqa: F811
    _, cfl = tables
    assert method_args(build_method("none"), SamplingConfig()) is None
    chain = build_method([f"cfl:path={cfl}", "wordban"])
    assert method_args(chain, SamplingConfig(max_new_tokens=7)) == {
        "detoxkit": {"method": [f"cfl:path={cfl}", "wordban"], "max_new_tokens": 7}}
    with pytest.raises(DetoxkitError, match="build_method"):
        method_args(CFL(path=str(cfl)), SamplingConfig())  # no specs to rebuild it from


@pytest.mark.skipif(HAS_VLLM, reason="checks the message shown where vLLM is absent")
def test_without_vllm_the_backend_says_how_to_install_it():
    with pytest.raises(DetoxkitError, match="pip install vllm"):
        load_backend("vllm:smollm2-135m", device="cuda")
    with pytest.raises(DetoxkitError, match="pip install vllm"):
        processor_class()


@pytest.mark.requires_vllm
@pytest.mark.requires_gpu
def test_vllm_samples_per_seed_and_applies_methods(tiny_model_dir, words_file):  # noqa: F811
    from vllm.v1.sample.logits_processor import LogitsProcessor

    assert issubclass(processor_class(), LogitsProcessor)
    words, single, _ = words_file
    backend = load_backend(f"vllm:{tiny_model_dir}", device="cuda", gpu_memory_utilization=0.3)
    ids = backend.encode("I said that")
    sampling = SamplingConfig(num_samples=4, max_new_tokens=8, seed=5)
    reqs = [Request("a", ids, [0, 1, 2, 3], "I said that"), Request("b", ids[:2], [0, 1])]
    plain = backend.generate(reqs, sampling, build_method("none"))
    assert [(s.prompt_id, s.sample_index) for s in plain] == [("a", i) for i in range(4)] + [("b", 0), ("b", 1)]
    again = backend.generate([Request("a", ids, [2], "I said that")], sampling, build_method("none"))
    assert again[0].token_ids == plain[2].token_ids  # a sample depends on its own seed
    banned = set(backend.tokenizer(" " + single, add_special_tokens=False)["input_ids"][:1])
    greedy = SamplingConfig(num_samples=4, max_new_tokens=8, temperature=0)
    out = backend.generate(reqs, greedy, build_method(f"wordban:words={words}"))
    assert all(not banned & set(s.token_ids) for s in out)
