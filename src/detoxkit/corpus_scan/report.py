"""A scan's summary.json rendered as `detoxkit report SCAN_DIR` renders a run: a terminal
table, Markdown (--markdown) or a self-contained HTML page (--html). The most toxic documents
are pointers (file, line or row, byte offset) everywhere; only the HTML page shows a short
excerpt, read back from the corpus, of each one's most toxic unit."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import DetoxkitError
from .shards import SUMMARY, read_manifest

EXCERPT_CHARS = 160


def load_summary(scan_dir: str | Path) -> dict:
    scan_dir = Path(scan_dir)
    manifest = read_manifest(scan_dir)
    if manifest.get("status") != "finished" or not (scan_dir / SUMMARY).is_file():
        raise DetoxkitError(f"{scan_dir}: the scan is not finished; run its `detoxkit corpus scan` "
                            "command again (the same command resumes it)")
    return json.loads((scan_dir / SUMMARY).read_text(encoding="utf-8"))


def _f(v, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _ci(ci) -> str:
    return f"[{_f(ci[0])}, {_f(ci[1])}]" if ci else "-"


def _pointer(d: dict) -> str:
    where = f"line {d['line']}" if "line" in d else f"row {d['row']}"
    off = f", byte {d['offset']}" if d.get("offset") is not None else ""
    return f"{Path(d['file']).name}:{where}{off}"


def sections(s: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table of the report."""
    t = s["threshold"]
    out = [("scorers", ["scorer", "version", "docs", f"toxic docs (max >= {t})", "95% CI",
                        "toxic units", "mean doc max", "mean doc mean", "p90", "unscored"],
            [[k, str(info.get("version", "?")), str(b["n_docs"]),
              _f(b["toxic_fraction"]), _ci(b["toxic_fraction_ci"]), _f(b["toxic_units_fraction"]),
              _f(b["mean_doc_max"]), _f(b["mean_doc_mean"]), _f(b["quantiles"]["0.9"]),
              str(b["n_unscored"])] for (k, b), info in zip(s["by_scorer"].items(), s["scorers"])])]
    edges = s["by_scorer"][next(iter(s["by_scorer"]))]["histogram"]["edges"]
    out.append(("distribution of document scores (max over units; documents per bin)",
                ["scorer"] + [f"{a:.1f}-{b:.1f}" for a, b in zip(edges, edges[1:])],
                [[k] + [str(n) for n in b["histogram"]["doc_max"]] for k, b in s["by_scorer"].items()]))
    for name, groups in s["by_field"].items():
        keys = list(s["by_scorer"])
        out.append((f"by {name}", [name, "docs"] + [f"{k} toxic" for k in keys] + [f"95% CI ({keys[0]})"],
                    [[g, str(v["n_docs"])] + [_f(v[k]["toxic_fraction"]) for k in keys]
                     + [_ci(v[keys[0]]["toxic_fraction_ci"])] for g, v in groups.items()]))
    if s["agreement"]:
        out.append(("agreement of the scorers (document scores)",
                    ["a", "b", "n", "Spearman", "AUC of b vs a>=t", "AUC of a vs b>=t", "both toxic",
                     "only a", "only b"],
                    [[r["a"], r["b"], str(r["n"]), _f(r["spearman"]), _f(r["auc_b_on_a_labels"]),
                      _f(r["auc_a_on_b_labels"]), str(r["both_toxic"]), str(r["only_a"]),
                      str(r["only_b"])] for r in s["agreement"]]))
    first = next(iter(s["most_toxic"]))
    out.append((f"most toxic documents ({first})", ["#", "score", "where"],
                [[str(i + 1), _f(d["score"]), _pointer(d)] for i, d in enumerate(s["most_toxic"][first][:10])]))
    return out


def coverage_lines_of(s: dict) -> list[str]:
    """What this evaluation covers (the risk taxonomy, detoxkit/risks.py)."""
    from ..risks import coverage_lines, scan_coverage

    return coverage_lines(scan_coverage(s))


def header_lines(s: dict) -> list[str]:
    st = s["settings"]
    return [f"corpus scan: {s['scan_dir']}",
            f"{s['n_docs']} documents from {s['n_files']} files, {s['n_units']} units "
            f"({st['units']}, at most {st['unit_size']} tokens), {s['n_tokens']} tokens; "
            f"{s['bad_records']} malformed records skipped",
            f"language breakdown: {s['language_breakdown']}"]


def terminal_report(scan_dir: str | Path) -> str:
    from ..report.terminal import table

    s = load_summary(scan_dir)
    parts = header_lines(s)
    for title, header, rows in sections(s):
        parts += ["", title, table(rows, header)]
    parts += ["", "What this evaluation covers:"] + [f"  {x}" for x in coverage_lines_of(s)]
    return "\n".join(parts)


