"""`detoxkit train pplm-head`: PPLM's attribute head (a linear layer on the generator's mean
last hidden state), trained on the corpus's training pool with the generator frozen.

Output goes to the cache (`$DETOXKIT_HOME/methods/pplm-MODEL-REV.safetensors`), where
`--method pplm` looks first; --out overrides.
"""

from __future__ import annotations

from pathlib import Path


def register(targets) -> None:
    p = targets.add_parser("pplm-head", help="PPLM attribute head (non-toxic / toxic) for a generator")
    p.add_argument("--model", default="smollm2-135m", help="generator whose hidden states it reads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", type=int, default=6000, help="balanced corpus rows (a tenth held out)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--max-len", type=int, default=64, help="tokens per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.set_defaults(func=_pplm_head)


def _pplm_head(args) -> int:
    from ..methods.pplm_train import train_pplm_head
    from ..models import load_lm

    lm = load_lm(args.model, device=args.device, dtype="float32")
    out = train_pplm_head(lm, Path(args.out) if args.out else None, rows=args.rows,
                          epochs=args.epochs, lr=args.lr, batch=args.batch, max_len=args.max_len,
                          seed=args.seed)
    print(out)
    return 0
