"""`detoxkit train banlist`: the default word list of `wordban`, from the corpus's training pool."""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..artefacts import output_path
from ..corpus import clean_text, training_rows
from .base import RecipeConfig, Trainer, corpus_guided_by, corpus_half_setting, setting

log = logging.getLogger(__name__)
WORD = re.compile(r"[a-z][a-z']*[a-z]|[a-z]")


@dataclass
class BanlistConfig(RecipeConfig):
    top: int = setting(300, "candidate words (before the filter)")
    filter_scorer: str = setting("profanity-svm", "keep words this scorer rates offensive on their "
                                                  "own ('none': keep all)")
    filter_threshold: float = setting(0.5, "score a word needs from the filter scorer")
    min_count: int = setting(25, "min toxic rows containing the word")
    min_ratio: float = setting(0.9, "min class-balanced P(toxic | word)")
    max_rows: int | None = setting(None, "use only N corpus rows (default: all)")
    seed: int = setting(0, "seed of the row order")
    corpus_half: str | None = corpus_half_setting()
    out: str | None = setting(None, "output file (default: $DETOXKIT_HOME/methods/banned_words.txt)")


def train(config: BanlistConfig) -> Path:
    """Words most specific to toxic rows: document frequency in toxic rows >= min_count,
    class-balanced P(toxic | word in row) >= min_ratio, the `top` highest by smoothed
    log-odds; then, with a filter scorer, only words it rates >= filter_threshold on their
    own. The corpus's tweets make dialect and slang words (not offensive by themselves)
    frequent in toxic rows; the filter removes them."""
    from ..methods.wordban import DEFAULT_LIST, GUIDED_BY_LINE

    rows = training_rows(config.max_rows, config.seed, half=config.corpus_half)
    tox, non = Counter(), Counter()
    n_tox = n_non = 0
    for r in rows:
        words = set(WORD.findall(clean_text(r.text).lower()))
        if r.is_offensive:
            tox.update(words)
            n_tox += 1
        else:
            non.update(words)
            n_non += 1
    scored = []
    for w, t in tox.items():
        if t < config.min_count or len(w) < 3:
            continue
        n = non.get(w, 0)
        # P(toxic | word), corrected for the class sizes (as if the classes were balanced)
        pt, pn = t / n_tox, n / n_non
        if pt / (pt + pn) < config.min_ratio:
            continue
        log_odds = math.log((t + 1) / (n_tox - t + 1)) - math.log((n + 1) / (n_non - n + 1))
        scored.append((log_odds, w))
    words = [w for _, w in sorted(scored, reverse=True)[:config.top]]
    n_candidates = len(words)
    judge = None if config.filter_scorer in ("", "none", None) else config.filter_scorer
    shaped_by = []
    if judge:
        from ..scorers import load_scorer

        scorer = load_scorer(judge)
        shaped_by.append((judge, scorer))
        alone = scorer.score(words)["toxicity"]
        words = [w for w, v in zip(words, alone) if v >= config.filter_threshold]
    out = output_path(DEFAULT_LIST, config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = (f"; kept {len(words)} of {n_candidates} that {judge} scores >= "
            f"{config.filter_threshold} alone" if judge else "")
    header = (f"# detoxkit default word list: built by `detoxkit train banlist` from {len(rows)} "
              f"training-pool corpus rows\n# (top {config.top} by log-odds, toxic rows >= "
              f"{config.min_count}, balanced P(toxic|word) >= {config.min_ratio}{kept}). "
              "One word per line.\n"
              f"{GUIDED_BY_LINE}{json.dumps(corpus_guided_by(config.corpus_half, *shaped_by))}\n")
    out.write_text(header + "\n".join(sorted(words)) + "\n", encoding="utf-8")
    log.info("banlist: %d words -> %s", len(words), out)
    return out


TRAINER = Trainer("banlist", BanlistConfig, train)
