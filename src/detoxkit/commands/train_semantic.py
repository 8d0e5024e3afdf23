"""`detoxkit train semantic-control`: the generator-token table of semantic-control.

semantic-control maps each candidate generator token into the verifier's (detoxkit-minilm)
sentence-embedding space. The table holds, per token of the generator's tokenizer, the sum of
the verifier's output vectors of the token's WordPiece pieces (the token encoded alone) and
their count. It reads no corpus rows: only the tokenizer's vocabulary and the verifier. It goes
to the cache (`$DETOXKIT_HOME/methods/semantic-table-<tokenizer fingerprint>.safetensors`),
where the method looks first; --out overrides.
"""

from __future__ import annotations

from pathlib import Path


def register(targets) -> None:
    p = targets.add_parser("semantic-control",
                           help="semantic-control's generator-token table in the verifier's space")
    p.add_argument("--model", default="smollm2-135m", help="generator (its tokenizer)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=256, help="token texts per verifier batch")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--out", default=None)
    p.set_defaults(func=_table)


def _table(args) -> int:
    import torch

    from ..methods.semantic import build_table
    from ..models import load_lm

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_lm(args.model, device=args.device, dtype="float32")
    out = build_table(lm.tokenizer, Path(args.out) if args.out else None, batch=args.batch,
                      device=args.device, model_name=str(lm.name))
    print(out)
    return 0
