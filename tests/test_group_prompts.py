"""BOLD and ToxiGen prompt sets on local files in exactly their formats (and the shared copies),
malformed rows naming file, line and field, --group-field, offline errors, ls prompts / risks."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from detoxkit.cli import main
from detoxkit.errors import InputError
from detoxkit.prompts import load_prompts
from detoxkit.prompts.groups import toxigen_statements
from helpers import shared_data

BOLD_DIR = shared_data("bold")
TOXIGEN_DIR = shared_data("toxigen")


def write_bold(path, data) -> str:
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_bold_local_file_carries_domain_group_and_entity(tmp_path):
    path = write_bold(tmp_path / "religious_ideology_prompt.json", {
        "judaism": {"Torah": ["The Torah is the ", "In the Torah, "]},
        "islam": {"Quran": ["The Quran was "]}})
    ps = load_prompts(path)
    assert [p.text for p in ps] == ["The Torah is the ", "In the Torah, ", "The Quran was "]
    assert {(p.meta["domain"], p.meta["group"], p.meta["entity"]) for p in ps} == {
        ("religious_ideology", "judaism", "Torah"), ("religious_ideology", "islam", "Quran")}
    assert ps.provenance["format"] == "bold"
    assert len({p.id for p in ps}) == 3


def test_bold_malformed_rows_name_file_line_and_field(tmp_path):
    text = '{"judaism": {"Torah": ["ok "]},\n "islam": {"Quran": ["fine ", 7]}}'
    path = tmp_path / "religious_ideology_prompt.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as exc:
        load_prompts(str(path))
    msg = str(exc.value)
    assert str(path) in msg and "line 2" in msg and "islam.Quran[1]" in msg and "expected a string" in msg
    ps = load_prompts(str(path), on_bad="skip")
    assert [p.text for p in ps] == ["ok ", "fine "]
    assert ps.skipped[0]["line"] == 2 and ps.skipped[0]["field"] == "islam.Quran[1]"
    broken = tmp_path / "gender_prompt.json"
    broken.write_text('{"American_actors": {"A_B": ["x "]},\n "American_actresses": {"C": ["y "]]}',
                      encoding="utf-8")
    with pytest.raises(InputError, match=r"gender_prompt.json, line 2: malformed JSON"):
        load_prompts(str(broken))


def test_bold_shared_copy_by_dir_matches_the_files():
    expected = Counter()
    for domain in ("gender", "race"):
        data = json.loads((BOLD_DIR / f"{domain}_prompt.json").read_text(encoding="utf-8"))
        for group, entities in data.items():
            expected[(domain, group)] += sum(len(v) for v in entities.values())
    ps = load_prompts(f"bold:dir={BOLD_DIR},domains=(gender,race)")
    got = Counter((p.meta["domain"], p.meta["group"]) for p in ps)
    assert got == expected
    balanced = load_prompts(f"bold:dir={BOLD_DIR},domains=(race),per_group=25")
    assert Counter(p.meta["group"] for p in balanced) == {g: 25 for _, g in expected if _ == "race"}


def test_toxigen_local_file_and_statements(tmp_path):
    path = tmp_path / "hate_women_1k.txt"
    lines = ["- first claim about them\\n- second claim\\n-", "- another one\\n-"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ps = load_prompts(str(path))
    assert len(ps) == 2 and ps.provenance["format"] == "toxigen"
    p = ps.prompts[0]
    assert p.meta["domain"] == "hate" and p.meta["group"] == "women" and p.meta["line"] == 1
    assert p.text.endswith("\n-")  # the generator fills the slot after the last dash
    assert toxigen_statements(p.text) == ["first claim about them", "second claim"]


def test_toxigen_malformed_lines_name_file_and_line(tmp_path):
    path = tmp_path / "neutral_asian_1k.txt"
    path.write_bytes(b"- fine statement\\n-\nno dash items here\n- \xff bad bytes\\n-\n")
    with pytest.raises(InputError) as exc:
        load_prompts(str(path))
    assert "neutral_asian_1k.txt, line 2, field 'text'" in str(exc.value)
    ps = load_prompts(str(path), on_bad="skip")
    assert len(ps) == 1 and [s["line"] for s in ps.skipped] == [2, 3]
    assert "invalid UTF-8" in ps.skipped[1]["reason"]


def test_toxigen_shared_copy_by_dir():
    ps = load_prompts(f"toxigen:dir={TOXIGEN_DIR},groups=(asian,women)")
    assert Counter((p.meta["domain"], p.meta["group"]) for p in ps) == {
        ("hate", "asian"): 1000, ("neutral", "asian"): 1000, ("hate", "women"): 1000,
        ("neutral", "women"): 1000}
    hate = load_prompts(f"toxigen:dir={TOXIGEN_DIR},kind=hate,groups=(muslim),per_group=10")
    assert len(hate) == 10 and {p.meta["kind"] for p in hate} == {"hate"}


def test_group_field_on_a_users_file(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("text,who\nThe nurse said,women\nThe pilot said,men\n", encoding="utf-8")
    ps = load_prompts(str(path), group_field="who")
    assert [p.meta["group"] for p in ps] == ["women", "men"]
    path.write_text("text,who\nThe nurse said,women\nThe pilot said,\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"mine.csv, line 3, field 'who': missing group field"):
        load_prompts(str(path), group_field="who")


def test_offline_error_says_how_to_pass_local_files(monkeypatch, tmp_path):
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(Exception) as exc:
        load_prompts("bold:domains=(gender)")
    assert "bold:dir=PATH" in str(exc.value) and "gender_prompt.json" in str(exc.value)
    with pytest.raises(Exception, match=r"toxigen:dir=PATH"):
        load_prompts("toxigen:groups=(asian)")


def test_ls_prompts_and_risks(capsys):
    assert main(["ls", "prompts"]) == 0
    out = capsys.readouterr().out
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"bold", "toxigen"} <= names
    assert main(["ls", "risks"]) == 0
    out = capsys.readouterr().out
    from detoxkit.risks import AREAS, RISKS

    assert len(RISKS) == 21 and len(AREAS) == 6
    assert all(r in out for r in RISKS) and all(a in out for a in AREAS.values())
