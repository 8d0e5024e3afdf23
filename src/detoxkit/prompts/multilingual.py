"""Multilingual prompt sets: PolygloToxicityPrompts (PTP) and RTP-LX, by name or from local files.

PTP (Jain et al. 2024; hub `ToxicityPrompts/PolygloToxicityPrompts`): one config per language
and source, `ptp-<lang>` with splits `full` and `small`, `wildchat-<lang>` with split
`wildchat`, stored as Parquet (`ptp-<lang>/full-00000-of-00001.parquet`, ...). A row's prompt
is its `prompt` column (the `text` column is the whole source document); the language is
`meta_data.lang` (else the config's); the prompt toxicity is Perspective's TOXICITY of the
prompt where the row has one (`prompt_perspective`, wildchat rows), else the row's `toxicity`
(the score PTP bucketed the row by).

RTP-LX (de Wynter et al. 2024; GitHub `microsoft/RTP-LX`): one file per locale,
`RTP-LX/RTP_LX_<LOCALE>.json`, one JSON object per line with `Index`, `Prompt` and
`PromptAnnotations` (native-speaker labels: Toxicity on a 1-5 scale, IdentityAttack, Bias,
Microaggression, Violence, SelfHarm, Insult and SexualContent on 1-3). The prompt toxicity is
Toxicity mapped onto [0, 1] as (t - 1) / 4, so 0.5 is the scale's "toxic" (3); every label is
kept raw in `meta["labels"]`.

By name (`ptp-full`, `ptp-small`, `ptp-wildchat`, `rtp-lx`) the files are downloaded (PTP with
huggingface_hub, RTP-LX over HTTPS) and cached; `:languages=(de,fr)` picks languages and
`:dir=PATH` reads the same files from a downloaded folder. A single file passed as
`--prompts FILE` is recognised by its fields (docs/prompts.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError
from ..lang import normalize_language
from . import Prompt, PromptSet, fingerprint_prompts
from .fetch import download, local_files, offline_error, pick
from .files import _MISSING, BadRows, Record, _jsonl_records, _number, _text, open_records

PTP_HUB_ID = "ToxicityPrompts/PolygloToxicityPrompts"
PTP_LANGUAGES = ("ar", "cs", "de", "en", "es", "fr", "hi", "id", "it", "ja", "ko", "nl", "pl",
                 "pt", "ru", "sv", "zh")
PTP_SPLITS = {"ptp-full": ("ptp", "full"), "ptp-small": ("ptp", "small"),
              "ptp-wildchat": ("wildchat", "wildchat")}
RTPLX_REPO = "microsoft/RTP-LX"
RTPLX_URL = "https://raw.githubusercontent.com/microsoft/RTP-LX/main/RTP-LX/RTP_LX_{}.json"
RTPLX_LOCALES = ("AR", "CS", "DA", "DE", "EN", "ES", "FI", "FR", "HE", "HI", "HU", "ID", "IT", "JA",
                 "KO", "NL", "NO-NB", "PL", "PT", "PT-BR", "RU", "SV", "TH", "TR", "UK", "ZH-Hans",
                 "ZH-Hant")
RTPLX_LABELS = ("Toxicity", "IdentityAttack", "Bias", "Microaggression", "Violence", "SelfHarm",
                "Insult", "SexualContent")
_RTPLX_FILE = re.compile(r"RTP_LX_(.+)\.json$")


# ---- record -> Prompt -----------------------------------------------------------------------

def _perspective_toxicity(obj: Any) -> Any:
    try:
        return obj["attributeScores"]["TOXICITY"]["summaryScore"]["value"]
    except (KeyError, TypeError):
        return None


def _perspective_labels(obj: Any) -> dict[str, float]:
    scores = (obj or {}).get("attributeScores") if isinstance(obj, dict) else None
    out = {}
    for name, value in (scores or {}).items():
        v = _perspective_toxicity({"attributeScores": {"TOXICITY": value}})
        if isinstance(v, (int, float)):
            out[name.lower()] = float(v)
    return out


def ptp_prompt(rec: Record, bad: BadRows, split: str, language: str | None) -> Prompt | None:
    d = rec.data
    text = _text(d.get("prompt", _MISSING), rec, "prompt", bad)
    if text is None:
        return None
    meta_data = d.get("meta_data") if isinstance(d.get("meta_data"), dict) else {}
    lang = normalize_language(meta_data.get("lang") or d.get("lang") or language)
    if d.get("prompt_perspective") is not None:
        field, raw = "prompt_perspective", _perspective_toxicity(d["prompt_perspective"])
        if raw is None:
            bad.at(rec, "no TOXICITY summary score in prompt_perspective", field)
            return None
    else:
        field, raw = "toxicity", d.get("toxicity")
    ok, toxicity = _number(raw, rec, field, bad)
    if not ok:
        return None
    index = d.get("index")
    index = rec.index if index is None or index != index else int(index)  # NaN: float column gap
    meta: dict[str, Any] = {"line": rec.line, "index": rec.index, "source": "ptp", "split": split,
                            "toxicity_field": field}
    if lang:
        meta["language"] = lang
    for key in ("continuation", "toxicity_bucket"):
        if d.get(key) is not None:
            meta[key] = d[key]
    if meta_data.get("url"):
        meta["url"] = meta_data["url"]
    labels = _perspective_labels(d.get("prompt_perspective") or d.get("perspective"))
    if labels:
        meta["labels"] = labels
    return Prompt(f"ptp-{split}-{lang or 'und'}-{index}", text, toxicity, None, meta)



def _rtplx_label(value: Any, rec: Record, field: str, bad: BadRows, top: int) -> tuple[bool, Any]:
    if value is None:
        return True, None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= top:
        bad.at(rec, f"expected a label from 1 to {top}, got {repr(value)[:40]}", field)
        return False, None
    return True, value


def rtplx_prompt(rec: Record, bad: BadRows, locale: str | None) -> Prompt | None:
    d = rec.data
    text = _text(d.get("Prompt", _MISSING), rec, "Prompt", bad)
    if text is None:
        return None
    annotations = d.get("PromptAnnotations")
    if not isinstance(annotations, dict):
        bad.at(rec, "missing 'PromptAnnotations' object (the native speakers' labels)",
               "PromptAnnotations")
        return None
    labels = {}
    for name in RTPLX_LABELS:
        ok, value = _rtplx_label(annotations.get(name), rec, f"PromptAnnotations.{name}", bad,
                                 5 if name == "Toxicity" else 3)
        if not ok:
            return None
        if value is not None:
            labels[name] = value
    locale = str(d.get("Locale") or locale or "")
    lang = normalize_language(locale)
    tox = labels.get("Toxicity")
    index = d.get("Index", rec.index)
    meta: dict[str, Any] = {"line": rec.line, "index": rec.index, "source": "rtp-lx",
                            "labels": labels}
    if lang:
        meta.update(language=lang, locale=locale)
    if isinstance(d.get("Completion"), str):
        meta["continuation"] = d["Completion"]
    return Prompt(f"rtplx-{locale or 'und'}-{index}", text,
                  None if tox is None else (tox - 1) / 4, None, meta)


# ---- files ----------------------------------------------------------------------------------

def _json_records(path: Path, bad: BadRows) -> Iterator[Record]:
    """RTP-LX's .json files hold one object per line; a JSON array is read too."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.lstrip().startswith(b"["):
        try:
            rows = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"malformed JSON array: {exc}", path=str(path)) from None
        return (Record(None, i, r if isinstance(r, dict) else {})
                for i, r in enumerate(rows))
    return _jsonl_records(data, bad)


