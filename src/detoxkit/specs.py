"""One grammar for naming a configured component on the command line or in a config file.

    SPEC    := NAME [":" ITEMS]
    ITEMS   := ITEM ("," ITEM)*
    ITEM    := KEY "=" VALUE | ARG        (ARG: at most one, first; e.g. a scorer's model)
    CHAIN   := SPEC ("+" SPEC)*           (methods applied in order, e.g. a gate's `wrap`)

Examples: `dexperts:alpha=2.0`, `hf:unitary/toxic-bert,labels=toxic:toxicity`,
`gate:wrap=(dexperts:alpha=2.0,path=DIR),check=cfl`.

A VALUE that holds a spec of its own (the gate's `wrap`) is put in parentheses, or its
items are separated by `;` instead of `,`: `gate:wrap=dexperts:alpha=2.0;path=DIR,check=cfl`.
Values are read as true/false, none/null, integers and floats where they parse as such,
otherwise kept as text.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any

from .errors import DetoxkitError


@dataclass(frozen=True)
class Spec:
    name: str
    arg: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def split_top(text: str, separators: str) -> list[str]:
    """`text` split at the separators that are not inside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise DetoxkitError(f"spec '{text}': unbalanced ')'")
        elif ch in separators and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise DetoxkitError(f"spec '{text}': unbalanced '('")
    parts.append(text[start:])
    return parts


def _unwrap(value: str) -> str:
    value = value.strip()
    if value.startswith("(") and value.endswith(")") and not split_top(value[1:-1], "")[1:]:
        return value[1:-1].strip()
    return value


def parse_spec(text: str, *, nested: bool = False) -> Spec:
    """A Spec from its text. `nested`: the spec was a value inside another spec, where `;`
    also separates its items."""
    text = _unwrap(str(text))
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise DetoxkitError(f"spec '{text}' has no name")
    arg, settings = None, {}
    for i, item in enumerate(s.strip() for s in split_top(rest, ",;" if nested else ",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if "(" in key:  # a parenthesised ARG holding '='
            key, eq = "", ""
        if not eq:
            if i or arg is not None:
                raise DetoxkitError(f"spec '{text}': expected key=value, got '{item}'")
            arg = _unwrap(item)
            continue
        if not key.strip():
            raise DetoxkitError(f"spec '{text}': expected key=value, got '{item}'")
        value = value.strip()
        settings[key.strip().replace("-", "_")] = (_unwrap(value) if value.startswith("(")
                                                   else parse_value(value))
    return Spec(name, arg, settings)


def parse_chain(text: str) -> list[Spec]:
    """The specs of `a:x=1+b`, in order (`+` inside parentheses belongs to a value)."""
    parts = [p.strip() for p in split_top(_unwrap(str(text)), "+") if p.strip()]
    if not parts:
        raise DetoxkitError(f"'{text}' names no component")
    return [parse_spec(p, nested=True) for p in parts]


def format_spec(spec: Spec) -> str:
    """The text of a Spec (parse_spec(format_spec(s)) == s for plain values)."""
    items = ([spec.arg] if spec.arg is not None else []) + [
        f"{k}={v}" for k, v in spec.settings.items()]
    return spec.name + (":" + ",".join(items) if items else "")


def setting_names(cls: type) -> list[str] | None:
    """The settings a component's constructor takes (None: it takes any keyword)."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n, p in params.items() if n != "self" and p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def check_settings(kind: str, name: str, cls: type, settings: dict[str, Any],
                   hidden: tuple[str, ...] = ()) -> None:
    """An unknown setting is an error naming the known ones (with a did-you-mean)."""
    known = setting_names(cls)
    if known is None:
        return
    known = [k for k in known if k not in hidden]
    for key in settings:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise DetoxkitError(f"{kind} '{name}': unknown setting '{key}'{hint}; its settings: "
                                f"{', '.join(known) or 'none'}")


def construct(kind: str, name: str, cls: type, settings: dict[str, Any], **fixed: Any):
    """`cls(**fixed, **settings)`, with unknown settings and bad values as one-line errors."""
    check_settings(kind, name, cls, settings, hidden=tuple(fixed))
    try:
        return cls(**fixed, **settings)
    except (TypeError, ValueError) as exc:
        shown = ",".join(f"{k}={v}" for k, v in settings.items())
        raise DetoxkitError(f"{kind} '{name}': bad settings ({shown}): {exc}") from None
