"""`detoxkit train semantic-control`: the generator-token table of semantic-control.

semantic-control maps each candidate generator token into the verifier's (detoxkit-minilm)
sentence-embedding space. The table holds, per token of the generator's tokenizer, the sum
of the verifier's output vectors of the token's WordPiece pieces (the token encoded alone)
and their count. It reads no corpus rows: only the tokenizer's vocabulary and the verifier.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..artefacts import artefact_name, output_path, save_table, tokenizer_fingerprint
from ..progress import Progress
from .base import GeneratorConfig, Trainer, load_generator, set_threads, setting

log = logging.getLogger(__name__)


@dataclass
class SemanticTableConfig(GeneratorConfig):
    batch: int = setting(256, "token texts per verifier batch")
    threads: int | None = setting(None, "torch threads (default: torch's choice)")
    out: str | None = setting(None, "output file (default: the cache, "
                                    "$DETOXKIT_HOME/methods/semantic-table-<tokenizer>.safetensors)")


def token_texts(tokenizer) -> list[str]:
    """The text of every generator token id on its own (special tokens -> "")."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    return ["" if i in special else tokenizer.decode([i], skip_special_tokens=True)
            for i in range(len(tokenizer))]


def train(config: SemanticTableConfig) -> Path:
    """Map every generator token into the verifier's space: U[u] (sum of the verifier's output
    vectors of u's WordPiece tokens, u encoded alone, float16) and w[u] (their count)."""
    import torch

    from ..methods.semantic import FORMAT, KIND, VERIFIER, get_verifier

    set_threads(config.threads)
    lm = load_generator(config)
    tokenizer, model_name = lm.tokenizer, str(lm.name)
    verifier = get_verifier(config.device)
    texts = token_texts(tokenizer)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    U = torch.zeros(len(texts), 384, dtype=torch.float32)
    w = torch.zeros(len(texts), dtype=torch.float32)
    t0 = time.time()
    bar = Progress(len(order), "semantic-control table", unit="tokens")
    for k in range(0, len(order), config.batch):
        idx = order[k:k + config.batch]
        s, n = verifier.piece_sums([texts[i] for i in idx])
        U[idx], w[idx] = s.cpu(), n.cpu()
        bar.update(len(idx))
    bar.close()
    path = output_path(artefact_name(KIND, tokenizer), config.out)
    meta = {"format": FORMAT, "verifier": VERIFIER, "verifier_version": verifier.version,
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer), "vocab": len(texts),
            "model": model_name, "command": f"detoxkit train semantic-control --model {model_name}",
            "seconds": round(time.time() - t0, 1), "corpus_rows": 0,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    save_table(path, {"U": U.half(), "w": w.to(torch.int16)}, meta)
    log.info("semantic-control table: %d tokens -> %s", len(texts), path)
    return path


TRAINER = Trainer("semantic-control", SemanticTableConfig, train)
