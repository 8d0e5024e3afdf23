"""`detoxkit ls methods|scorers|models|prompts|backends|trainers|risks`."""

from __future__ import annotations

KINDS = ("methods", "scorers", "models", "prompts", "backends", "trainers", "risks")


def register(sub) -> None:
    parser = sub.add_parser("ls", help="list registered components")
    parser.add_argument("kind", choices=KINDS)
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.kind == "risks":  # the risk taxonomy and what covers each risk
        from ..risks import print_risks

        return print_risks()
    return print_entries(args.kind)


def print_entries(kind: str) -> int:
    """The registered components of one kind, a line each (also `detoxkit scorers ls`)."""
    from .. import registry

    reg = {"methods": registry.METHODS, "scorers": registry.SCORERS, "models": registry.MODELS,
           "prompts": registry.PROMPTS, "backends": registry.BACKENDS,
           "trainers": registry.TRAINERS}[kind]
    entries = reg.entries()
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name:<{width}}  {e.summary}")
    footer = {
        "models": "Also: any Hugging Face causal LM hub id or local directory (safetensors weights); "
                  "BACKEND:MODEL for another backend (`detoxkit ls backends`).",
        "scorers": "Also: hf:<hub id or dir> and detoxify:<variant>; settings as NAME:key=value,...",
        "prompts": "Also: a path to RTP-format JSONL, a BOLD <domain>_prompt.json or ToxiGen "
                   "{hate,neutral}_<group>_1k.txt file, or generic .jsonl/.csv/.parquet with "
                   "--text-field (and --group-field).",
    }.get(kind)
    if footer:
        print(footer)
    return 0
