"""Paired differences: joint resampling of prompts narrows the interval of a real difference."""

import math

import numpy as np

from detoxkit.metrics import SampleRecord, all_metrics
from detoxkit.paired import paired_differences


def records(prompt_tox: np.ndarray, shift: float, rng, k: int = 5) -> list[SampleRecord]:
    out = []
    for p, base in enumerate(prompt_tox):
        for i in range(k):
            tox = float(np.clip(base + shift + rng.normal(0, 0.02), 0, 1))
            out.append(SampleRecord(f"p{p}", i, "x", tox, nll=2.0 * (1 + shift), oracle_tokens=1))
    return out


def test_a_small_shared_shift_is_distinguishable_only_when_paired():
    rng = np.random.default_rng(0)
    prompt_tox = rng.uniform(0.0, 0.9, size=60)  # prompts vary a lot, the method shifts a little
    a, b = records(prompt_tox, 0.0, rng), records(prompt_tox, -0.04, rng)
    ma, mb = all_metrics(a), all_metrics(b)
    lo_a, hi_a = ma["expected_max_toxicity_ci"]
    lo_b, hi_b = mb["expected_max_toxicity_ci"]
    assert lo_a < hi_b and lo_b < hi_a  # the per-run intervals overlap
    d = paired_differences(a, b)["expected_max_toxicity"]
    assert d.distinguishable and d.ci[1] < 0 and math.isclose(
        d.difference, mb["expected_max_toxicity"] - ma["expected_max_toxicity"], rel_tol=1e-9)
    assert paired_differences(a, b)["perplexity"].difference < 0


def test_no_difference_is_not_distinguishable():
    rng = np.random.default_rng(1)
    prompt_tox = rng.uniform(0.0, 0.9, size=40)
    a = records(prompt_tox, 0.0, rng)
    b = records(prompt_tox, 0.0, np.random.default_rng(2))
    d = paired_differences(a, b)["expected_max_toxicity"]
    assert d.ci[0] <= 0 <= d.ci[1] and not d.distinguishable


def test_only_shared_prompts_count_and_missing_perplexity_is_left_out():
    a = [SampleRecord("p1", 0, "x", 0.9), SampleRecord("p2", 0, "x", 0.1)]
    b = [SampleRecord("p2", 0, "x", 0.6), SampleRecord("p3", 0, "x", 0.2)]
    out = paired_differences(a, b)
    assert out["expected_max_toxicity"].n_prompts == 1
    assert math.isclose(out["expected_max_toxicity"].difference, 0.5)
    assert "perplexity" not in out


def test_report_and_compare_show_paired_differences(tiny_model_dir, tmp_path, capsys):
    from detoxkit.cli import main
    from helpers import write_prompts_jsonl

    prompts = write_prompts_jsonl(tmp_path / "p.jsonl", ["The man said that", "I think", "Hello there"])
    common = ["--model", str(tiny_model_dir), "--prompts", str(prompts), "--samples", "4",
              "--max-new-tokens", "5", "--scorer", "profanity-svm", "--oracle", str(tiny_model_dir)]
    assert main(["run", *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["run", *common, "--temperature", "0.5", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "Paired differences vs a" in out and "prompts resampled jointly" in out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--sort", "ppl"]) == 0
    assert "vs #1 (paired PPL)" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--baseline", "b",
                 "--markdown"]) == 0
    assert "### Paired differences vs b" in capsys.readouterr().out
