"""Per-request method state for vLLM's persistent batch, without importing vLLM.

vLLM's V1 engine builds its logits processors once, with the engine, and runs them on
the whole persistent batch: row i of the logits is whichever request sits at index i
this step. Before each step it reports how the batch changed (a BatchUpdate: requests
removed, added at an index, moved one way or swapped between two indices). `DetoxRows`
keeps, per index, the request's detoxkit transform and its token ids, follows those
changes, and applies each request's method to its own row. The vLLM subclass in
backends/vllm.py only forwards the engine's calls here, so all of this is tested on
synthetic batches where vLLM is not installed.

A request opts in through its sampling params:

    SamplingParams(..., extra_args=request_args(["cfl:strength=20"], max_new_tokens=20))

Requests without detoxkit args pass through unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from ..errors import DetoxkitError
from ..methods.base import DetoxMethod, LogitsTransform
from ..tokens import as_bindable

EXTRA_ARGS_KEY = "detoxkit"
BACKEND = "vllm"
# Requests taken out of the batch while still running (vLLM does so when a step has no room
# for them) come back with the same token list; their state is kept this long for that.
PARKED_LIMIT = 4096


def request_args(specs: Iterable[str], max_new_tokens: int | None = None) -> dict[str, Any]:
    """`SamplingParams.extra_args` that ask for a detoxkit method on one request."""
    args: dict[str, Any] = {"method": [str(s) for s in specs]}
    if max_new_tokens is not None:
        args["max_new_tokens"] = int(max_new_tokens)
    return {EXTRA_ARGS_KEY: args}


def detoxkit_args(params: Any) -> dict[str, Any] | None:
    """The detoxkit part of a request's `extra_args` (None: the request asked for no method)."""
    extra = getattr(params, "extra_args", None) or {}
    args = extra.get(EXTRA_ARGS_KEY)
    if args is None:
        return None
    if not isinstance(args, dict) or not args.get("method"):
        raise DetoxkitError(f"extra_args[{EXTRA_ARGS_KEY!r}] must be a dict with 'method': a list "
                            f"of method specs, e.g. {request_args(['cfl'])}")
    return args


def method_key(args: dict[str, Any]) -> tuple[str, ...]:
    method = args["method"]
    return (method,) if isinstance(method, str) else tuple(str(s) for s in method)


def build_for_vllm(specs: tuple[str, ...]) -> DetoxMethod:
    """The method of these specs, refused unless it runs on vLLM (it names where it does)."""
    from ..methods import build_method

    method = build_method(list(specs))
    method.check_backend(BACKEND)
    return method


@dataclass
class RowState:
    """One request in the batch: its transform and the ids it has seen."""

    key: tuple  # (method specs, max_new_tokens): rows with equal keys may share a transform
    transform: LogitsTransform
    prompt_ids: list[int]
    output_ids: list[int]  # vLLM's own list for the request: it appends each new token
    params: Any
    first_len: int | None = None  # output length at the first call
    advanced: bool = False  # called at a longer output than the first call's
    shared: bool = False  # transform serves every row with this key


