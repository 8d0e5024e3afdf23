"""Bad input, as a new user would give it: one line naming the file, line and field where they
apply, exit code 2, no traceback, nothing created for a new run, and no change to an existing run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from detoxkit.cli import main
from helpers import RTP_CHALLENGING

TINY = ["--samples", "2", "--max-new-tokens", "4", "--scorer", "profanity-svm", "--oracle", "none"]


def snapshot(run_dir: Path) -> dict[str, tuple[str, int]]:
    """Contents and times of a run's files (not .lock, which names its last holder)."""
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.iterdir()) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir):
    """Prompt, config and model files, good and bad, and one finished run."""
    d = tmp_path_factory.mktemp("bad-input")
    good = d / "good.jsonl"
    good.write_text("".join(line for line, _ in zip(open(RTP_CHALLENGING, encoding="utf-8"), range(3))),
                    encoding="utf-8")
    rows = {
        "malformed.jsonl": b'{"text": "fine"}\n{"text": "broken\n',
        "nul.jsonl": b'{"text": "fine"}\n{"text": "a \\u0000 inside"}\n',
        "empty_text.jsonl": b'{"text": "fine"}\n{"text": "   "}\n',
        "utf8.jsonl": b'{"text": "fine"}\n{"text": "caf\xe9"}\n',
        "dupe.jsonl": b'{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n',
        "toxicity.jsonl": b'{"text": "one", "toxicity": "high"}\n',
        "range.jsonl": b'{"text": "one", "toxicity": 1.5}\n',
        "not_object.jsonl": b'{"text": "one"}\n[1, 2]\n',
        "notext.csv": b"id,body\n1,hello\n",
        "ragged.csv": b"id,text\n1,hello,extra\n",
        "text_type.jsonl": b'{"text": 42}\n',
        "unknown.yaml": b"model: smollm2-135m\nsampels: 5\n",
        "wrongtype.yaml": b"samples: ten\n",
        "broken.yaml": b"samples: [1, 2\n",
        "list.yaml": b"- samples\n",
        "badvalue.yaml": b"top_p: 2.5\n",
        "weights.safetensors": b"not a model",
    }
    for name, data in rows.items():
        (d / name).write_bytes(data)
    (d / "pickled").mkdir()
    (d / "pickled" / "config.json").write_text("{}")
    (d / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    (d / "a-dir").mkdir()
    (d / "not-a-run").mkdir()
    finished = d / "finished"
    assert main(["run", "--model", str(tiny_model_dir), "--prompts", str(good), *TINY,
                 "--out", str(finished)]) == 0
    return {"dir": d, "good": good, "finished": finished, "model": tiny_model_dir}


def _run(f, *extra, prompts=None, out=None):
    return ["run", "--model", str(f["model"]), "--prompts", str(prompts or f["good"]), *TINY,
            *map(str, extra), "--out", str(out or f["dir"] / "new-run")]


CASES = {
    # options out of range or of the wrong type
    "batch-size -1": (lambda f: _run(f, "--batch-size", "-1"), "field 'batch_size': must be >= 0"),
    "top-p 1.5": (lambda f: _run(f, "--top-p", "1.5"), "field 'top_p': must be in (0, 1]"),
    "top-p 0": (lambda f: _run(f, "--top-p", "0"), "field 'top_p'"),
    "temperature -1": (lambda f: _run(f, "--temperature", "-1"), "field 'temperature': must be >= 0"),
    "top-k -1": (lambda f: _run(f, "--top-k", "-1"), "field 'top_k': must be >= 0"),
    "samples 0": (lambda f: _run(f, "--samples", "0"), "field 'samples': must be >= 1"),
    "max-new-tokens 0": (lambda f: _run(f, "--max-new-tokens", "0"), "field 'max_new_tokens'"),
    "limit 0": (lambda f: _run(f, "--limit", "0"), "field 'limit': must be >= 1"),
    "on-bad maybe": (lambda f: _run(f, "--on-bad", "maybe"), "field 'on_bad'"),
    "dtype float64": (lambda f: _run(f, "--dtype", "float64"), "field 'dtype'"),
    "device tpu": (lambda f: _run(f, "--device", "tpu"), "field 'device'"),
    "samples abc": (lambda f: _run(f, "--samples", "abc"), "argument --samples: invalid int value"),
    "unknown flag": (lambda f: _run(f, "--sampels", "3"), "unrecognized arguments: --sampels"),
    # method and scorer specs
    "method bad value": (lambda f: _run(f, "--method", "cfl:strength=abc"), "method 'cfl': bad settings"),
    "method unknown setting": (lambda f: _run(f, "--method", "cfl:strenght=2"),
                               "unknown setting 'strenght' (did you mean 'strength'?)"),
    "method unknown name": (lambda f: _run(f, "--method", "dexpert"), "Did you mean: dexperts"),
    "method positional": (lambda f: _run(f, "--method", "cfl:loud"), "expected key=value"),
    "method unbalanced": (lambda f: _run(f, "--method", "gate:wrap=(cfl"), "unbalanced"),
    "gate bad check": (lambda f: _run(f, "--method", "gate:wrap=cfl,check=vibes"), "check must be one of"),
    "scorer unknown name": (lambda f: _run(f, "--scorer", "profanity-svn"), "Did you mean: profanity-svm"),
    "scorer unknown setting": (lambda f: _run(f, "--scorer", "profanity-svm:colour=red"),
                               "scorer 'profanity-svm': unknown setting 'colour'"),
    # prompt files
    "prompts missing": (lambda f: _run(f, prompts=f["dir"] / "nope.jsonl"), "nope.jsonl: no such file"),
    "prompts directory": (lambda f: _run(f, prompts=f["dir"] / "a-dir"), "is a directory"),
    "prompts unknown name": (lambda f: _run(f, prompts="embeded"), "Did you mean: embedded"),
    "malformed line": (lambda f: _run(f, prompts=f["dir"] / "malformed.jsonl"), "malformed.jsonl, line 2"),
    "NUL in text": (lambda f: _run(f, prompts=f["dir"] / "nul.jsonl"),
                    "nul.jsonl, line 2, field 'text': the text holds a NUL character"),
    "empty text": (lambda f: _run(f, prompts=f["dir"] / "empty_text.jsonl"),
                   "empty_text.jsonl, line 2, field 'text': empty prompt"),
    "invalid utf-8": (lambda f: _run(f, prompts=f["dir"] / "utf8.jsonl"), "utf8.jsonl, line 2: invalid UTF-8"),
    "duplicate id": (lambda f: _run(f, prompts=f["dir"] / "dupe.jsonl"), "field 'id': duplicate id 'a'"),
    "toxicity not a number": (lambda f: _run(f, prompts=f["dir"] / "toxicity.jsonl"),
                              "toxicity.jsonl, line 1, field 'toxicity'"),
    "toxicity out of range": (lambda f: _run(f, prompts=f["dir"] / "range.jsonl"), "field 'toxicity'"),
    "not an object": (lambda f: _run(f, prompts=f["dir"] / "not_object.jsonl"), "line 2"),
    "csv without text": (lambda f: _run(f, prompts=f["dir"] / "notext.csv"), "notext.csv"),
    "ragged csv": (lambda f: _run(f, prompts=f["dir"] / "ragged.csv"), "ragged.csv, line 2"),
    "text not a string": (lambda f: _run(f, prompts=f["dir"] / "text_type.jsonl"), "expected a string"),
    # config files
    "config missing": (lambda f: ["run", "--config", str(f["dir"] / "none.yaml")], "config file not found"),
    "config unknown key": (lambda f: ["run", "--config", str(f["dir"] / "unknown.yaml")],
                           "unknown.yaml, line 2, field 'sampels'"),
    "config wrong type": (lambda f: ["run", "--config", str(f["dir"] / "wrongtype.yaml")],
                          "wrongtype.yaml, line 1, field 'samples': has the wrong type"),
    "config broken yaml": (lambda f: ["run", "--config", str(f["dir"] / "broken.yaml")], "not valid YAML"),
    "config not a mapping": (lambda f: ["run", "--config", str(f["dir"] / "list.yaml")], "must be a mapping"),
    "config bad value": (lambda f: ["run", "--config", str(f["dir"] / "badvalue.yaml"),
                                    "--out", str(f["dir"] / "new-run")], "field 'top_p'"),
    # models
    "model missing dir": (lambda f: [*_run(f)[:1], "--model", str(f["dir"] / "no-model"),
                                     *_run(f)[3:]], "does not exist"),
    "model is a file": (lambda f: [*_run(f)[:1], "--model", str(f["dir"] / "weights.safetensors"),
                                   *_run(f)[3:]], "is a file"),
    "model pickle only": (lambda f: [*_run(f)[:1], "--model", str(f["dir"] / "pickled"),
                                     *_run(f)[3:]], "pickle"),
    "oracle missing": (lambda f: [*_run(f)[:-2], "--oracle", str(f["dir"] / "no-oracle"), "--out",
                                  str(f["dir"] / "new-run")], "no-oracle does not exist"),
    # the existing run: refused, untouched
    "resume other config": (lambda f: _run(f, "--seed", "9", out=f["finished"]), "different config"),
    "score missing run": (lambda f: ["score", str(f["dir"] / "new-run"), "--scorer", "profanity-svm"],
                          "not a detoxkit run directory"),
    "score not a run": (lambda f: ["score", str(f["dir"] / "not-a-run"), "--scorer", "profanity-svm"],
                        "not a detoxkit run directory"),
    "score unknown scorer": (lambda f: ["score", str(f["finished"]), "--scorer", "nosuch"], "unknown scorer"),
    "report missing run": (lambda f: ["report", str(f["dir"] / "new-run")], "no such run directory"),
    "compare unknown metric": (lambda f: ["compare", str(f["finished"]), "--sort", "vibes"], "vibes"),
    "train bad number": (lambda f: ["train", "cfl", "--sentences", "many"], "invalid int value"),
    "validate missing data": (lambda f: ["scorers", "validate", "--scorer", "profanity-svm", "--data",
                                         str(f["dir"] / "none.csv")], "none.csv"),
    "ls unknown kind": (lambda f: ["ls", "gadgets"], "invalid choice: 'gadgets'"),
}


def test_the_suite_is_big_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line_and_changes_nothing(case, files, capsys):
    build, expected = CASES[case]
    before = snapshot(files["finished"])
    capsys.readouterr()
    assert main(build(files)) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("detoxkit: error: "), err
    assert expected in lines[-1], lines[-1]
    assert not (files["dir"] / "new-run").exists()
    assert snapshot(files["finished"]) == before


def test_resume_after_the_prompt_file_changed_is_refused(files, tmp_path, capsys):
    """The same path with other contents: the run keeps its own prompts (fingerprinted)."""
    prompts = tmp_path / "s.jsonl"
    prompts.write_text("".join(line for line, _ in zip(open(RTP_CHALLENGING, encoding="utf-8"), range(2))))
    args = ["run", "--model", str(files["model"]), "--prompts", str(prompts), *TINY,
            "--out", str(tmp_path / "s")]
    assert main(args) == 0
    before = snapshot(tmp_path / "s")
    lines = open(RTP_CHALLENGING, encoding="utf-8").read().splitlines()[5:7]
    prompts.write_text("\n".join(lines) + "\n")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "other prompts" in err and "Restore it" in err
    assert snapshot(tmp_path / "s") == before
    assert len(json.loads((tmp_path / "s" / "metrics.json").read_text())["by_prompt_toxicity"]) <= 2
