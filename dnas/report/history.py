"""Search progress: the best validation accuracy so far and the front's hypervolume, per trial."""

from __future__ import annotations

from dnas.report.data import HistoryData
from dnas.report.scatter import points


def history_figure(h: HistoryData):  # noqa: ANN201 - a go.Figure
    from plotly.subplots import make_subplots

    pareto = h.hypervolume is not None
    fig = make_subplots(specs=[[{"secondary_y": pareto}]])
    best = points(
        h.numbers,
        h.best_acc,
        "best validation accuracy so far",
        mode="lines+markers",
        line=dict(shape="hv"),
    )
    fig.add_trace(best, secondary_y=False)
    if pareto:
        hv = points(
            h.numbers,
            h.hypervolume,
            "front hypervolume (normalised)",
            mode="lines",
            line=dict(shape="hv", dash="dot"),
        )
        fig.add_trace(hv, secondary_y=True)
        fig.update_yaxes(title_text="hypervolume", secondary_y=True)
    fig.update_xaxes(title_text="trial number")
    fig.update_yaxes(title_text="best validation accuracy", secondary_y=False)
    fig.update_layout(
        title="Search progress",
        height=380,
        margin=dict(l=70, r=20, t=50, b=50),
        legend=dict(orientation="h", y=-0.25),
    )
    return fig
