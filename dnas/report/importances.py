"""Parameter importances for validation accuracy (PED-ANOVA), one bar group per family."""

from __future__ import annotations

from dnas.report.data import ImportanceData
from dnas.report.html import esc


def importance_figure(imp: ImportanceData):  # noqa: ANN201 - a go.Figure
    import plotly.graph_objects as go

    fig = go.Figure()
    for group, values in imp.groups.items():
        items = sorted(values.items(), key=lambda kv: kv[1])
        fig.add_trace(
            go.Bar(
                x=[v for _, v in items],
                y=[esc(k) for k, _ in items],
                orientation="h",
                name=esc(group),
                hovertemplate="%{y}: %{x:.3f}<extra></extra>",
            )
        )
    fig.update_layout(
        title="Parameter importances for validation accuracy (PED-ANOVA, trained trials)",
        xaxis=dict(title="importance"),
        height=360,
        barmode="group",
        margin=dict(l=200, r=20, t=50, b=50),
    )
    return fig
