"""hf:<id or path> and detoxify: scorers on tiny sequence-classification models built here."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from detoxkit.cli import main
from detoxkit.errors import DetoxkitError
from detoxkit.scorers import load_scorer
from detoxkit.scorers.hf import DetoxifyScorer, HFClassifierScorer, map_labels, parse_label_map
from test_scorers import BENIGN, TOXIC, assert_batch_and_order_invariant, assert_orders

JIGSAW = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from transformers import AutoTokenizer

    from detoxkit.scorers.minilm import encoder_path

    return AutoTokenizer.from_pretrained(encoder_path())


def build(path, id2label, problem_type=None, pickled=False):
    """A 1-layer BERT classifier (random weights) saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tok = _tokenizer()
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=len(id2label),
                        id2label=dict(enumerate(id2label)), label2id={n: i for i, n in enumerate(id2label)},
                        problem_type=problem_type)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    save(model, path, pickled)
    return model


def save(model, path, pickled=False):
    import torch

    model.save_pretrained(path)
    _tokenizer().save_pretrained(path)
    if pickled:  # what older checkpoints ship: pytorch_model.bin only
        torch.save(model.state_dict(), Path(path) / "pytorch_model.bin")
        (Path(path) / "model.safetensors").unlink()
    return str(path)


def fit(model, toxic_index=1, steps=40):
    """Fit the classifier to the fixture sentences (embeddings frozen; one thread: seconds)."""
    import torch

    enc = _tokenizer()(TOXIC + BENIGN, padding=True, return_tensors="pt")
    y = torch.tensor([toxic_index] * len(TOXIC) + [1 - toxic_index] * len(BENIGN))
    model.bert.embeddings.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(model(**enc).logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def relabel(model, path, id2label, swap=False):
    """The same fitted model under other label names (rows swapped if asked)."""
    import copy

    import torch

    other = copy.deepcopy(model)
    if swap:
        with torch.no_grad():
            other.classifier.weight.copy_(model.classifier.weight.flip(0))
            other.classifier.bias.copy_(model.classifier.bias.flip(0))
    other.config.id2label = dict(enumerate(id2label))
    other.config.label2id = {n: i for i, n in enumerate(id2label)}
    return save(other, path)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return fit(build(tmp_path_factory.mktemp("hf-bin"), ["neutral", "toxic"]))


@pytest.fixture(scope="module")
def binary_dir(fitted, tmp_path_factory):
    return relabel(fitted, tmp_path_factory.mktemp("hf-binary"), ["neutral", "toxic"])


def test_hf_model_by_path_orders_and_is_invariant(binary_dir):
    scorer = load_scorer(f"hf:{binary_dir}")
    assert scorer.attributes == ("toxicity",) and scorer.activation == "softmax"
    assert scorer.name == f"hf:{binary_dir}" and "sha256:" in scorer.version
    assert_orders(scorer)
    assert_batch_and_order_invariant(f"hf:{binary_dir}", TOXIC + BENIGN + ["", "a b c " * 50])


def test_label_mapping_follows_names_not_positions(fitted, tmp_path):
    swapped = relabel(fitted, tmp_path / "swapped", ["toxic", "neutral"], swap=True)
    assert_orders(HFClassifierScorer(model=swapped))
    unnamed = str(tmp_path / "unnamed")
    build(unnamed, ["LABEL_0", "LABEL_1"])
    assert HFClassifierScorer(model=unnamed).pairs == [(1, "toxicity")]
    multi = str(tmp_path / "multi")
    build(multi, JIGSAW, problem_type="multi_label_classification")
    s = HFClassifierScorer(model=multi)
    assert s.attributes == ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")
    assert s.activation == "sigmoid"
    out = s.score(BENIGN)
    assert not np.allclose(sum(out[a] for a in s.attributes), 1.0)  # independent sigmoids


def test_label_override_and_errors():
    assert parse_label_map("hateful:toxicity, normal:-") == {"hateful": "toxicity", "normal": None}
    assert map_labels({0: "normal", 1: "hateful"}, {"hateful": "toxicity", "normal": None}) == [(1, "toxicity")]
    assert map_labels({0: "insult", 1: "toxic"}) == [(1, "toxicity"), (0, "insult")]  # toxicity first
    with pytest.raises(DetoxkitError, match="maps to 'toxicity'"):
        map_labels({0: "positive", 1: "negative"})


def test_override_through_the_cli(fitted, tmp_path, capsys):
    odd = relabel(fitted, tmp_path / "odd", ["fine", "hateful"])
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t, "y": int(i < len(TOXIC))}) + "\n"
                            for i, t in enumerate(TOXIC + BENIGN)))
    args = ["scorers", "validate", "--scorer", f"hf:{odd}", "--scorer-option", "labels=hateful:toxicity,fine:-",
            "--data", str(data), "--text-field", "text", "--label-field", "y"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 8 and result["auc"] == 1.0
    assert main(args[:4] + args[6:]) == 2  # without the mapping: a clear error
    assert "labels=" in capsys.readouterr().err


def test_pickled_weights_are_refused(tmp_path):
    pickled = str(tmp_path / "pickled")
    build(pickled, ["neutral", "toxic"], pickled=True)
    with pytest.raises(DetoxkitError, match="safetensors"):
        HFClassifierScorer(model=pickled)


def test_detoxify_names_and_local_copies(binary_dir):
    with pytest.raises(DetoxkitError, match="original, unbiased, multilingual"):
        DetoxifyScorer(model="nonsense")
    s = load_scorer(f"detoxify:{binary_dir}")
    assert s.name.startswith("detoxify:") and s.activation == "sigmoid"
    assert s.score(["hello"])["toxicity"].shape == (1,)