def markdown_report(scan_dir: str | Path) -> str:
    from ..report.markdown import md_escape, md_table

    s = load_summary(scan_dir)
    parts = ["# Corpus scan", ""] + [md_escape(x) + "  " for x in header_lines(s)]
    for title, header, rows in sections(s):
        parts += ["", f"## {md_escape(title)}", "", md_table(header, rows)]
    parts += ["", "## What this evaluation covers", ""] + [f"- {md_escape(x)}" for x in coverage_lines_of(s)]
    return "\n".join(parts) + "\n"


def excerpts(scan_dir: Path, s: dict) -> dict[tuple[int, int], str]:
    """The most toxic unit of each listed document, cut to EXCERPT_CHARS, read from the corpus."""
    from .pointers import read_texts

    manifest = read_manifest(scan_dir)
    docs = [d for lst in s["most_toxic"].values() for d in lst]
    try:
        texts = read_texts(manifest, {(d["file_index"], d["pointer_line"]) for d in docs})
    except (OSError, DetoxkitError):
        return {}
    out = {}
    for d in docs:
        text = texts.get((d["file_index"], d["pointer_line"]))
        if text is not None and d.get("unit"):
            a, b = d["unit"]
            unit = " ".join(text[a:b].split())
            out[(d["file_index"], d["pointer_line"])] = (unit[:EXCERPT_CHARS] + "..."
                                                          if len(unit) > EXCERPT_CHARS else unit)
    return out


def html_report(scan_dir: str | Path, title: str | None = None) -> str:
    from ..report.escaping import esc

    scan_dir = Path(scan_dir)
    s = load_summary(scan_dir)
    cut = excerpts(scan_dir, s)
    css = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:"
           "collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:"
           "left}th{background:#f3f3f3}.bar{background:#c0392b;height:.8em;display:inline-block}"
           ".ex{font-family:monospace;color:#333}")
    html = [f"<!doctype html><html><head><meta charset='utf-8'><meta http-equiv="
            f"'Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<title>{esc(title or 'corpus scan')}</title><style>{css}</style></head><body>",
            f"<h1>{esc(title or 'Corpus scan')}</h1>",
            "<p><b>Content warning:</b> excerpts below are the most toxic text of the corpus.</p>"]
    html += [f"<p>{esc(x)}</p>" for x in header_lines(s)]
    for name, block in s["by_scorer"].items():
        counts = block["histogram"]["doc_max"]
        top = max(counts) or 1
        edges = block["histogram"]["edges"]
        html.append(f"<h2>score distribution: {esc(name)}</h2><table><tr><th>doc max</th>"
                    "<th>documents</th><th></th></tr>")
        html += [f"<tr><td>{a:.1f}-{b:.1f}</td><td>{n}</td><td><span class='bar' style='width:"
                 f"{int(300 * n / top)}px'></span></td></tr>" for a, b, n in zip(edges, edges[1:], counts)]
        html.append("</table>")
    for title_, header, rows in sections(s)[:-1]:
        html.append(f"<h2>{esc(title_)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header)
                    + "</tr>" + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>"
                                        for r in rows) + "</table>")
    for name, docs in s["most_toxic"].items():
        html.append(f"<h2>most toxic documents: {esc(name)}</h2><table><tr><th>#</th><th>score</th>"
                    "<th>where</th><th>most toxic unit (excerpt)</th></tr>")
        html += [f"<tr><td>{i + 1}</td><td>{_f(d['score'])}</td><td>{esc(_pointer(d))}</td>"
                 f"<td class='ex'>{esc(cut.get((d['file_index'], d['pointer_line']), '(not readable)'))}"
                 "</td></tr>" for i, d in enumerate(docs)]
        html.append("</table>")
    html.append("<h2>What this evaluation covers</h2><ul>" +
                "".join(f"<li>{esc(x)}</li>" for x in coverage_lines_of(s)) + "</ul>")
    html.append(f"<h2>settings</h2><pre>{esc(json.dumps(s['settings'], indent=2))}</pre>"
                f"<pre>{esc(json.dumps(s['scorers'], indent=2))}</pre></body></html>")
    return "\n".join(html)


def report_command(args) -> int:
    """`detoxkit report SCAN_DIR [SCAN_DIR ...] [--markdown [OUT]] [--html OUT]`."""
    import sys

    from .shards import is_scan_dir

    others = [p for p in args.run_dirs if not is_scan_dir(p)]
    if others:
        raise DetoxkitError(f"{others[0]} is a run, the others corpus scans: report them separately")
    if args.html and len(args.run_dirs) > 1:
        raise DetoxkitError("--html renders one corpus scan per page: give one SCAN_DIR")
    if args.markdown is not None:
        text = "\n".join(markdown_report(p) for p in args.run_dirs)
        if args.markdown == "-":
            sys.stdout.write(text)
            return 0
        from ..store import write_text_atomic

        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(args.markdown), text)
        print(f"wrote {args.markdown}", file=sys.stderr)
    if args.html:
        from ..store import write_text_atomic

        out = Path(args.html)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, html_report(args.run_dirs[0], args.title))
        print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB; open it in any browser)", file=sys.stderr)
    print("\n\n".join(terminal_report(p) for p in args.run_dirs))
    return 0
