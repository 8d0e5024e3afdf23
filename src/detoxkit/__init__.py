"""detoxkit: measure and reduce toxic degeneration of language models.

    import detoxkit
    result = detoxkit.evaluate("smollm2-135m", limit=10, samples=5, out="runs/nb")
    result.metrics["expected_max_toxicity"]

Names are imported on first use, so `import detoxkit` stays cheap (see docs/api.md).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = ("evaluate", "load_scorer", "load_method", "as_logits_processor", "load_prompts",
        "load_run", "load_model", "RunResult")
__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module 'detoxkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
