"""The run store: torn lines, locking, atomic files."""

import json
import multiprocessing as mp

import pytest

from detoxkit.errors import DetoxkitError
from detoxkit.store import RunStore


def _hold_lock(path, ready, release):
    with RunStore(path).locked():
        ready.set()
        release.wait(30)


def test_second_writer_is_refused(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(DetoxkitError, match="in use by detoxkit pid"):
            with RunStore(tmp_path).locked():
                pass
    finally:
        release.set()
        proc.join(30)
    with RunStore(tmp_path).locked():  # free again once the holder is gone
        pass


def test_torn_last_line_is_cut_and_whole_lines_kept(tmp_path):
    store = RunStore(tmp_path)
    with store.locked():
        store.append_generations([{"prompt_id": "a", "sample_index": 0}])
        with open(tmp_path / "generations.jsonl", "a") as fh:
            fh.write('{"prompt_id": "a", "sampl')  # what kill -9 mid-write leaves
        assert [r["sample_index"] for r in store.generations()] == [0]
        assert store.repair() > 0
        store.append_generations([{"prompt_id": "a", "sample_index": 1}])
        assert [r["sample_index"] for r in store.generations()] == [0, 1]
    lines = (tmp_path / "generations.jsonl").read_text().splitlines()
    assert [json.loads(x)["sample_index"] for x in lines] == [0, 1]


def test_writes_need_the_lock(tmp_path):
    with pytest.raises(RuntimeError):
        RunStore(tmp_path).write_json("x.json", {})


def test_not_a_run(tmp_path):
    with pytest.raises(DetoxkitError, match="not a detoxkit run"):
        RunStore(tmp_path).read_json("metrics.json")


def _convert_profanity_svm(out_dir, start):
    from detoxkit.scorers.lexical import convert, package_files

    _, vec, model = package_files()
    start.wait(60)
    convert(vec, model, out_dir)


def test_processes_racing_to_convert_one_scorer_all_succeed(tmp_path):
    """Ray actors on one machine convert profanity-svm into the same cache directory at once;
    with a shared temporary name one actor's rename took the other's file away (CI, stop 23)."""
    from detoxkit.scorers.lexical import TfidfSVM

    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_convert_profanity_svm, args=(tmp_path, start)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    assert TfidfSVM(tmp_path).predict_proba(["a friendly sentence"]).shape == (1,)


def test_atomic_target_leaves_nothing_behind_when_the_writer_fails(tmp_path):
    from detoxkit.store import atomic_target

    target = tmp_path / "weights.bin"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_target(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["weights.bin"]
