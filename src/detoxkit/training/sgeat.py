"""`detoxkit train sgeat`: SGEAT ("Exploring the Limits of Domain-Adaptive Training for
Detoxifying Large-Scale Language Models"): the model's own unconditional samples, scored, the
least toxic fraction kept, then the DAPT recipe on them (a LoRA adapter by default).

Samples come from detoxkit's sampler (backends/hf/sampler.py), each started from the
end-of-text token (the document separator the DAPT blocks use too) with its own seed, and are
appended to <out>/self_generated.jsonl a chunk at a time: a rerun continues after the last
whole chunk. The filtering scorer is recorded in guided_by, so a run judged by it is warned.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import DetoxkitError
from ..progress import Progress
from ..store import write_json_atomic
from .base import Trainer, load_generator, set_threads, setting
from .dapt import LMTrainingConfig, finished_settings, report, train_lm
from .lm_adapter import default_out
from .lm_data import TrainingText

log = logging.getLogger(__name__)

SAMPLES_FILE = "self_generated.jsonl"


@dataclass
class SGEATConfig(LMTrainingConfig):
    samples: int = setting(1000, "unconditional samples to generate")
    sample_tokens: int = setting(64, "new tokens per sample at most")
    top_p: float = setting(0.9, "nucleus sampling p of the self-generation")
    temperature: float = setting(1.0, "sampling temperature of the self-generation")
    chunk: int = setting(50, "samples per generate call (each chunk appended to the cache file)")
    scorer: str = setting("detoxkit-minilm", "scorer ranking the samples (a scorer spec)")
    keep: float = setting(0.5, "fraction of the scored samples kept, least toxic first")
    out: str | None = setting(None, "output directory, also holding the samples cache (default: "
                                    "$DETOXKIT_HOME/adapters/sgeat/<model key>)")


def least_toxic(texts: list[str], scores, fraction: float) -> list[int]:
    """Indices of exactly floor(fraction x n) least toxic texts among the n scorable ones
    (non-empty text, finite score); ties go to the earlier sample. Sorted by index."""
    if not 0 < fraction <= 1:
        raise DetoxkitError(f"--keep must be in (0, 1], not {fraction}")
    valid = [i for i, (t, s) in enumerate(zip(texts, scores)) if t.strip() and math.isfinite(s)]
    n_keep = int(math.floor(fraction * len(valid) + 1e-9))
    if n_keep == 0:
        raise DetoxkitError(f"{len(valid)} of {len(texts)} self-generated samples could be scored; "
                            f"keeping {fraction} of them leaves none: generate more (--samples)")
    ranked = sorted(valid, key=lambda i: (float(scores[i]), i))
    return sorted(ranked[:n_keep])


def start_token(tokenizer) -> int:
    tid = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    if tid is None:
        raise DetoxkitError("the tokenizer has neither an end-of-text nor a BOS token to start "
                            "unconditional samples from")
    return int(tid)


def generation_settings(config: SGEATConfig, lm) -> dict:
    return {"model": lm.name, "revision": lm.revision, "samples_seed": config.seed,
            "sample_tokens": config.sample_tokens, "top_p": config.top_p,
            "temperature": config.temperature, "chunk": config.chunk,
            "start_token": start_token(lm.tokenizer)}


def self_generate(config: SGEATConfig, lm, out: Path) -> list[dict]:
    """config.samples unconditional samples, from the cache file where they are already there."""
    from ..backends import Request, SamplingConfig
    from ..backends.hf.sampler import TransformersSampler

    out.mkdir(parents=True, exist_ok=True)
    path, settings_path = out / SAMPLES_FILE, out / "self_generated.json"
    settings = generation_settings(config, lm)
    if settings_path.exists() and path.exists():
        was = json.loads(settings_path.read_text(encoding="utf-8"))
        if was != settings:
            raise DetoxkitError(f"{path} holds samples drawn with other settings ({was}): use "
                                f"another --out, or remove the file to draw them again")
    write_json_atomic(settings_path, settings)
    rows = _whole_chunks(path, config.chunk)
    sampling = SamplingConfig(num_samples=config.chunk, max_new_tokens=config.sample_tokens,
                              top_p=config.top_p, temperature=config.temperature, seed=config.seed)
    sampler = TransformersSampler(lm, sampling)
    bar = Progress(config.samples, "sgeat self-generation", initial=min(len(rows), config.samples))
    with open(path, "a", encoding="utf-8") as fh:
        for a in range(len(rows), config.samples, config.chunk):
            indices = list(range(a, min(a + config.chunk, config.samples)))
            drawn = sampler.generate([Request("sgeat", [settings["start_token"]], indices)])
            chunk = [{"index": s.sample_index, "seed": s.seed, "text": s.text,
                      "n_tokens": s.n_tokens, "finished": s.finished} for s in drawn]
            fh.write("".join(json.dumps(r) + "\n" for r in chunk))  # one write per chunk
            fh.flush()
            rows += chunk
            bar.update(len(chunk))
    bar.close()
    return rows[:config.samples]


def _whole_chunks(path: Path, chunk: int) -> list[dict]:
    """The cached samples, up to the last whole chunk (a torn write is cut off and redrawn)."""
    if not path.exists():
        return []
    rows, lines = [], path.read_text(encoding="utf-8").splitlines(keepends=True)
    for line in lines:
        if not line.endswith("\n"):
            break
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    keep = (len(rows) // chunk) * chunk
    if keep < len(lines):
        path.write_text("".join(lines[:keep]), encoding="utf-8")
    return rows[:keep]


def train_sgeat(config: SGEATConfig) -> Path:
    """SGEAT: self-generate --samples unconditional samples (top-p 0.9, temperature 1), score
    them with --scorer, keep the least toxic --keep fraction, then the DAPT recipe on them."""
    import numpy as np

    from ..scorers import load_scorer

    set_threads(config.threads)
    out = default_out("sgeat", config, config.out)
    if finished_settings(out, config):  # done: no samples to draw or score
        log.info("%s already holds this sgeat model: nothing to do", out)
        return out
    lm = load_generator(config)
    t0 = time.time()
    rows = self_generate(config, lm, out)
    t1 = time.time()
    scorer = load_scorer(config.scorer, device=config.device)
    texts = [r["text"] for r in rows]
    scores = np.asarray(scorer.score(texts)["toxicity"], dtype=float)
    kept = least_toxic(texts, scores, config.keep)
    info = scorer.info()
    guided = sorted({info["name"], *info.get("guided_by", [])})
    all_valid = [float(s) for t, s in zip(texts, scores) if t.strip() and math.isfinite(s)]
    selection = {
        "samples": len(rows), "sample_tokens": config.sample_tokens, "top_p": config.top_p,
        "temperature": config.temperature, "scorer": info, "keep_fraction": config.keep,
        "kept": len(kept), "empty": sum(not t.strip() for t in texts),
        "unscored": int(sum(1 for t, s in zip(texts, scores) if t.strip() and not math.isfinite(s))),
        "max_kept_toxicity": round(float(max(scores[i] for i in kept)), 6),
        "mean_toxicity_kept": round(float(np.mean([scores[i] for i in kept])), 6),
        "mean_toxicity_all": round(float(np.mean(all_valid)), 6),
        "samples_file": SAMPLES_FILE,
        # this session's (a rerun reads cached samples: its generation time is near 0)
        "generation_s": round(t1 - t0, 1), "scoring_s": round(time.time() - t1, 1),
    }
    data = TrainingText([texts[i].strip() for i in kept],
                        f"self-generated:{lm.name} (least toxic {config.keep} by {info['name']})",
                        guided, {"generated": len(rows)})
    log.info("sgeat: kept %d of %d samples (toxicity <= %.4f by %s)", len(kept), len(rows),
             selection["max_kept_toxicity"], info["name"])
    return train_lm(config, data, "sgeat", out, {"self_generation": selection})


TRAINER = Trainer("sgeat", SGEATConfig, train_sgeat, report)
