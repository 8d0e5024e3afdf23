"""Corpus analysis and filtering: `detoxkit corpus scan` and `detoxkit corpus filter`
(docs/corpus.md). scan.run_scan(ScanConfig(...)) scans, summary.summarize summarises,
filter.filter_scan filters; the package imports nothing heavy until used."""
