"""detoxkit: measure and reduce toxic degeneration of language models."""

__version__ = "0.1.0"
