"""The scatter traces every figure of the report repeats: points (or lines) with hover text.

Trials show their name, state, costs, accuracy, epochs (and rungs) and training time on hover,
escaped; the note says where a candidate was stopped or promoted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dnas.report.html import esc
from dnas.study import TrialRecord

GREY = "#7f7f7f"
FAMILY_COLORS = {"densenet": "#1f77b4", "wrn": "#ff7f0e"}


def family_color(family: str | None) -> str:
    return FAMILY_COLORS.get(family or "", GREY)


def num(n: float | None, fmt: str = ",") -> str:
    """A number for people: ``fmt`` as in ``format``, a dash for a missing one."""
    return "–" if n is None else format(n, fmt)


def hover(r: TrialRecord) -> str:
    """A trial's hover text (HTML, escaped)."""
    acc = "not measured" if r.val_acc is None else f"{r.val_acc:.4f}"
    rungs = f" (rungs reached: {', '.join(map(str, sorted(r.rungs)))})" if r.rungs else ""
    text = (
        f"<b>{esc(r.name or '?')}</b> (trial {r.number}, {esc(r.state)})"
        f"<br>params {num(r.params)}<br>FLOPs {num(r.flops)}"
        f"<br>val acc {acc} after {num(r.epochs, '')} epochs{rungs}"
        f"<br>training time {num(r.wall_time_s, '.1f')} s"
    )
    return f"{text}<br>{esc(r.note)}" if r.note else text


def column(values: Sequence) -> np.ndarray:
    """Numbers as a float array (None becomes NaN: a gap in a line), which Plotly stores without
    checking each element (a list of 10,000 is checked one by one); other values (category
    names, hover texts) as an array of them."""
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return np.asarray(values, dtype=object)


def points(  # noqa: ANN201 - a go.Scatter
    x: Sequence,
    y: Sequence,
    name: str,
    *,
    mode: str = "markers",
    hover_text: Sequence | None = None,
    **style,
):
    """A scatter trace; ``name`` is escaped here, ``hover_text`` must be HTML already; ``style``
    holds Plotly's own keywords (marker, line, text, opacity, ...)."""
    import plotly.graph_objects as go

    if hover_text is not None:
        style.setdefault("hovertext", np.asarray(hover_text, dtype=object))
        style.setdefault("hoverinfo", "text")
    return go.Scatter(x=column(x), y=column(y), mode=mode, name=esc(name), **style)


def trial_points(  # noqa: ANN201 - a go.Scatter
    records: Sequence[TrialRecord], metric: str, name: str, *, y: Sequence | None = None, **style
):
    """Trials at (``metric``, validation accuracy), or at ``y``, each with its hover text."""
    return points(
        [getattr(r, metric) for r in records],
        [r.val_acc for r in records] if y is None else y,
        name,
        hover_text=[hover(r) for r in records],
        **style,
    )
