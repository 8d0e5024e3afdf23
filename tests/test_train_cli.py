"""`detoxkit train TARGET`: the flags come from the recipes' config dataclasses."""

from __future__ import annotations

import dataclasses

import pytest

from detoxkit.cli import main
from detoxkit.commands.train import help_text
from detoxkit.registry import TRAINERS
from detoxkit.training.base import flag_of

TARGETS = [e.name for e in TRAINERS.entries()]


def _squash(text: str) -> str:
    """Text without whitespace: argparse wraps help lines (and breaks at hyphens)."""
    return "".join(text.split())


def test_every_documented_target_is_registered():
    assert set(TARGETS) >= {"banlist", "vocab-shift", "cfl", "experts", "gedi", "pplm-head", "hmm",
                            "trace-classifier", "semantic-control", "moral", "scorer", "scorer-e5"}
    for name in TARGETS:
        trainer = TRAINERS.load(name)
        assert trainer.name == name and dataclasses.is_dataclass(trainer.config)


@pytest.mark.parametrize("target", TARGETS)
def test_help_lists_every_setting_with_its_help_and_default(target, capsys):
    assert main(["train", target, "--help"]) == 0
    shown = _squash(capsys.readouterr().out)
    for f in dataclasses.fields(TRAINERS.load(target).config):
        assert f.metadata.get("help"), f"{target}: setting {f.name} has no help text"
        assert _squash(flag_of(f)) in shown
        assert _squash(help_text(f)) in shown, (target, f.name)
        if f.default is not None:
            assert _squash(f"(default: {f.default})") in shown
        for choice in f.metadata.get("choices", ()):
            assert choice in shown


def test_old_flags_keep_their_names_and_defaults():
    from detoxkit.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "scorer"])
    assert (args.cfg_variant, args.cfg_rows, args.cfg_seed, args.cfg_threads) == ("minilm", None, 0, 2)
    args = parser.parse_args(["train", "trace-classifier", "--attribute", "nonpolitical", "--l1", "1e-3"])
    assert (args.cfg_attribute, args.cfg_l1, args.cfg_model, args.cfg_out) == ("nonpolitical", 1e-3,
                                                                             "smollm2-135m", None)
    args = parser.parse_args(["train", "cfl", "--export-json", "t.json", "--max-tokens", "16"])
    # --sentences: None picks the estimator's own default (300 for paper, 4000 for substitute)
    assert (args.cfg_export_json, args.cfg_max_tokens, args.cfg_sentences) == ("t.json", 16, None)


@pytest.mark.parametrize("argv, message", [
    (["train", "hmm", "--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
    (["train", "trace-classifier", "--attribute", "polite"], "argument --attribute: invalid choice: 'polite'"),
    (["train", "scorer", "--variant", "bert"], "argument --variant: invalid choice: 'bert'"),
    (["train", "banlist", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_bad_flag_values_are_clear_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_config_built_in_code_checks_its_choices_too():
    from detoxkit.errors import DetoxkitError
    from detoxkit.training.trace_classifier import TraceClassifierConfig

    with pytest.raises(DetoxkitError, match="--attribute must be one of nonpolitical, nontoxic"):
        TraceClassifierConfig(attribute="polite")


def test_scorer_variant_settings_take_the_variant_defaults(monkeypatch):
    from detoxkit.training import scorer

    seen = {}
    monkeypatch.setitem(scorer.VARIANTS, "e5", (scorer.E5Config, lambda cfg: seen.setdefault("cfg", cfg)))
    scorer.train(scorer.ScorerConfig(variant="e5", lr=0.01))
    cfg = seen["cfg"]
    assert isinstance(cfg, scorer.E5Config) and cfg.lr == 0.01 and cfg.rows == 8000 and cfg.epochs == 60
