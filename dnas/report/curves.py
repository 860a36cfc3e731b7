"""Learning curves: validation accuracy per epoch of every trained or pruned trial, thin by
family (one trace per family, curves separated by gaps), the front's members bold."""

from __future__ import annotations

from dnas.report.html import esc
from dnas.report.scatter import family_color, points
from dnas.study import PRUNED, TRAINED, TrialRecord


def _hover(r: TrialRecord, epoch: int, acc: float) -> str:
    return f"{esc(r.name or '?')} (trial {r.number})<br>epoch {epoch}: val acc {acc:.4f}"


def curves_figure(records: list[TrialRecord], on_front: set[int]):  # noqa: ANN201 - a go.Figure
    """``on_front``: the trial numbers drawn bold, one trace each."""
    import plotly.graph_objects as go

    fig = go.Figure()
    with_curves = [(r, r.curve) for r in records if r.state in (TRAINED, PRUNED)]
    with_curves = [(r, c) for r, c in with_curves if c]
    for family in sorted({r.family or "?" for r, _ in with_curves}):
        xs, ys, texts = [], [], []
        for r, curve in with_curves:
            if (r.family or "?") == family and r.number not in on_front:
                for e, a in curve:
                    xs.append(e)
                    ys.append(a)
                    texts.append(_hover(r, e, a))
                xs.append(None)
                ys.append(None)
                texts.append(None)
        if xs:
            line = dict(width=1, color=family_color(family))
            trace = points(
                xs, ys, f"{family} trials", mode="lines", hover_text=texts, line=line, opacity=0.35
            )
            fig.add_trace(trace)
    for r, curve in with_curves:
        if r.number in on_front:
            fig.add_trace(
                points(
                    [e for e, _ in curve],
                    [a for _, a in curve],
                    f"front: {r.name or '?'}",
                    mode="lines+markers",
                    hover_text=[_hover(r, e, a) for e, a in curve],
                    line=dict(width=2.5),
                )
            )
    fig.update_layout(
        title="Learning curves",
        xaxis=dict(title="epoch", dtick=1),
        yaxis=dict(title="validation accuracy"),
        height=420,
        margin=dict(l=70, r=20, t=50, b=50),
    )
    return fig
