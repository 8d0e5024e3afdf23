"""The moral direction: the shipped phrase file and direction, the scorer, `detoxkit train moral`
on a small slice, and `detoxkit score --scorer moral-direction` on a run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from detoxkit.store import read_jsonl
import torch

from detoxkit.cli import main
from detoxkit.errors import DetoxkitError
from detoxkit.paths import package_data
from detoxkit.scorers import load_scorer
from detoxkit.scorers.moral import (DIRECTION_NAME, MoralDirectionScorer, SentenceEncoder,
                                    read_direction, read_phrases)


@pytest.fixture(scope="module")
def scorer():
    return load_scorer("moral-direction")


def test_shipped_phrases_are_balanced_with_a_heldout_split():
    rows = read_phrases()
    assert 250 <= len(rows) <= 600
    assert len({r["phrase"] for r in rows}) == len(rows)
    n_norm = sum(r["label"] for r in rows)
    assert 0.4 <= n_norm / len(rows) <= 0.6
    held = [r for r in rows if r["split"] == "heldout"]
    assert 0.15 <= len(held) / len(rows) <= 0.25 and {r["label"] for r in held} == {0, 1}
    assert {r["note"] for r in rows} == {"detoxkit:atomic", "detoxkit:context"}


def test_shipped_direction_is_small_and_recorded():
    path = package_data("moral", DIRECTION_NAME)
    assert path.stat().st_size < 100_000
    tensors, meta = read_direction(path)
    assert tensors["mean"].shape == tensors["direction"].shape == (384,)
    assert torch.isclose(tensors["direction"].norm(), torch.tensor(1.0), atol=1e-4)
    assert meta["encoder"] == "all-MiniLM-L6-v2" and "detoxkit train moral" in meta["created_by"]
    assert json.loads(meta["phrases"])["file"] == "actions.tsv"
    assert float(meta["heldout_auc"]) > 0.75


def test_training_phrases_span_minus_one_to_one_and_are_oriented(scorer):
    """Templated training phrases lie in [-1, 1], the most extreme one exactly at +-1, and
    normative ones score high (a slice of 40 phrases plus the extreme one, for speed)."""
    train = [r for r in read_phrases() if r["split"] == "train"]
    tensors, meta = read_direction(scorer.path)
    rows = [r for y in (0, 1) for r in train if r["label"] == y][::6]
    rows.append(next(r for r in train if r["phrase"] == meta["extreme_phrase"]))
    emb = SentenceEncoder().embed_templated([r["phrase"] for r in rows], json.loads(meta["templates"]))
    raw = ((emb - tensors["mean"]) @ tensors["direction"]) / tensors["scale"]
    assert raw.abs().max() == pytest.approx(1.0, abs=1e-4) and raw[-1].abs() == raw.abs().max()
    labels = torch.tensor([r["label"] for r in rows])
    assert raw[labels == 1].mean() > 0.2 > -0.2 > raw[labels == 0].mean()


def test_scorer_attributes_and_direction(scorer):
    texts = ["help my neighbour carry her shopping", "thank the nurse for her care",
             "torture a prisoner", "steal money from an old woman", ""]
    out = scorer.score(texts)
    assert set(out) == {"toxicity", "non_normative", "normative"}
    for a in out.values():
        assert a.shape == (5,) and np.all((a >= 0) & (a <= 1))
    assert np.allclose(out["toxicity"], out["non_normative"])
    assert np.allclose(out["normative"] + out["non_normative"], 1.0)
    assert out["normative"][:2].min() > out["normative"][2:4].max()
    moral = scorer.moral_scores(texts)
    assert np.allclose(moral, 2 * out["normative"] - 1)
    info = scorer.info()
    assert info["languages"] == ["en"] and info["version"].startswith("1+")
    assert "all-MiniLM-L6-v2" in info["version"]


def test_raw_scores_are_the_unclipped_axis(scorer):
    """raw_scores: the reference's axis (projection / fixed scale, no clipping); moral_scores
    clips it to [-1, 1]; the scorer's attributes rescale the clipped score to [0, 1]."""
    texts = ["help my neighbour carry her shopping", "torture a prisoner", "kill", "hug"]
    raw, clipped = scorer.raw_scores(texts), scorer.moral_scores(texts)
    assert np.allclose(np.clip(raw, -1, 1), clipped)
    assert raw[0] > raw[1]
    emb = scorer.encoder.embed(texts)
    direct = ((emb - scorer.mean) @ scorer.direction) / scorer.scale
    assert np.allclose(raw, direct.double().numpy(), atol=1e-6)
    assert np.allclose(scorer.score(texts)["normative"], (1 + clipped) / 2)


def test_template_mode_scores_action_phrases(scorer):
    templ = MoralDirectionScorer(template=True)
    assert templ.version != scorer.version
    s = templ.moral_scores(["comfort a crying child", "poison the water supply"])
    assert s[0] > 0 > s[1]


def test_bad_direction_file_is_a_clear_error(tmp_path):
    with pytest.raises(DetoxkitError, match="does not exist"):
        MoralDirectionScorer(direction=str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DetoxkitError, match="bad.safetensors"):
        MoralDirectionScorer(direction=str(bad))


def test_bad_phrase_file_is_a_clear_error(tmp_path):
    p = tmp_path / "phrases.tsv"
    p.write_text("phrase\tlabel\tsplit\tnote\nhelp\tgood\ttrain\tx\n", encoding="utf-8")
    with pytest.raises(DetoxkitError, match="row 2"):
        read_phrases(p)


def test_train_moral_on_a_small_slice(tmp_path, capsys):
    out = tmp_path / "direction.safetensors"
    assert main(["train", "moral", "--limit", "30", "--templates", "Should I {}?|Is it okay to {}?",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "explained variance ratio" in printed and "heldout" in printed
    report = json.loads(printed.strip().splitlines()[-1])
    assert report["phrases"]["train"] + report["phrases"]["heldout"] == 60
    assert 0 < report["explained_variance_ratio"][0] < 1
    assert report["train"]["auc"] > 0.7
    tensors, meta = read_direction(out)
    assert json.loads(meta["templates"]) == ["Should I {}?", "Is it okay to {}?"]
    sc = MoralDirectionScorer(direction=str(out))
    s = sc.moral_scores(["help a stranger in need", "kill people"])
    assert s[0] > s[1]
    assert main(["train", "moral", "--templates", "no slot here", "--out", str(out)]) != 0
    assert "must hold exactly one" in capsys.readouterr().err


def test_score_a_run_with_moral_direction(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"id": str(i), "text": t}) for i, t in
                                 enumerate(["The man said that", "I think"])) + "\n")
    run = tmp_path / "run"
    assert main(["run", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--samples", "2",
                 "--max-new-tokens", "4", "--oracle", "none", "--scorer", "profanity-svm",
                 "--out", str(run)]) == 0
    assert main(["score", str(run), "--scorer", "moral-direction"]) == 0
    rows = read_jsonl((run / "generations.jsonl"))
    assert all(0 <= r["scores"]["moral-direction"]["non_normative"] <= 1 for r in rows)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "moral-direction" in metrics["by_scorer"]
    assert metrics["by_scorer"]["moral-direction"]["expected_max_toxicity"] is not None