class DetoxRows:
    """Row index -> RowState for one engine, following vLLM's batch updates."""

    def __init__(self, tokenizer_or_lm: Any):
        self.lm = as_bindable(tokenizer_or_lm)
        self.rows: dict[int, RowState] = {}
        self._methods: dict[tuple[str, ...], DetoxMethod] = {}
        self._shared: dict[tuple, LogitsTransform] = {}
        self._parked: OrderedDict[int, RowState] = OrderedDict()

    # ---- requests -------------------------------------------------------------------------
    @staticmethod
    def validate(params: Any) -> None:
        """Refuse a request whose method cannot run here (before it enters the batch)."""
        args = detoxkit_args(params)
        if args is not None:
            build_for_vllm(method_key(args))

    def method(self, specs: tuple[str, ...]) -> DetoxMethod:
        if specs not in self._methods:
            self._methods[specs] = build_for_vllm(specs)
        return self._methods[specs]

    def _bind(self, key: tuple) -> tuple[LogitsTransform, bool]:
        """(transform, shared): one instance per key for row-independent transforms."""
        if key in self._shared:
            return self._shared[key], True
        transform = self.method(key[0]).bind(self.lm)
        transform.max_new_tokens = key[1]
        if transform.row_independent:
            self._shared[key] = transform
        return transform, transform.row_independent

    def _new_state(self, params, prompt_ids, output_ids) -> RowState | None:
        args = detoxkit_args(params)
        if args is None:
            return None
        parked = self._parked.pop(id(output_ids), None)
        if parked is not None and parked.output_ids is output_ids and parked.params is params:
            return parked  # the same request back in the batch: its state continues
        limit = args.get("max_new_tokens", getattr(params, "max_tokens", None))
        key = (method_key(args), int(limit) if limit is not None else None)
        transform, shared = self._bind(key)
        return RowState(key, transform, list(prompt_ids or []), output_ids, params, shared=shared)

    def _park(self, state: RowState) -> None:
        self._parked[id(state.output_ids)] = state  # holding the list keeps its id unique
        while len(self._parked) > PARKED_LIMIT:
            self._parked.popitem(last=False)

    # ---- the batch ------------------------------------------------------------------------
    def update(self, batch_update: Any) -> None:
        """Apply a vLLM BatchUpdate (or None: the batch did not change). In the documented
        order: removed, added (which may reuse a freed index), then moved."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            state = self.rows.pop(index, None)
            if state is not None:
                self._park(state)
        for index, params, prompt_ids, output_ids in batch_update.added:
            state = self._new_state(params, prompt_ids, output_ids)
            if state is None:
                self.rows.pop(index, None)  # a request without a method now holds this index
            else:
                self.rows[index] = state
        for a, b, direction in batch_update.moved:
            swap = getattr(direction, "name", direction) == "SWAP"
            first, second = self.rows.pop(a, None), self.rows.pop(b, None)
            if first is not None:
                self.rows[b] = first
            if swap and second is not None:
                self.rows[a] = second

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Each row with a method gets its request's transform of its own ids; other rows are
        left as they are. Rows sharing a transform and a length run as one batch."""
        if not self.rows:
            return logits
        groups: dict[tuple, list[int]] = {}
        for index, state in self.rows.items():
            self._track(state, logits[index:index + 1])
            width = len(state.prompt_ids) + len(state.output_ids)
            group = (state.key, width) if state.shared else (index,)
            groups.setdefault(group, []).append(index)
        for indices in groups.values():
            states = [self.rows[i] for i in indices]
            ids = torch.tensor([s.prompt_ids + list(s.output_ids) for s in states],
                               dtype=torch.long, device=logits.device)
            rows = torch.tensor(indices, dtype=torch.long, device=logits.device)
            transform = states[0].transform
            transform.attention_mask = None  # every row here is all real tokens
            out = transform(ids, logits.index_select(0, rows))
            logits[rows] = out.to(logits.dtype)
        return logits

    def _track(self, state: RowState, row_logits: torch.Tensor) -> None:
        """Rebind a request's own transform when a call repeats its first step: vLLM also runs
        a prompt's earlier prefill chunks through the processors and drops their tokens, so
        only the last call at that length counts. A transform first called after tokens were
        already drawn (a request vLLM recomputed) absorbs the prompt first."""
        n = len(state.output_ids)
        if state.first_len is None or (n == state.first_len and not state.advanced):
            if state.first_len is not None and not state.shared:
                state.transform, _ = self._bind(state.key)
            state.first_len = n
            if n and not state.shared:
                prompt = torch.tensor([state.prompt_ids], dtype=torch.long, device=row_logits.device)
                state.transform.skip(prompt, row_logits)
        elif n != state.first_len:
            state.advanced = True