def _collect(paths: list[tuple[Path, str | None]], reader, bad_policy: str, name: str,
             source: str, extra: dict) -> PromptSet:
    from ..artefacts import file_sha256

    prompts, skipped, seen = [], [], {}
    for path, key in paths:
        bad = BadRows(str(path), bad_policy)
        if path.suffix == ".json":
            records = _json_records(path, bad)
        else:
            records = open_records(path, bad)[1]
        for rec in records:
            p = reader(rec, bad, key)
            if p is None:
                continue
            if p.id in seen:
                bad.at(rec, f"duplicate id {p.id!r} (first in {seen[p.id]})", "id")
                continue
            seen[p.id] = f"{path.name} {'line ' + str(rec.line) if rec.line else 'row ' + str(rec.index)}"
            prompts.append(p)
        skipped += bad.skipped
    if not prompts:
        raise InputError(f"no usable prompts ({len(skipped)} rows skipped)", path=source)
    provenance = {"kind": "file" if extra.get("via") is None else "hub", "format": name.split(":")[0],
                  "files": [{"path": str(p), "sha256": file_sha256(p)} for p, _ in paths], **extra}
    return PromptSet(prompts, name, source, fingerprint_prompts(prompts), provenance, skipped)


def read_ptp_files(paths: list[str | Path], split: str = "small", on_bad: str = "error",
                   languages: dict[str, str] | None = None, extra: dict | None = None) -> PromptSet:
    """PTP Parquet / JSONL files (each file's language from its rows, else `languages[path]`,
    else its folder name `ptp-<lang>` / `wildchat-<lang>`)."""
    items = []
    for p in map(Path, paths):
        lang = (languages or {}).get(str(p)) or _folder_language(p)
        items.append((p, lang))
    return _collect(items, lambda rec, bad, lang: ptp_prompt(rec, bad, split, lang), on_bad,
                    f"ptp-{split}", str(paths[0]) if len(paths) == 1 else str(Path(paths[0]).parent),
                    extra or {})


