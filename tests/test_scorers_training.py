"""`detoxkit train scorer` on a small slice of the corpus: reproducible, resumable, loadable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest


def _real_corpus() -> Path | None:
    """The corpus CSV as `detoxkit corpus fetch` left it (computed before the tests isolate DETOXKIT_HOME)."""
    try:
        from detoxkit.corpus import corpus_path

        path = corpus_path()
        return path if path.exists() else None
    except Exception:  # noqa: BLE001 - not fetched: the tests skip
        return None


CORPUS = _real_corpus()
needs_corpus = pytest.mark.skipif(CORPUS is None, reason="corpus not fetched (run `detoxkit corpus fetch`)")


@pytest.fixture(scope="module")
def corpus_slice(tmp_path_factory) -> Path:
    """The first rows of the real corpus, enough offensive and clean ones for a few steps."""
    out = tmp_path_factory.mktemp("corpus") / "slice.csv"
    with open(CORPUS, newline="", encoding="utf-8") as src, open(out, "w", newline="", encoding="utf-8") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=["is_offensive", "text"])
        writer.writeheader()
        counts = {0: 0, 1: 0}
        for rec in reader:
            label = int(float(rec["is_offensive"]))
            if counts[label] < 150 and 20 < len(rec["text"]) < 300:
                writer.writerow({"is_offensive": label, "text": rec["text"]})
                counts[label] += 1
            if min(counts.values()) >= 150:
                break
    return out


def small_config(corpus: Path):
    from detoxkit.training.scorer_minilm import MiniLMConfig

    return MiniLMConfig(rows=48, batch_size=16, max_length=32, lora_rank=4, lora_alpha=8, calib_rows=40,
                        test_rows=40, threads=1, checkpoint_every=1, seed=3, corpus=str(corpus))


def tensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


@needs_corpus
def test_training_is_reproducible_and_resumable(corpus_slice, tmp_path):
    from dataclasses import replace

    from detoxkit.corpus import split_training_pool
    from detoxkit.scorers.minilm import MiniLMToxicityScorer
    from detoxkit.training.scorer_minilm import train

    cfg = small_config(corpus_slice)
    calib, test, rows = split_training_pool(cfg.calib_rows, cfg.test_rows, cfg.rows, cfg.seed, cfg.corpus)
    assert len(rows) == 48 and not ({t for t, _ in rows} & {t for t, _ in calib + test})

    assert train(replace(cfg, out=str(tmp_path / "a"))) == tmp_path / "a" / "detoxkit-minilm.safetensors"
    straight = json.loads((tmp_path / "a" / "report.json").read_text())
    # interrupted after one step
    assert train(replace(cfg, out=str(tmp_path / "b"), stop_after=1)) == tmp_path / "b" / "checkpoint.safetensors"
    assert (tmp_path / "b" / "checkpoint.safetensors").exists()
    assert not (tmp_path / "b" / "detoxkit-minilm.safetensors").exists()
    train(replace(cfg, out=str(tmp_path / "b")))
    resumed = json.loads((tmp_path / "b" / "report.json").read_text())
    a, b = tensors(tmp_path / "a" / "detoxkit-minilm.safetensors"), tensors(tmp_path / "b" / "detoxkit-minilm.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("lora.") for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert straight["calibrated"]["auc"] == resumed["calibrated"]["auc"]

    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert {"auc", "ece", "brier", "reliability"} <= set(report["calibrated"])
    assert report["config"]["rows"] == 48 and report["config"]["seed"] == 3

    scorer = MiniLMToxicityScorer(weights=str(tmp_path / "a" / "detoxkit-minilm.safetensors"), batch_size=8)
    out = scorer.score(["hello there", "", "x " * 300])["toxicity"]
    assert out.shape == (3,) and np.all((out >= 0) & (out <= 1))


@needs_corpus
def test_checkpoint_of_other_settings_is_refused(corpus_slice, tmp_path):
    from dataclasses import replace

    from detoxkit.errors import DetoxkitError
    from detoxkit.training.scorer_minilm import train

    cfg = replace(small_config(corpus_slice), out=str(tmp_path))
    train(replace(cfg, stop_after=1))
    with pytest.raises(DetoxkitError, match="other settings"):
        train(replace(cfg, lr=1e-3))


@needs_corpus
def test_bfloat16_training_steps_move_the_same_way_and_are_their_own_run(corpus_slice, tmp_path):
    """--precision bfloat16 trains under autocast: the shipped weights stay float32 and close to
    the float32 run's, and its checkpoint is not resumed by a float32 command."""
    from dataclasses import replace

    from detoxkit.errors import DetoxkitError
    from detoxkit.training.scorer_minilm import train

    cfg = small_config(corpus_slice)
    train(replace(cfg, out=str(tmp_path / "fp32")))
    train(replace(cfg, out=str(tmp_path / "bf16"), precision="bfloat16"))
    a, b = (tensors(tmp_path / d / "detoxkit-minilm.safetensors") for d in ("fp32", "bf16"))
    assert a.keys() == b.keys()
    assert b["head.weight"].dtype == np.float32
    moved_a = {k: a[k] for k in a if k.startswith("lora.") and k.endswith(".B")}
    # lora B starts at 0: both runs moved it, in nearly the same direction
    flat_a = np.concatenate([a[k].ravel().astype(np.float64) for k in sorted(moved_a)])
    flat_b = np.concatenate([b[k].ravel().astype(np.float64) for k in sorted(moved_a)])
    cos = flat_a @ flat_b / (np.linalg.norm(flat_a) * np.linalg.norm(flat_b))
    assert np.linalg.norm(flat_b) > 0 and cos > 0.9
    train(replace(cfg, out=str(tmp_path / "mixed"), precision="bfloat16", stop_after=1))
    with pytest.raises(DetoxkitError, match="other settings"):
        train(replace(cfg, out=str(tmp_path / "mixed")))


def test_platt_fit_recovers_a_known_calibration():
    from detoxkit.stats import fit_platt

    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-(0.5 * z - 1.0)))).astype(int)
    a, b = fit_platt(z, y)
    assert a == pytest.approx(0.5, abs=0.05) and b == pytest.approx(-1.0, abs=0.08)


def test_cli_help_lists_the_recipe(capsys):
    from detoxkit.cli import main

    assert main(["train", "scorer", "--help"]) == 0
    assert "--rows" in capsys.readouterr().out
