"""`detoxkit train scorer`: reproduce detoxkit's scorer weights from the corpus.

  detoxkit train scorer                      # detoxkit-minilm, the shipped recipe (30k rows, 1 epoch, seed 0)
  detoxkit train scorer --variant e5         # detoxkit-e5 (multilingual head)

Only rows of the corpus's training pool are used (never the prompt pool, never
the RTP validation texts). Checkpoints go to --out; running the same command
again resumes. The held-out report is printed and written to --out/report.json;
the weights file can be used with `--scorer-option weights=PATH` or copied over
src/detoxkit/data/scorers/.
"""

from __future__ import annotations

import json
import sys


def register(targets) -> None:
    p = targets.add_parser("scorer", help="train detoxkit's toxicity scorer (LoRA MiniLM or multilingual e5 head)",
                           description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=("minilm", "e5"), default="minilm",
                   help="minilm: detoxkit-minilm (default scorer); e5: detoxkit-e5 (multilingual)")
    p.add_argument("--rows", type=int, help="training rows (default: 30000 minilm, 8000 e5)")
    p.add_argument("--epochs", type=int, help="epochs (default: 1 minilm, 60 e5 head)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output directory (default: $DETOXKIT_HOME/trained/scorers/<variant>)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--calib-rows", type=int, help="held-out rows for calibration (default 3000 minilm, 1000 e5)")
    p.add_argument("--test-rows", type=int, help="held-out rows for the report (default 3000 minilm, 1000 e5)")
    p.add_argument("--batch-size", type=int, help="minilm: rows per step (default 32)")
    p.add_argument("--max-length", type=int, help="minilm: tokens per training text (default 64)")
    p.add_argument("--lr", type=float, help="learning rate (default 5e-4 minilm, 1e-3 e5)")
    p.add_argument("--lora-rank", type=int, help="minilm: LoRA rank (default 16)")
    p.add_argument("--head", choices=("mlp", "linear"), help="e5: head type (default mlp)")
    p.add_argument("--checkpoint-every", type=int, help="minilm: steps between checkpoints (default 100)")
    p.add_argument("--corpus", help="corpus CSV (default: detoxkit's, see `detoxkit corpus fetch`)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from ..paths import cache_dir

    out = Path(args.out) if args.out else cache_dir("trained", "scorers", args.variant)
    given = {k: v for k, v in vars(args).items() if v is not None}
    bar = tqdm(unit="step", file=sys.stderr, disable=None)

    def progress(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    if args.variant == "minilm":
        from ..scorers.train_minilm import TrainConfig, train

        keys = ("rows", "epochs", "seed", "threads", "calib_rows", "test_rows", "batch_size", "max_length",
                "lr", "lora_rank", "checkpoint_every", "corpus")
        cfg = TrainConfig(**{k: given[k] for k in keys if k in given})
        report = train(cfg, out, progress=progress)
        weights = out / "detoxkit-minilm.safetensors"
        option = "detoxkit-minilm"
    else:
        from ..scorers.e5 import E5TrainConfig, train_e5

        keys = ("rows", "epochs", "seed", "threads", "calib_rows", "test_rows", "lr", "head", "corpus")
        cfg = E5TrainConfig(**{k: given[k] for k in keys if k in given})
        report = train_e5(cfg, out, progress=progress)
        weights = out / "detoxkit-e5.safetensors"
        option = "detoxkit-e5"
    bar.close()
    held = report["calibrated"]
    print(f"held-out ({held['n']} corpus rows, {held['positives']} offensive): AUC {held['auc']:.4f}  "
          f"accuracy@0.5 {held['accuracy@0.5']:.4f}  Brier {held['brier']:.4f}  ECE {held['ece']:.4f}")
    print("reliability (calibrated score bin: n, mean score, offensive rate):")
    for row in held["reliability"]:
        print(f"  {row['bin']}: {row['n']:>5}  {row['mean_score']:.3f}  {row['positive_rate']:.3f}")
    print(f"weights: {weights}")
    print(f"use: detoxkit scorers validate --scorer {option} --scorer-option weights={weights} --data ...")
    print(json.dumps({"weights": str(weights), "heldout_auc": held["auc"], "ece": held["ece"]}))
    return 0
