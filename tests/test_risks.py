"""The risk taxonomy: six areas and 21 risks, every built-in prompt set, method and scorer tagged,
and the coverage block made of exactly the tags of what an evaluation used."""

from __future__ import annotations

from detoxkit.registry import METHODS, PROMPTS, SCORERS
from detoxkit.risks import (AREAS, ATTRIBUTE_TAGS, METHOD_TAGS, PROMPT_TAGS, RISKS, TASK_TAGS, coverage,
                            coverage_lines, run_coverage)


def test_six_areas_and_21_risks_each_in_an_area():
    assert len(AREAS) == 6 and len(RISKS) == 21
    assert {r.area for r in RISKS.values()} == set(AREAS)
    assert all(r.description and r.name for r in RISKS.values())
    for table in (PROMPT_TAGS, ATTRIBUTE_TAGS, TASK_TAGS, METHOD_TAGS):
        assert {r for tags in table.values() for r in tags} <= set(RISKS)


def test_every_builtin_prompt_set_method_and_scorer_is_tagged():
    # detoxkit's own entries: tests register components of their own (e.g. test_reliability.py)
    def builtin(registry):
        return {e.name for e in registry.entries() if e.target.startswith("detoxkit.")}

    assert builtin(PROMPTS) <= set(PROMPT_TAGS)
    assert builtin(METHODS) - {"none"} <= set(METHOD_TAGS)
    for name in ("detoxkit-minilm", "detoxkit-e5", "profanity-svm", "jigsaw-bilstm", "moral-direction",
                 "perspective"):
        attrs = SCORERS.load(name).attributes
        assert any(a in ATTRIBUTE_TAGS for a in attrs), name


def test_coverage_is_exactly_the_tags_used():
    block = coverage(["rtp-lx"], [{"name": "moral-direction", "attributes": ["toxicity", "normative"]}],
                     ["run", "groups"], ["dexperts"])
    assert [m["risk"] for m in block["measured"]] == ["toxic-language", "lower-performance",
                                                       "unethical-actions"]
    by = {m["risk"]: m for m in block["measured"]}
    assert by["lower-performance"]["data"] == ["rtp-lx"] and by["lower-performance"]["scorers"] == []
    assert by["unethical-actions"]["scorers"] == ["moral-direction (normative)"]
    assert by["toxic-language"]["tasks"] == ["run"]  # "groups" measures nothing without group data
    assert block["mitigated"] == ["toxic-language"]
    assert block["areas_covered"] == [AREAS["discrimination"], AREAS["misinformation"]]
    assert len(block["areas_not_covered"]) == 4 and block["risks_not_measured"] == 18
    lines = coverage_lines(block)
    assert lines[-1].startswith("not covered: Information hazards") and "18 of 21" in lines[-1]


def test_run_coverage_reads_the_prompt_set_from_run_json():
    info = {"prompts": {"spec": "my.csv", "provenance": {"format": "csv"}},
            "scorers": [{"name": "profanity-svm", "attributes": ["toxicity"]}], "method": {"name": "cfl+gate"}}
    block = run_coverage(info, {"by_group": {"a": {}, "b": {}}})
    assert [m["risk"] for m in block["measured"]] == ["toxic-language"]  # a plain file measures no group risk
    assert block["measured"][0]["data"] == []
    bold = run_coverage({**info, "prompts": {"spec": "bold:domains=(race)"}}, {"by_group": {"race/a": {}}})
    assert {m["risk"] for m in bold["measured"]} == {"stereotypes", "toxic-language"}
    assert next(m for m in bold["measured"] if m["risk"] == "stereotypes")["tasks"] == ["groups"]


def test_a_chain_of_methods_counts_each_method_and_scans_and_langmatters_have_blocks():
    from detoxkit.risks import langmatters_coverage, scan_coverage

    chain = {"name": "chain", "settings": {"methods": [{"name": "cfl"}, {"name": "moral"}]}}
    block = run_coverage({"prompts": {"spec": "embedded"}, "method": chain}, {})
    assert block["mitigated"] == sorted({*METHOD_TAGS["cfl"], *METHOD_TAGS["moral"]})
    scan = scan_coverage({"scorers": [{"name": "profanity-svm", "attributes": ["toxicity"]}]})
    assert [m["risk"] for m in scan["measured"]] == ["toxic-language"]
    assert scan["measured"][0]["tasks"] == ["corpus-scan"] and scan["measured"][0]["data"] == []
    lm = langmatters_coverage({"prompts": {"spec": "ptp-small:languages=(de)"},
                               "scorer": {"name": "detoxkit-e5", "attributes": ["toxicity"]}})
    measured = {m["risk"]: m for m in lm["measured"]}
    assert set(measured) == set(PROMPT_TAGS["ptp-small"])
    assert "langmatters" in measured["lower-performance"]["tasks"]
