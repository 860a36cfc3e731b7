"""The Pareto figure: validation accuracy against parameters or FLOPs (log axis), and below it a
strip of the proposals that measured no accuracy at their cost."""

from __future__ import annotations

from dnas.budget import human
from dnas.pareto import front
from dnas.report.data import ParetoData, Reference, StudyInfo
from dnas.report.html import esc
from dnas.report.scatter import GREY, family_color, points, trial_points
from dnas.study import FAILED, OVER_BUDGET, PRUNED

METRIC_LABEL = {"params": "parameters", "flops": "FLOPs (fvcore: 1 multiply-add = 1 flop)"}
RED = "#d62728"
_STRIP = (OVER_BUDGET, FAILED, PRUNED)  # top to bottom in the strip
_STRIP_SYMBOLS = {OVER_BUDGET: "x", FAILED: "triangle-up", PRUNED: "circle-open"}


def reference_hover(ref: Reference) -> str:
    return (
        f"<b>published: {esc(ref.name)}</b><br>{ref.column} test error {ref.error}% "
        f"(accuracy {ref.accuracy:.4f}) after {ref.epochs} epochs"
        f"<br>params {ref.params:,}, FLOPs {ref.flops:,}"
        f"<br>{esc(ref.source)}"
    )


def _references(refs: list[Reference], metric: str):  # noqa: ANN202 - a go.Scatter
    # Label the published trade-offs (the references' own front); the rest have hover text.
    published = front(refs, cost=lambda r: getattr(r, metric), acc=lambda r: r.accuracy)
    labelled = {r.name for r in published}
    return points(
        [getattr(r, metric) for r in refs],
        [r.accuracy for r in refs],
        "published (papers' full training, test set)",
        mode="markers+text",
        marker=dict(symbol="star", color="black", size=11),
        text=[esc(r.name) if r.name in labelled else "" for r in refs],
        textposition="top center",
        textfont=dict(size=9, color="#444"),
        hover_text=[reference_hover(r) for r in refs],
    )


def pareto_figure(data: ParetoData, info: StudyInfo):  # noqa: ANN201 - a go.Figure
    """Accuracy against cost (log axis): trials by family, the front, pruned trials, the papers'
    published results, the budget; below, a strip of the proposals that never measured one."""
    from plotly.subplots import make_subplots

    m = data.metric
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.84, 0.16], vertical_spacing=0.04
    )
    top = []
    for family in sorted({r.family or "?" for r in data.trained}):
        rows = [r for r in data.trained if (r.family or "?") == family]
        marker = dict(color=family_color(family), size=7, opacity=0.6)
        top.append(trial_points(rows, m, f"{family} trials", marker=marker))
    if data.stopped:
        marker = dict(symbol="diamond-open", color=GREY, size=7)
        name = "stopped at a lower rung (acc there)"
        top.append(trial_points(data.stopped, m, name, marker=marker))
    if data.pruned:
        marker = dict(symbol="circle-open", color=GREY, size=7)
        top.append(trial_points(data.pruned, m, "pruned (last reported acc)", marker=marker))
    if data.front:
        top.append(
            trial_points(
                data.front,
                m,
                "Pareto front",
                mode="lines+markers",
                line=dict(color=RED, shape="hv", width=2),
                marker=dict(color=RED, size=10, line=dict(color="black", width=1)),
            )
        )
    if data.references:
        top.append(_references(data.references, m))
    measured = data.trained + data.front + data.pruned + data.stopped
    accs = [r.val_acc for r in measured] + [r.accuracy for r in data.references]
    lo, hi = (min(accs), max(accs)) if accs else (0.0, 1.0)
    for i, limit in enumerate(data.budgets):
        budget = dict(color="#2ca02c", dash="dash", width=2)
        top.append(
            points(
                [limit, limit],
                [lo, hi],
                f"budget {human(limit)} {m}",
                mode="lines",
                line=budget,
                hoverinfo="name",
                showlegend=i == 0,
            )
        )
    for trace in top:
        fig.add_trace(trace, row=1, col=1)
    for state in _STRIP:
        rows = [r for r in data.untrained if r.state == state]
        if rows:
            marker = dict(symbol=_STRIP_SYMBOLS[state], color=GREY, size=7)
            name = f"{state} (no accuracy)"
            trace = trial_points(rows, m, name, y=[state] * len(rows), marker=marker)
            fig.add_trace(trace, row=2, col=1)
    _layout(fig, data, info)
    return fig


def _layout(fig, data: ParetoData, info: StudyInfo) -> None:  # noqa: ANN001
    m = data.metric
    epochs = sorted({r.epochs for r in data.trained + data.front if r.epochs})
    fid = f"after {'/'.join(map(str, epochs))} epochs" if epochs else ""
    fig.update_xaxes(type="log", row=1, col=1)
    fig.update_xaxes(type="log", title_text=METRIC_LABEL[m] + " (log scale)", row=2, col=1)
    fig.update_yaxes(title_text=f"validation accuracy {fid}", row=1, col=1)
    fig.update_yaxes(
        type="category", categoryorder="array", categoryarray=list(_STRIP[::-1]), row=2, col=1
    )
    fig.update_layout(
        title=f"{esc(info.name)}: validation accuracy against {METRIC_LABEL[m].split(' (')[0]}",
        height=620,
        hovermode="closest",
        legend=dict(orientation="h", y=-0.12),
        margin=dict(l=70, r=20, t=50, b=40),
    )
