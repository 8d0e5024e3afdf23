"""Escaping for the HTML page: all text from runs (samples, prompts, names, settings) is untrusted.

It is HTML-escaped, control characters are shown as visible symbols, and strings
that reach plotly are entity-escaped so that plotly's own markup is not interpreted.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

# control characters, bidi controls and lone surrogates: shown as escapes, never interpreted
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
                      "\ud800-\udfff\ufffe\uffff]")


def _code(ch: str) -> str:
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def visible(text: Any) -> str:
    """Text with control, bidi-control and surrogate characters written as escapes (\\x1b)."""
    return _CONTROL.sub(lambda m: _code(m.group()), "" if text is None else str(text))


def esc(text: Any) -> str:
    """Escaped text for an HTML attribute or element; invisible characters become escapes."""
    return html.escape(visible(text), quote=True)


def esc_text(text: Any) -> str:
    """Escaped element text; invisible characters are shown as marked escapes."""
    text = "" if text is None else str(text)
    out, pos = [], 0
    for m in _CONTROL.finditer(text):
        out.append(html.escape(text[pos:m.start()], quote=True))
        out.append(f'<span class="ctrl" title="invisible character U+{ord(m.group()):04X}">'
                   f'{html.escape(_code(m.group()))}</span>')
        pos = m.end()
    out.append(html.escape(text[pos:], quote=True))
    return "".join(out)


def plotly_text(text: Any) -> str:
    """A string for plotly: its labels accept a little HTML, so entities keep text literal."""
    return html.escape(visible(str(text)), quote=False)


def script_json(obj: Any) -> str:
    """JSON safe inside a <script> element whatever strings it holds."""
    from plotly.utils import PlotlyJSONEncoder

    text = json.dumps(obj, cls=PlotlyJSONEncoder, ensure_ascii=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
