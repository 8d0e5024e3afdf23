"""Colours that tie a run (or a prompt split) to its points, bars and table columns."""

from __future__ import annotations

RUN_COLORS = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B",
              "#FF9DA6", "#9D755D", "#BAB0AC"]
SPLIT_STYLE = {"all": ("all prompts", "#6b7280"), "toxic": ("toxic prompts", "#c0392b"),
               "nontoxic": ("non-toxic prompts", "#2e86c1")}


def run_color(i: int) -> str:
    """The colour of the i-th run; colours repeat past ten runs."""
    return RUN_COLORS[i % len(RUN_COLORS)]


def swatch(i: int) -> str:
    """A small square of the i-th run's colour, to put before its name."""
    return f'<span class="swatch" style="background:{run_color(i)}"></span>'