def read_rtplx_files(paths: list[str | Path], on_bad: str = "error",
                     extra: dict | None = None) -> PromptSet:
    """RTP-LX per-locale files (the locale from each row's `Locale`, else the file name)."""
    items = []
    for p in map(Path, paths):
        m = _RTPLX_FILE.search(p.name)
        items.append((p, m.group(1) if m else None))
    return _collect(items, rtplx_prompt, on_bad, "rtp-lx",
                    str(paths[0]) if len(paths) == 1 else str(Path(paths[0]).parent), extra or {})


def _folder_language(path: Path) -> str | None:
    m = re.fullmatch(r"(?:ptp|wildchat)-([a-z]{2})", path.parent.name)
    return m.group(1) if m else None


def sniff_format(path: Path) -> str | None:
    """"ptp" or "rtp-lx" when a file holds those sets' fields, else None (a generic file)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            names = set(pq.read_schema(path).names)
        except Exception:  # noqa: BLE001 - the generic reader reports a bad file
            return None
    elif suffix in (".jsonl", ".json"):
        with open(path, "rb") as fh:
            first = fh.readline(1 << 20).strip().lstrip(b"\xef\xbb\xbf[")
        try:
            obj = json.loads(first.decode("utf-8").rstrip(","))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "rtp-lx" if suffix == ".json" else None
        names = set(obj) if isinstance(obj, dict) else set()
    else:
        return None
    if "PromptAnnotations" in names or ("Prompt" in names and suffix == ".json"):
        return "rtp-lx"
    if "prompt" in names and names & {"meta_data", "perspective", "prompt_perspective",
                                      "toxicity_bucket"}:
        return "ptp"
    return None


def read_sniffed(path: Path, fmt: str, on_bad: str) -> PromptSet:
    if fmt == "rtp-lx":
        return read_rtplx_files([path], on_bad)
    split = "wildchat" if path.parent.name.startswith("wildchat") or "wildchat" in path.name else (
        "full" if path.name.startswith("full") else "small")
    return read_ptp_files([path], split, on_bad)


# ---- by name: the hub / GitHub, or a downloaded folder -----------------------------------------


def load_ptp(split_name: str, on_bad: str = "error", languages: Any = None,
             dir: str | None = None) -> PromptSet:  # noqa: A002 - the spec's setting name
    config, split = PTP_SPLITS[split_name]
    langs = pick(languages, PTP_LANGUAGES, split_name, "language")
    how = (f"`--prompts {split_name}:dir=PATH` with PATH holding {config}-<lang>/{split}-*.parquet "
           f"as on the hub ({PTP_HUB_ID}), or one file: `--prompts PATH/{config}-de/{split}-00000-of-00001.parquet`")
    if dir is not None:
        root = Path(dir).expanduser()
        files = [f for lg in langs for f in sorted((root / f"{config}-{lg}").glob(f"{split}-*.parquet"))]
        if not files:
            raise InputError(f"no {config}-<lang>/{split}-*.parquet files for {', '.join(langs)}",
                             path=str(root))
        return read_ptp_files(files, split, on_bad)
    from .rtp import _offline_mode, _unreachable

    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise offline_error(PTP_HUB_ID, "huggingface_hub is not installed", how) from None
    patterns = [f"{config}-{lg}/{split}-*.parquet" for lg in langs]
    try:
        root = snapshot_download(PTP_HUB_ID, repo_type="dataset", allow_patterns=patterns,
                                 local_files_only=_offline_mode())
    except Exception as exc:  # noqa: BLE001 - network, gated access, cache misses
        why = _unreachable() or f"{type(exc).__name__}: {str(exc)[:200]}"
        raise offline_error(PTP_HUB_ID, why, how) from None
    files = [f for pat in patterns for f in sorted(Path(root).glob(pat))]
    if not files:
        raise offline_error(PTP_HUB_ID, f"no files matched {patterns}", how)
    return read_ptp_files(files, split, on_bad,
                          extra={"via": "huggingface_hub", "hub_id": PTP_HUB_ID,
                                 "revision": Path(root).name})


def load_ptp_full(on_bad: str = "error", languages: Any = None, dir: str | None = None) -> PromptSet:  # noqa: A002
    """PTP `full` split (25k prompts per language)."""
    return load_ptp("ptp-full", on_bad, languages, dir)


def load_ptp_small(on_bad: str = "error", languages: Any = None, dir: str | None = None) -> PromptSet:  # noqa: A002
    """PTP `small` split (5k prompts per language)."""
    return load_ptp("ptp-small", on_bad, languages, dir)


def load_ptp_wildchat(on_bad: str = "error", languages: Any = None, dir: str | None = None) -> PromptSet:  # noqa: A002
    """PTP `wildchat` split (1k user turns from WildChat per language)."""
    return load_ptp("ptp-wildchat", on_bad, languages, dir)


def load_rtplx(on_bad: str = "error", languages: Any = None, dir: str | None = None) -> PromptSet:  # noqa: A002
    """RTP-LX, every locale (or `languages=`: locales such as DE, PT-BR, ZH-Hans)."""
    locales = pick(languages, RTPLX_LOCALES, "rtp-lx", "language")
    how = ("`--prompts rtp-lx:dir=PATH` with PATH holding the RTP_LX_<LOCALE>.json files of "
           f"github.com/{RTPLX_REPO} (folder RTP-LX/), or one file: `--prompts PATH/RTP_LX_DE.json`")
    if dir is not None:
        return read_rtplx_files(local_files(dir, [f"RTP_LX_{loc}.json" for loc in locales],
                                            "RTP_LX_<LOCALE>.json"), on_bad)
    from ..paths import cache_dir

    folder = cache_dir("prompts", "rtp-lx")
    files = []
    for loc in locales:
        target = folder / f"RTP_LX_{loc}.json"
        if not target.exists():
            download(rtplx_url().format(loc), target, RTPLX_REPO, how)
        files.append(target)
    return read_rtplx_files(files, on_bad, extra={"via": "https", "repo": RTPLX_REPO})


def rtplx_url() -> str:
    """Where RTP-LX's files are fetched from ($DETOXKIT_RTPLX_URL overrides, e.g. a mirror)."""
    import os

    return os.environ.get("DETOXKIT_RTPLX_URL") or RTPLX_URL
