"""summary.json of a scan: what `detoxkit report SCAN_DIR` renders.

Per scorer: the toxic fraction of documents (document score = the maximum over its units,
toxic at >= threshold) and of units, each with a 95% bootstrap interval over documents; the mean
document score; the distribution of document scores (max and mean) in ten bins; breakdowns by
metadata fields (any field with few distinct values: source, domain, url_host, language...); the
most toxic documents as pointers (file, line or row, byte offset). For two or more scorers:
their agreement (Spearman's rho of the document scores, and the AUC of one scorer's scores
against another's labels at the threshold).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ..store import write_json_atomic
from .shards import SUMMARY, load_table, read_manifest, score_key

CI_LEVEL = 0.95
MAX_GROUPS = 30  # a metadata field with more distinct values than this is not broken down
MIN_GROUP = 5  # values with fewer documents share one "(other)" row
TOP_K = 20


def bootstrap_fraction(values: np.ndarray, seed: int, n_boot: int = 1000) -> list[float]:
    """95% bootstrap interval of the mean of `values` (NaN left out). For 0/1 values the
    resampled mean is drawn from its binomial law (the same distribution as resampling the
    documents, at any corpus size); other values are resampled up to 50k, beyond which the
    normal interval of the mean is used (the bootstrap's limit)."""
    values = values[~np.isnan(values)]
    n = len(values)
    if n == 0:
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    a = (1 - CI_LEVEL) / 2
    if np.isin(values, (0.0, 1.0)).all():
        means = rng.binomial(n, values.mean(), size=n_boot) / n
    elif n <= 50_000:
        means = values[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    else:
        from statistics import NormalDist

        z, se = NormalDist().inv_cdf(1 - a), values.std(ddof=1) / math.sqrt(n)
        return [float(values.mean() - z * se), float(values.mean() + z * se)]
    return [float(np.quantile(means, a)), float(np.quantile(means, 1 - a))]


def _col(table, name: str) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.fill_null(table.column(name), math.nan).to_numpy().astype(np.float64)


def scorer_block(table, key: str, threshold: float, seed: int) -> dict:
    doc_max, doc_mean = _col(table, f"{key}.max"), _col(table, f"{key}.mean")
    ok = ~np.isnan(doc_max)
    flags = np.where(ok, (doc_max >= threshold).astype(float), np.nan)
    units = [np.array([math.nan if v is None else v for v in u], dtype=np.float64)
             for u in table.column(f"{key}.units").to_pylist()]
    unit_frac = np.array([np.nanmean(u >= threshold) if np.any(~np.isnan(u)) else math.nan
                          for u in units])
    all_units = np.concatenate(units) if units else np.zeros(0)
    all_units = all_units[~np.isnan(all_units)]
    bins = np.linspace(0, 1, 11)
    return {
        "n_docs": int(len(doc_max)), "n_scored": int(ok.sum()), "n_unscored": int((~ok).sum()),
        "toxic_fraction": float(np.nanmean(flags)) if ok.any() else math.nan,
        "toxic_fraction_ci": bootstrap_fraction(flags, seed),
        "toxic_units_fraction": float((all_units >= threshold).mean()) if len(all_units) else math.nan,
        "toxic_units_per_doc": float(np.nanmean(unit_frac)) if ok.any() else math.nan,
        "toxic_units_per_doc_ci": bootstrap_fraction(unit_frac, seed + 1),
        "mean_doc_max": float(np.nanmean(doc_max)) if ok.any() else math.nan,
        "mean_doc_mean": float(np.nanmean(doc_mean)) if ok.any() else math.nan,
        "histogram": {"edges": [round(float(b), 2) for b in bins],
                      "doc_max": np.histogram(doc_max[ok], bins)[0].tolist(),
                      "doc_mean": np.histogram(doc_mean[ok], bins)[0].tolist()},
        "quantiles": {str(q): float(np.quantile(doc_max[ok], q)) if ok.any() else math.nan
                      for q in (0.5, 0.9, 0.99)},
    }


def breakdowns(table, manifest: dict, keys: list[str], threshold: float, seed: int,
               languages: list[str] | None) -> dict:
    metas = [json.loads(m) for m in table.column("meta").to_pylist()]
    fields: dict[str, list] = defaultdict(list)
    files = manifest["files"]
    fields["file"] = [Path(files[i]["path"]).name for i in table.column("file").to_pylist()]
    names = Counter(k for m in metas for k in m)
    for name in names:
        fields[name] = [m.get(name) for m in metas]
    if languages is not None:
        fields["language"] = languages
    doc_max = {key: _col(table, f"{key}.max") for key in keys}
    out = {}
    for name, values in fields.items():
        if isinstance(next((v for v in values if v is not None), None), float):
            continue  # a continuous field (a score, a length) is no grouping
        sizes = Counter(v for v in values if v is not None)
        distinct = set(sizes)
        small = {v for v, c in sizes.items() if c < MIN_GROUP}
        if len(small) > 1:  # one row for the rare values (a language seen once or twice)
            other = f"(other: {len(small)} values with < {MIN_GROUP} docs)"
            values = [other if v in small else v for v in values]
            distinct = (distinct - small) | {other}
        if not 1 < len(distinct) <= MAX_GROUPS or (name == "file" and len(files) < 2):
            continue
        block = {}
        codes = {v: i for i, v in enumerate(sorted(distinct, key=str))}
        coded = np.array([codes.get(v, -1) for v in values])
        for value, code in codes.items():
            idx = coded == code
            block[str(value)] = {"n_docs": int(idx.sum()), **{
                key: _group_stats(doc_max[key][idx], threshold, seed) for key in keys}}
        out[name] = block
    return out


def _group_stats(doc_max: np.ndarray, threshold: float, seed: int) -> dict:
    ok = ~np.isnan(doc_max)
    flags = np.where(ok, (doc_max >= threshold).astype(float), np.nan)
    return {"toxic_fraction": float(np.nanmean(flags)) if ok.any() else math.nan,
            "toxic_fraction_ci": bootstrap_fraction(flags, seed),
            "mean_doc_max": float(np.nanmean(doc_max)) if ok.any() else math.nan}


def agreement(table, keys: list[str], threshold: float) -> list[dict]:
    rows = []
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            from scipy.stats import spearmanr

            from ..stats import roc_auc

            x, y = _col(table, f"{a}.max"), _col(table, f"{b}.max")
            ok = ~np.isnan(x) & ~np.isnan(y)
            rho = float(spearmanr(x[ok], y[ok]).statistic) if ok.sum() > 2 else math.nan
            rows.append({"a": a, "b": b, "n": int(ok.sum()), "spearman": rho,
                         "auc_b_on_a_labels": roc_auc(y[ok], x[ok] >= threshold),
                         "auc_a_on_b_labels": roc_auc(x[ok], y[ok] >= threshold),
                         "both_toxic": int(((x >= threshold) & (y >= threshold))[ok].sum()),
                         "only_a": int(((x >= threshold) & (y < threshold))[ok].sum()),
                         "only_b": int(((x < threshold) & (y >= threshold))[ok].sum())})
    return rows


def top_documents(table, manifest: dict, key: str, k: int = TOP_K) -> list[dict]:
    doc_max = _col(table, f"{key}.max")
    order = [i for i in np.argsort(-np.nan_to_num(doc_max, nan=-1.0), kind="stable")[:k]
             if not math.isnan(doc_max[i])]
    files, lines, offsets = (table.column(c).to_pylist() for c in ("file", "line", "offset"))
    units = table.column(f"{key}.units").to_pylist()
    starts, ends = table.column("unit_start").to_pylist(), table.column("unit_end").to_pylist()
    out = []
    for i in order:
        u = [(-1.0 if v is None else v) for v in units[i]]
        j = int(np.argmax(u)) if u else 0
        fmt = manifest["files"][files[i]]["format"]
        out.append({"file": manifest["files"][files[i]]["path"], "file_index": files[i],
                    "line" if fmt in ("jsonl", "text") else "row": lines[i],
                    "pointer_line": lines[i], "offset": offsets[i], "score": float(doc_max[i]),
                    "unit": [starts[i][j], ends[i][j]] if u else None})
    return out


def summarize(scan_dir: str | Path, manifest: dict | None = None, *, threshold: float = 0.5,
              seed: int = 0) -> dict:
    """Compute and write SCAN_DIR/summary.json; returns it."""
    scan_dir = Path(scan_dir)
    manifest = manifest or read_manifest(scan_dir)
    table = load_table(scan_dir)
    keys = [score_key(s) for s in manifest["settings"]["scorers"]]
    has_field = "language" in {k for m in table.column("meta").to_pylist()[:1000] for k in json.loads(m)}
    detected = table.column("language").to_pylist() if "language" in table.column_names else []
    languages = None if has_field or not any(detected) else detected
    lang_note = ("the documents' own 'language' field" if has_field else
                 "detected by detoxkit.lang (py3langid)" if languages else
                 "not available (detoxkit.lang is not installed)")
    summary = {
        "kind": "corpus-scan", "scan_dir": str(scan_dir), "threshold": threshold,
        "ci_level": CI_LEVEL, "settings": manifest["settings"], "scorers": manifest["scorers"],
        "n_docs": table.num_rows, "n_files": len(manifest["files"]),
        "n_units": int(sum(table.column("n_units").to_pylist())),
        "n_tokens": int(sum(table.column("n_tokens").to_pylist())),
        "n_chars": int(sum(table.column("n_chars").to_pylist())),
        "bad_records": sum(f.get("bad_records", 0) for f in manifest["files"]),
        "by_scorer": {k: scorer_block(table, k, threshold, seed) for k in keys},
        "by_field": breakdowns(table, manifest, keys, threshold, seed, languages),
        "language_breakdown": lang_note,
        "agreement": agreement(table, keys, threshold),
        "most_toxic": {k: top_documents(table, manifest, k) for k in keys},
    }
    write_json_atomic(scan_dir / SUMMARY, summary)
    return summary
