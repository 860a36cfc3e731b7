"""Feature-reuse figures (``dnas.reuse``'s numbers drawn): a DenseNet's Figure-5 heatmaps, one per
dense block, or a WRN's residual/shortcut ratios, one line per group; and the ``dnas reuse``
page that shows them."""

from __future__ import annotations

from pathlib import Path

from dnas.report.html import esc, fig_div, write_page
from dnas.report.scatter import points
from dnas.reuse import BlockReuse, DenseNetReuse, WRNReuse


def densenet_figure(block: BlockReuse):  # noqa: ANN201 - a go.Figure
    import plotly.graph_objects as go

    n = block.layers
    x = [str(layer) for layer in range(1, n + 1)] + [block.extra]
    y = ["input"] + [str(s) for s in range(1, n + 1)]
    hover = [
        [
            None
            if v is None
            else f"source {y[s]} → {x[j] if j == n else 'layer ' + x[j]}<br>mean |w| = {v:.4g}"
            for j, v in enumerate(row)
        ]
        for s, row in enumerate(block.matrix)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=block.matrix,
            x=x,
            y=y,
            text=hover,
            hoverinfo="text",
            colorscale="Viridis",
            colorbar=dict(title="mean |w|"),
            hoverongaps=False,
        )
    )
    fig.update_layout(
        title=dict(text=f"dense block {block.block}", font=dict(size=14)),
        xaxis=dict(title="target layer (ℓ)", type="category"),
        yaxis=dict(title="source layer (s)", type="category", autorange="reversed"),
        width=460,
        height=420,
        margin=dict(l=60, r=20, t=50, b=50),
    )
    return fig


def wrn_figure(result: WRNReuse):  # noqa: ANN201 - a go.Figure
    import plotly.graph_objects as go

    fig = go.Figure()
    for g, row in enumerate(result.ratios, start=1):
        fig.add_trace(
            points(
                list(range(1, len(row) + 1)),
                row,
                f"group {g}",
                mode="lines+markers",
                hovertemplate=f"group {g}, block %{{x}}<br>‖F(x)‖/‖h(x)‖ = %{{y:.4g}}"
                "<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"{esc(result.name)}: residual branch / shortcut,"
        f" {result.images} {esc(result.dataset)} validation images",
        xaxis=dict(title="block in group", dtick=1),
        yaxis=dict(title="mean ‖F(x)‖₂ / ‖h(x)‖₂", rangemode="tozero"),
        height=420,
        margin=dict(l=60, r=20, t=50, b=50),
    )
    return fig


def reuse_figures(result: DenseNetReuse | WRNReuse) -> list:
    if isinstance(result, DenseNetReuse):
        return [densenet_figure(b) for b in result.blocks]
    return [wrn_figure(result)]


def reuse_grid(result: DenseNetReuse | WRNReuse, prefix: str) -> tuple[str, list]:
    """The figures of one result side by side: their HTML and their (id, figure) pairs."""
    figures = [(f"{prefix}_{i}", fig) for i, fig in enumerate(reuse_figures(result))]
    return "<div class='grid'>" + "".join(fig_div(key) for key, _ in figures) + "</div>", figures


def write_reuse_page(result: DenseNetReuse | WRNReuse, path: str | Path) -> Path:
    """A page that opens offline (plotly.js written beside it): the figures and their
    definition."""
    grid, figures = reuse_grid(result, "reuse")
    body = f"<p class='note'>{esc(result.definition)}</p>{grid}"
    return write_page(path, f"Feature reuse: {result.name}", body, figures, what="reuse --out")
