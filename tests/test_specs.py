"""The one spec grammar: methods, scorers and the gate's wrapped methods read it alike."""

import pytest

from detoxkit.errors import DetoxkitError
from detoxkit.specs import Spec, format_spec, parse_chain, parse_spec


def test_name_settings_and_value_types():
    spec = parse_spec("dexperts:alpha=2.0,path=/tmp/x,n=3,flag=true,none=null")
    assert spec == Spec("dexperts", None, {"alpha": 2.0, "path": "/tmp/x", "n": 3, "flag": True,
                                           "none": None})
    assert parse_spec("wordban") == Spec("wordban")
    assert parse_spec("gate:token-effect=0.2").settings == {"token_effect": 0.2}


def test_a_first_positional_argument():
    assert parse_spec("hf:unitary/toxic-bert") == Spec("hf", "unitary/toxic-bert")
    assert parse_spec("hf:/models/x,labels=toxic:toxicity") == Spec("hf", "/models/x",
                                                                    {"labels": "toxic:toxicity"})
    with pytest.raises(DetoxkitError, match="expected key=value"):
        parse_spec("cfl:strength=2,loud")


def test_nested_specs_in_parentheses_or_with_semicolons():
    paren = parse_spec("gate:wrap=(wordban+dexperts:alpha=2.0,path=DIR),check=scorer,every=4")
    semi = parse_spec("gate:wrap=wordban+dexperts:alpha=2.0;path=DIR,check=scorer,every=4")
    assert paren.settings["check"] == semi.settings["check"] == "scorer"
    for outer in (paren, semi):
        chain = parse_chain(outer.settings["wrap"])
        assert chain == [Spec("wordban"), Spec("dexperts", None, {"alpha": 2.0, "path": "DIR"})]
    with pytest.raises(DetoxkitError, match="unbalanced"):
        parse_spec("gate:wrap=(dexperts:alpha=2")


def test_format_round_trips():
    for text in ("cfl:strength=40", "hf:unitary/toxic-bert,batch_size=8", "none"):
        assert format_spec(parse_spec(text)) == text


def test_methods_and_scorers_read_the_same_grammar():
    from detoxkit.methods import build_method
    from detoxkit.scorers import load_scorer

    gate = build_method("gate:wrap=(cfl:strength=7,min_effect=0.1),threshold=0.2")
    assert gate.inner.settings()["strength"] == 7.0 and gate.inner.min_effect == 0.1
    assert gate.threshold == 0.2
    assert load_scorer("profanity-svm:batch_size=7").batch_size == 7
    with pytest.raises(DetoxkitError, match="unknown setting 'colour'"):
        load_scorer("profanity-svm:colour=red")
    with pytest.raises(DetoxkitError, match="unknown setting 'colour'"):
        build_method("cfl:colour=red")
    with pytest.raises(DetoxkitError, match="bad settings"):
        build_method("cfl:strength=loud")
