"""`detoxkit ls methods|scorers|models|prompts`."""

from __future__ import annotations

KINDS = ("methods", "scorers", "models", "prompts")


def register(sub) -> None:
    parser = sub.add_parser("ls", help="list registered components")
    parser.add_argument("kind", choices=KINDS)
    parser.set_defaults(func=run)


def run(args) -> int:
    from .. import registry

    reg = {"methods": registry.METHODS, "scorers": registry.SCORERS,
           "models": registry.MODELS, "prompts": registry.PROMPTS}[args.kind]
    entries = reg.entries()
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name:<{width}}  {e.summary}")
    footer = {
        "models": "Also: any Hugging Face causal LM hub id or local directory (safetensors weights).",
        "prompts": "Also: a path to RTP-format JSONL, or generic .jsonl/.csv/.parquet with --text-field.",
    }.get(args.kind)
    if footer:
        print(footer)
    return 0
