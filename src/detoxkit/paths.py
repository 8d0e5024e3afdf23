"""Where detoxkit keeps caches (converted models, corpus, trained artefacts)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """$DETOXKIT_HOME (default ~/.cache/detoxkit), created on demand."""
    root = Path(os.environ.get("DETOXKIT_HOME") or Path.home() / ".cache" / "detoxkit")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_data(*parts: str) -> Path:
    """A file shipped inside the detoxkit package (src/detoxkit/data/...)."""
    return Path(__file__).parent.joinpath("data", *parts)
