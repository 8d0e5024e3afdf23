"""Named moderation data: ToxicChat from the hub (network), and the offline labelled sets framed
as OpenAI `messages` JSONL in the output directory (never in the repository):

- `toxic-chat[:split=test]`: lmsys/toxic-chat, config toxicchat0124 (CSV on the hub; CC-BY-NC-4.0).
- `toxigen-statements[:dir=PATH]`: the statements inside ToxiGen's prompt files, one message each,
  labelled 1 in hate_* files and 0 in neutral_* files (the label is the file they came from, not
  a human annotation of each statement), category = the target group.
- `corpus-reserved`: the labelled corpus's prompt-pool rows (detoxkit.corpus, pool="prompt"), which
  no detoxkit-trained scorer saw, as single-message conversations with their is_offensive label.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DetoxkitError
from .formats import single_message, write_openai_jsonl

TOXICCHAT_HUB = "lmsys/toxic-chat"
TOXICCHAT_FILES = {"test": "data/0124/toxic-chat_annotation_test.csv",
                   "train": "data/0124/toxic-chat_annotation_train.csv"}
NAMES = ("toxic-chat", "toxigen-statements", "corpus-reserved")


def toxigen_statement_rows(root: str | Path | None = None):
    """One OpenAI-format conversation per distinct statement of ToxiGen's prompt files."""
    from ..prompts.files import BadRows
    from ..prompts.groups import TOXIGEN_GROUPS, TOXIGEN_KINDS, load_toxigen, read_toxigen_file, toxigen_statements

    if root is None:
        paths = [Path(p["path"]) for p in load_toxigen().provenance["files"]]
    else:
        paths = [Path(root) / f"{k}_{g}_1k.txt" for k in TOXIGEN_KINDS for g in TOXIGEN_GROUPS]
        paths = [p for p in paths if p.is_file()]
        if not paths:
            raise DetoxkitError(f"{root}: no ToxiGen {{hate,neutral}}_<group>_1k.txt files")
    for path in paths:
        seen: set[str] = set()
        for p in read_toxigen_file(path, BadRows(str(path), "skip")):
            kind, group = p.meta["kind"], p.meta["group"]
            for s in toxigen_statements(p.text):
                if s not in seen:
                    seen.add(s)
                    yield single_message(f"toxigen-{kind}-{group}-{len(seen)}", s,
                                         int(kind == "hate"), [group])


def corpus_reserved_rows():
    from ..corpus import iter_corpus

    for row in iter_corpus(pool="prompt"):
        if row.text.strip():
            yield single_message(f"corpus-row{row.row}", row.text, row.is_offensive)


def toxicchat_file(split: str = "test") -> Path:
    how = (f"download {TOXICCHAT_FILES.get(split, TOXICCHAT_FILES['test'])} from "
           f"https://huggingface.co/datasets/{TOXICCHAT_HUB} (accepting its terms) and pass the file: "
           "`detoxkit moderate path/to/toxic-chat_annotation_test.csv ...`")
    if split not in TOXICCHAT_FILES:
        raise DetoxkitError(f"toxic-chat has splits test and train, not {split!r}")
    from ..prompts.rtp import _offline_mode, _unreachable

    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DetoxkitError(f"huggingface_hub is not installed; {how}") from None
    try:
        return Path(hf_hub_download(TOXICCHAT_HUB, TOXICCHAT_FILES[split], repo_type="dataset",
                                    local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached
        pass
    why = "HF_HUB_OFFLINE is set" if _offline_mode() else _unreachable()
    if why:
        raise DetoxkitError(f"could not load ToxicChat ({TOXICCHAT_HUB}, toxicchat0124): {why}. "
                            f"Without network access, {how}")
    try:
        return Path(hf_hub_download(TOXICCHAT_HUB, TOXICCHAT_FILES[split], repo_type="dataset"))
    except Exception as exc:  # noqa: BLE001 - HTTP, gated access
        raise DetoxkitError(f"could not load ToxicChat: {type(exc).__name__}: {str(exc)[:200]}; "
                            f"{how}") from None


def resolve(spec: str, out: Path) -> tuple[Path, str]:
    """(file to read, data name for the coverage block) of a FILE argument or a named set."""
    from ..specs import parse_spec

    name = spec.split(":", 1)[0]
    if name not in NAMES or Path(spec).exists():
        return Path(spec), "file"
    parsed = parse_spec(spec)
    settings = {k: (str(v) if v is not None else None) for k, v in parsed.settings.items()}
    allowed = {"toxic-chat": {"split"}, "toxigen-statements": {"dir"}, "corpus-reserved": set()}[name]
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise DetoxkitError(f"{name} has no setting {', '.join(unknown)} (it takes: "
                            f"{', '.join(sorted(allowed)) or 'none'})")
    if name == "toxic-chat":
        return toxicchat_file(settings.get("split") or "test"), name
    target = out / "input.jsonl"
    rows = toxigen_statement_rows(settings.get("dir")) if name == "toxigen-statements" else corpus_reserved_rows()
    write_openai_jsonl(target, rows)
    return target, name
