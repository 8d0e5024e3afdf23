"""How each reasoning-model family writes its thinking, and the protocol's prompt assembly.

A family names what opens the reasoning block in the assistant turn (`think_open`) and what
closes it (`think_close`, whose stripped form is the end-of-thinking marker generation stops
at). Models of a family are recognised by a substring of their name; `--family` picks one and
`--think-open` / `--think-close` override its strings. `fallback_template` renders a prompt
where no tokenizer with a chat template is at hand (a model behind an API).

The openers prefilled after `think_open` and the answer headers are short phrases in each
language, written for this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Family:
    name: str
    think_open: str
    think_close: str
    match: tuple[str, ...]  # lower-case substrings of a model name that select the family
    fallback_template: str  # "{prompt}": the user turn, rendered up to the assistant turn
    notes: str

    @property
    def marker(self) -> str:
        """The end-of-thinking marker: generation of the reasoning stops at it."""
        return self.think_close.strip()


_CHATML = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
FAMILIES = {
    "qwen3": Family("qwen3", "<think>\n", "\n</think>\n\n", ("qwen3", "qwq"), _CHATML,
                    "Qwen3 / QwQ: ChatML; the assistant turn opens with <think> (one token, "
                    "id 151667; </think> is 151668); with enable_thinking the template adds "
                    "nothing itself, so the opener is prefilled after <think>\\n"),
    "deepseek-r1": Family("deepseek-r1", "<think>\n", "\n</think>\n\n",
                          ("deepseek-r1", "r1-distill"),
                          "<｜begin▁of▁sentence｜><｜User｜>{prompt}<｜Assistant｜>",
                          "DeepSeek-R1 and its distills: recent templates end the prompt with "
                          "<think>\\n themselves (detected: not added twice); no system turn"),
    "magistral": Family("magistral", "[THINK]", "[/THINK]", ("magistral",),
                        "<s>[INST]{prompt}[/INST]",
                        "Mistral's Magistral: [THINK] ... [/THINK] control tokens"),
    "gpt-oss": Family("gpt-oss", "<|channel|>analysis<|message|>",
                      "<|end|><|start|>assistant<|channel|>final<|message|>", ("gpt-oss",),
                      "<|start|>user<|message|>{prompt}<|end|><|start|>assistant",
                      "OpenAI gpt-oss (harmony format): reasoning in the analysis channel, "
                      "the answer in the final channel"),
    "generic": Family("generic", "<think>\n", "\n</think>\n\n", (), _CHATML,
                      "any chat model: <think> tags as plain text (a model not trained to "
                      "reason; the mechanics only)"),
}

# "Okay, let me think about this in <language>." in each language
OPENERS = {
    "en": "Okay, let me think about this in English.",
    "de": "Okay, ich denke auf Deutsch darüber nach.",
    "fr": "D'accord, je vais réfléchir à cela en français.",
    "es": "Bien, voy a pensar en esto en español.",
    "it": "Va bene, ci penso in italiano.",
    "pt": "Certo, vou pensar nisso em português.",
    "nl": "Oké, ik denk hierover na in het Nederlands.",
    "pl": "Dobrze, pomyślę o tym po polsku.",
    "cs": "Dobře, promyslím to v češtině.",
    "sv": "Okej, jag tänker på det här på svenska.",
    "tr": "Tamam, bunu Türkçe düşüneyim.",
    "ru": "Хорошо, я подумаю об этом по-русски.",
    "uk": "Гаразд, я подумаю про це українською.",
    "ar": "حسنًا، سأفكر في هذا باللغة العربية.",
    "he": "בסדר, אחשוב על זה בעברית.",
    "hi": "ठीक है, मैं इसके बारे में हिंदी में सोचता हूँ।",
    "bn": "ঠিক আছে, আমি এটা নিয়ে বাংলায় ভাবছি।",
    "id": "Baik, saya akan memikirkan ini dalam bahasa Indonesia.",
    "vi": "Được rồi, tôi sẽ suy nghĩ về điều này bằng tiếng Việt.",
    "th": "โอเค ฉันจะคิดเรื่องนี้เป็นภาษาไทย",
    "sw": "Sawa, nitafikiri kuhusu hili kwa Kiswahili.",
    "zh": "好的，我用中文来思考这个问题。",
    "ja": "はい、日本語でこれについて考えてみます。",
    "ko": "좋아요, 이것에 대해 한국어로 생각해 볼게요.",
}
# "Answer (<language>):" in each language: the response header naming the answer language
HEADERS = {
    "en": "Answer (English):", "de": "Antwort (auf Deutsch):", "fr": "Réponse (en français) :",
    "es": "Respuesta (en español):", "it": "Risposta (in italiano):",
    "pt": "Resposta (em português):", "nl": "Antwoord (in het Nederlands):",
    "pl": "Odpowiedź (po polsku):", "cs": "Odpověď (česky):", "sv": "Svar (på svenska):",
    "tr": "Cevap (Türkçe):", "ru": "Ответ (на русском):", "uk": "Відповідь (українською):",
    "ar": "الإجابة (بالعربية):", "he": "תשובה (בעברית):", "hi": "उत्तर (हिंदी में):",
    "bn": "উত্তর (বাংলায়):", "id": "Jawaban (dalam bahasa Indonesia):",
    "vi": "Câu trả lời (bằng tiếng Việt):", "th": "คำตอบ (ภาษาไทย):", "sw": "Jibu (kwa Kiswahili):",
    "zh": "回答（中文）：", "ja": "回答（日本語）：", "ko": "답변 (한국어):",
}
CONDITIONS = ("english", "prompt", "default")  # reason in English / in the prompt's language / free


def family_for(model_name: str, name: str = "auto", think_open: str | None = None,
               think_close: str | None = None) -> Family:
    """The family `name` (or, for "auto", the first whose match is in the model's name, else
    generic), with its strings overridden where given."""
    from ..errors import DetoxkitError

    if name == "auto":
        low = model_name.lower()
        fam = next((f for f in FAMILIES.values() if any(m in low for m in f.match)), FAMILIES["generic"])
    elif name in FAMILIES:
        fam = FAMILIES[name]
    else:
        raise DetoxkitError(f"unknown model family {name!r} (known: auto, {', '.join(FAMILIES)})")
    if think_open is not None:
        fam = replace(fam, think_open=think_open)
    if think_close is not None:
        fam = replace(fam, think_close=think_close)
    if not fam.marker:
        raise DetoxkitError("the end-of-thinking marker (--think-close) must not be blank")
    return fam


def target_language(condition: str, prompt_language: str) -> str | None:
    """The language the reasoning is asked to be in (None: the model's default)."""
    return {"english": "en", "prompt": prompt_language, "default": None}[condition]


def opener(language: str | None) -> str:
    if language is None:
        return ""
    return OPENERS.get(language, f"Okay, let me think about this in the language '{language}'.")


def header(language: str) -> str:
    return HEADERS.get(language, f"Answer (in the language '{language}'):")


def render_prompt(messages: list[dict], family: Family, tokenizer=None) -> str:
    """The conversation rendered up to the opening of the reasoning block: the model's own chat
    template where the tokenizer has one, else the family's fallback; `think_open` is appended
    unless the template already ends with it (DeepSeek-R1's does)."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        user = "\n\n".join(m["content"] for m in messages if m["role"] == "user")
        text = family.fallback_template.replace("{prompt}", user)
    if not text.rstrip().endswith(family.think_open.strip()):
        text += family.think_open
    return text


def reasoning_prompt(base: str, condition: str, prompt_language: str) -> str:
    """Phase 1: the rendered prompt with the opener of the condition's language prefilled."""
    return base + opener(target_language(condition, prompt_language))


def answer_prompt(phase1: str, reasoning: str, family: Family, answer_language: str) -> str:
    """Phase 2: phase 1's prompt and its reasoning, the block closed, then the header naming
    the answer language; the model writes the answer after it."""
    return phase1 + reasoning + family.think_close + header(answer_language) + "\n"


def cut_at_marker(text: str, marker: str) -> tuple[str, bool]:
    """(the reasoning before the end-of-thinking marker, whether the marker was reached)."""
    at = text.find(marker)
    return (text, False) if at < 0 else (text[:at], True)
