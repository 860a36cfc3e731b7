"""A study's report: one self-contained HTML page (plotly.js written beside it, no network).

Each figure is made in three steps: study -> plain data (``dnas.report_data``) -> Plotly figure
(here). Every string that came from a user or a study is HTML-escaped before it lands in the page,
and the figures' JSON is made safe to sit inside a <script> element.
"""

from __future__ import annotations

import datetime
import html
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from dnas import report_data as rd
from dnas.budget import human
from dnas.reuse import DENSENET_DEFINITION, PLOT_JS, figure_json, reuse_figures, write_plotlyjs

FAMILY_COLORS = {"densenet": "#1f77b4", "wrn": "#ff7f0e"}
METRIC_LABEL = {"params": "parameters", "flops": "FLOPs (fvcore: 1 multiply-add = 1 flop)"}


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(n: float | None, fmt: str = ",") -> str:
    return "–" if n is None else format(n, fmt)


def _hover(r: rd.TrialRow) -> str:
    acc = "not measured" if r.val_acc is None else f"{r.val_acc:.4f}"
    lines = [
        f"<b>{_esc(r.name)}</b> (trial {r.number}, {_esc(r.state)})",
        f"params {_num(r.params)}",
        f"FLOPs {_num(r.flops)}",
        f"val acc {acc} after {_num(r.epochs, '')} epochs",
        f"training time {_num(r.wall_time_s, '.1f')} s",
    ]
    if r.note:
        lines.append(_esc(r.note))
    return "<br>".join(lines)


def _ref_hover(ref: rd.Reference) -> str:
    return (
        f"<b>published: {_esc(ref.name)}</b><br>{ref.column} test error {ref.error}% "
        f"(accuracy {ref.accuracy:.4f}) after {ref.epochs} epochs"
        f"<br>params {ref.params:,}, FLOPs {ref.flops:,}"
        f"<br>{_esc(ref.source)}"
    )


def _front_of(refs: list[rd.Reference], metric: str) -> list[rd.Reference]:
    front, best = [], -1.0
    for r in sorted(refs, key=lambda r: (getattr(r, metric), r.error)):
        if r.accuracy > best:
            front.append(r)
            best = r.accuracy
    return front


# ---- plain data -> figures ------------------------------------------------------------------


def pareto_figure(data: rd.ParetoData, info: rd.StudyInfo):  # noqa: ANN201 - a go.Figure
    """Accuracy against cost (log axis): trials by family, the front, pruned trials, the papers'
    published results, the budget; below, a strip of the proposals that never measured one."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    m = data.metric
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.84, 0.16], vertical_spacing=0.04
    )
    for family in sorted({r.family for r in data.trained}):
        rows = [r for r in data.trained if r.family == family]
        fig.add_trace(
            go.Scatter(
                x=[getattr(r, m) for r in rows],
                y=[r.val_acc for r in rows],
                mode="markers",
                name=f"{_esc(family)} trials",
                marker=dict(color=FAMILY_COLORS.get(family, "#7f7f7f"), size=7, opacity=0.6),
                text=[_hover(r) for r in rows],
                hoverinfo="text",
            ),
            row=1,
            col=1,
        )
    if data.pruned:
        fig.add_trace(
            go.Scatter(
                x=[getattr(r, m) for r in data.pruned],
                y=[r.val_acc for r in data.pruned],
                mode="markers",
                name="pruned (last reported acc)",
                marker=dict(symbol="circle-open", color="#7f7f7f", size=7),
                text=[_hover(r) for r in data.pruned],
                hoverinfo="text",
            ),
            row=1,
            col=1,
        )
    if data.front:
        fig.add_trace(
            go.Scatter(
                x=[getattr(r, m) for r in data.front],
                y=[r.val_acc for r in data.front],
                mode="lines+markers",
                name="Pareto front",
                line=dict(color="#d62728", shape="hv", width=2),
                marker=dict(color="#d62728", size=10, line=dict(color="black", width=1)),
                text=[_hover(r) for r in data.front],
                hoverinfo="text",
            ),
            row=1,
            col=1,
        )
    if data.references:
        # Label the published trade-offs (the references' own front); the rest have hover text.
        labelled = {r.name for r in _front_of(data.references, m)}
        fig.add_trace(
            go.Scatter(
                x=[getattr(r, m) for r in data.references],
                y=[r.accuracy for r in data.references],
                mode="markers+text",
                name="published (papers' full training, test set)",
                marker=dict(symbol="star", color="black", size=11),
                text=[_esc(r.name) if r.name in labelled else "" for r in data.references],
                textposition="top center",
                textfont=dict(size=9, color="#444"),
                hovertext=[_ref_hover(r) for r in data.references],
                hoverinfo="text",
            ),
            row=1,
            col=1,
        )
    accs = [r.val_acc for r in data.trained + data.front + data.pruned] + [
        r.accuracy for r in data.references
    ]
    lo, hi = (min(accs), max(accs)) if accs else (0.0, 1.0)
    for i, limit in enumerate(data.budgets):
        fig.add_trace(
            go.Scatter(
                x=[limit, limit],
                y=[lo, hi],
                mode="lines",
                name=f"budget {human(limit)} {m}",
                line=dict(color="#2ca02c", dash="dash", width=2),
                hoverinfo="name",
                showlegend=i == 0,
            ),
            row=1,
            col=1,
        )
    symbols = {rd.OVER_BUDGET: "x", rd.FAILED: "triangle-up", rd.PRUNED: "circle-open"}
    for state in (rd.OVER_BUDGET, rd.FAILED, rd.PRUNED):
        rows = [r for r in data.untrained if r.state == state]
        if rows:
            fig.add_trace(
                go.Scatter(
                    x=[getattr(r, m) for r in rows],
                    y=[state] * len(rows),
                    mode="markers",
                    name=f"{state} (no accuracy)",
                    marker=dict(symbol=symbols[state], color="#7f7f7f", size=7),
                    text=[_hover(r) for r in rows],
                    hoverinfo="text",
                ),
                row=2,
                col=1,
            )
    epochs = sorted({r.epochs for r in data.trained + data.front if r.epochs})
    fid = f"after {'/'.join(map(str, epochs))} epochs" if epochs else ""
    fig.update_xaxes(type="log", row=1, col=1)
    fig.update_xaxes(type="log", title_text=METRIC_LABEL[m] + " (log scale)", row=2, col=1)
    fig.update_yaxes(title_text=f"validation accuracy {fid}", row=1, col=1)
    fig.update_yaxes(
        type="category",
        categoryorder="array",
        categoryarray=[rd.PRUNED, rd.FAILED, rd.OVER_BUDGET],
        row=2,
        col=1,
    )
    fig.update_layout(
        title=f"{_esc(info.name)}: validation accuracy against {METRIC_LABEL[m].split(' (')[0]}",
        height=620,
        hovermode="closest",
        legend=dict(orientation="h", y=-0.12),
        margin=dict(l=70, r=20, t=50, b=40),
    )
    return fig


def curves_figure(rows: list[rd.TrialRow]):  # noqa: ANN201
    """Validation accuracy per epoch: all trained trials thin by family, the front's bold."""
    import plotly.graph_objects as go

    fig = go.Figure()
    with_curves = [r for r in rows if r.curve and r.state in (rd.TRAINED, rd.PRUNED)]
    for family in sorted({r.family for r in with_curves}):
        xs, ys, texts = [], [], []
        for r in with_curves:
            if r.family == family and not r.front:
                for e, a in r.curve:
                    xs.append(e)
                    ys.append(a)
                    texts.append(
                        f"{_esc(r.name)} (trial {r.number})<br>epoch {e}: val acc {a:.4f}"
                    )
                xs.append(None)
                ys.append(None)
                texts.append(None)
        if xs:
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    name=f"{_esc(family)} trials",
                    text=texts,
                    hoverinfo="text",
                    line=dict(width=1, color=FAMILY_COLORS.get(family, "#7f7f7f")),
                    opacity=0.35,
                )
            )
    for r in (r for r in with_curves if r.front):
        fig.add_trace(
            go.Scatter(
                x=[e for e, _ in r.curve],
                y=[a for _, a in r.curve],
                mode="lines+markers",
                name=f"front: {_esc(r.name)}",
                line=dict(width=2.5),
                text=[
                    f"{_esc(r.name)} (trial {r.number})<br>epoch {e}: val acc {a:.4f}"
                    for e, a in r.curve
                ],
                hoverinfo="text",
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


def history_figure(h: rd.HistoryData):  # noqa: ANN201
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": h.hypervolume is not None}]])
    fig.add_trace(
        go.Scatter(
            x=h.numbers,
            y=h.best_acc,
            mode="lines+markers",
            name="best validation accuracy so far",
            line=dict(shape="hv"),
        ),
        secondary_y=False,
    )
    if h.hypervolume is not None:
        fig.add_trace(
            go.Scatter(
                x=h.numbers,
                y=h.hypervolume,
                mode="lines",
                name="front hypervolume (normalised)",
                line=dict(shape="hv", dash="dot"),
            ),
            secondary_y=True,
        )
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


def importance_figure(imp: rd.ImportanceData):  # noqa: ANN201
    import plotly.graph_objects as go

    fig = go.Figure()
    for group, values in imp.groups.items():
        items = sorted(values.items(), key=lambda kv: kv[1])
        fig.add_trace(
            go.Bar(
                x=[v for _, v in items],
                y=[_esc(k) for k, _ in items],
                orientation="h",
                name=_esc(group),
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


# ---- the page --------------------------------------------------------------------------------


@dataclass
class ReportData:
    info: rd.StudyInfo
    rows: list[rd.TrialRow]
    pareto: dict[str, rd.ParetoData]
    history: rd.HistoryData
    importances: rd.ImportanceData
    reuse: list = field(default_factory=list)  # (TrialRow, DenseNetReuse)
    reuse_notes: list[str] = field(default_factory=list)


def build_report_data(
    study: optuna.Study, *, reuse_top: int = 2, base: Path | None = None
) -> ReportData:
    """Everything the page shows, as plain data."""
    rows = rd.trial_rows(study)
    info = rd.study_info(study, rows)
    refs = rd.references(info.dataset)
    pareto = {m: rd.pareto_data(rows, info, m, refs) for m in ("params", "flops")}
    reuse, notes = (
        rd.reuse_for_front(pareto[info.cost].front, reuse_top, base) if reuse_top else ([], [])
    )
    return ReportData(
        info, rows, pareto, rd.history(rows, info), rd.importances(study, rows), reuse, notes
    )


_TABLE_JS = """
document.querySelectorAll("table.sortable th").forEach((th, col) =>
 th.addEventListener("click", () => {
  const table = th.closest("table"), body = table.tBodies[0];
  const asc = th.dataset.dir !== "asc";
  table.querySelectorAll("th").forEach(h => delete h.dataset.dir);
  th.dataset.dir = asc ? "asc" : "desc";
  const key = td =>
    td.dataset.v !== undefined ? parseFloat(td.dataset.v) : td.textContent.toLowerCase();
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a.cells[col]), y = key(b.cells[col]);
    const c = (typeof x === "number" && typeof y === "number")
      ? ((isNaN(x) ? -Infinity : x) - (isNaN(y) ? -Infinity : y))
      : String(x).localeCompare(String(y));
    return asc ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
}));
"""

_CSS = """
body{font-family:system-ui,-apple-system,sans-serif;margin:1.5em auto;max-width:1300px;color:#222;
padding:0 1em}
h1{font-size:1.5em} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
.note{color:#555;max-width:70em} .grid{display:flex;flex-wrap:wrap;gap:8px}
table{border-collapse:collapse;font-size:13px}
td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
th{cursor:pointer;background:#f4f4f4;position:sticky;top:0} th[data-dir=asc]::after{content:" ▲"}
th[data-dir=desc]::after{content:" ▼"} td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.front td{font-weight:600} .scroll{max-height:600px;overflow:auto}
"""


def _cell(value: object, numeric: float | None = None, text: str | None = None) -> str:
    if numeric is None and text is None:
        return f"<td>{_esc(value)}</td>"
    v = "NaN" if numeric is None else repr(float(numeric))
    return f'<td class="n" data-v="{v}">{_esc(text if text is not None else value)}</td>'


def trials_table(rows: list[rd.TrialRow]) -> str:
    head = [
        "trial",
        "name",
        "family",
        "params",
        "FLOPs",
        "val acc",
        "epochs",
        "time (s)",
        "state",
        "front",
        "note",
    ]
    out = [
        '<table class="sortable" id="trials"><thead><tr>',
        *(f"<th>{h}</th>" for h in head),
        "</tr></thead><tbody>",
    ]
    for r in rows:
        out.append(
            f'<tr class="{"front" if r.front else ""}">'
            + "".join(
                [
                    _cell(r.number, r.number, str(r.number)),
                    _cell(r.name),
                    _cell(r.family),
                    _cell(None, r.params, _num(r.params)),
                    _cell(None, r.flops, _num(r.flops)),
                    _cell(None, r.val_acc, _num(r.val_acc, ".4f")),
                    _cell(None, r.epochs, _num(r.epochs, "")),
                    _cell(None, r.wall_time_s, _num(r.wall_time_s, ".1f")),
                    _cell(r.state),
                    _cell(", ".join(r.front)),
                    _cell(r.note),
                ]
            )
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _final_table(final: list[dict]) -> str:
    keys = sorted({k for f in final if isinstance(f, dict) for k in f})
    head = "".join(f"<th>{_esc(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(f.get(k, ''))}</td>" for k in keys) + "</tr>"
        for f in final
        if isinstance(f, dict)
    )
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_html(data: ReportData, script: str = "plotly.min.js") -> str:
    """The page, given its data; ``script`` is plotly.js's path relative to the page."""
    info = data.info
    figs: list[tuple[str, object]] = []
    sections = []

    def fig_div(key: str, fig: object) -> str:
        figs.append((key, fig))
        return f'<div class="fig" id="{key}"></div>'

    counts = ", ".join(f"{n} {_esc(s)}" for s, n in sorted(info.counts.items())) or "no trials"
    budgets = " and ".join(str(b) for b in info.budgets) or "none recorded"
    bad = f" (unreadable: {_esc(', '.join(info.bad_budgets))})" if info.bad_budgets else ""
    refs = data.pareto["params"].references
    ref_note = (
        f"Stars are the papers' published test accuracies on {_esc(refs[0].column)} after full "
        f"training ({'/'.join(sorted({str(r.epochs) for r in refs}))} epochs), not "
        "measurements of this study: the trials are validation accuracies after a few epochs, "
        "so they sit below them."
        if refs
        else f"No published results for dataset {_esc(info.dataset or 'unknown')}."
    )
    sections.append(
        f"<h2>Pareto front</h2><p class='note'>Every trained trial; the front (red) is not "
        f"dominated in (accuracy up, cost down). Over-budget proposals (never built), failed and "
        f"pruned trials are in "
        f"the strip below each plot at their cost. {ref_note} The dashed line is the budget.</p>"
        + fig_div("pareto_params", pareto_figure(data.pareto["params"], info))
        + fig_div("pareto_flops", pareto_figure(data.pareto["flops"], info))
    )
    h = data.history
    hv = (
        f" Hypervolume: the area dominated by the front in (accuracy, {h.hv_metric}) from "
        "accuracy 0 "
        f"to {h.hv_metric} {h.hv_reference:,}, divided by {h.hv_reference:,}."
        if h.hypervolume is not None
        else ""
    )
    sections.append(
        "<h2>Search progress</h2>"
        + (
            f"<p class='note'>{hv}</p>" + fig_div("history", history_figure(h))
            if h.numbers
            else "<p class='note'>No trained trials yet.</p>"
        )
    )
    sections.append(
        "<h2>Learning curves</h2>"
        + (
            fig_div("curves", curves_figure(data.rows))
            if any(r.curve for r in data.rows)
            else "<p class='note'>No per-epoch metrics recorded.</p>"
        )
    )
    imp = data.importances
    sections.append(
        "<h2>Parameter importances</h2><p class='note'>PED-ANOVA (Optuna): how differently "
        "each parameter is distributed among the top 10% of trained trials than among all of "
        "them; "
        "per family, since the two families share no parameter. Few trials make it noisy.</p>"
        + (fig_div("importances", importance_figure(imp)) if imp.groups else "")
        + (f"<p class='note'>{_esc(imp.reason)}</p>" if imp.reason else "")
    )
    reuse_parts = [
        "<h2>Feature reuse of the front's best DenseNets</h2>"
        f"<p class='note'>{_esc(DENSENET_DEFINITION)}</p>"
    ]
    for i, (row, result) in enumerate(data.reuse):
        reuse_parts.append(
            f"<h3>{_esc(row.name)} (trial {row.number}, val acc {row.val_acc:.4f})</h3>"
            "<div class='grid'>"
        )
        reuse_parts += [fig_div(f"reuse{i}_{j}", f) for j, f in enumerate(reuse_figures(result))]
        reuse_parts.append("</div>")
    if not data.reuse:
        reuse_parts.append("<p class='note'>No DenseNet on the front with a checkpoint.</p>")
    reuse_parts += [f"<p class='note'>{_esc(n)}</p>" for n in data.reuse_notes]
    sections.append("".join(reuse_parts))
    if info.final:
        sections.append("<h2>Retrained front members (test set)</h2>" + _final_table(info.final))
    sections.append(
        "<h2>All trials</h2><p class='note'>Click a column to sort.</p><div class='scroll'>"
        + trials_table(data.rows)
        + "</div>"
    )

    calls = "\n".join(f'plot("{key}", {figure_json(fig)});' for key, fig in figs)
    now = datetime.datetime.now().isoformat(timespec="seconds")
    title = f"dnas report: {_esc(info.name)}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script src="{_esc(script)}"></script><style>{_CSS}</style></head>
<body><h1>{title}</h1>
<p>dataset <b>{_esc(info.dataset or "unknown")}</b>, space <b>{_esc(info.space or "unknown")}</b>,
objective <b>{_esc(info.objective)}</b> (cost: {_esc(info.cost)}),
budget <b>{_esc(budgets)}</b>{bad};
trials: {counts}. Written {now}.</p>
{"".join(sections)}
<script>{PLOT_JS}
{calls}
{_TABLE_JS}</script>
</body></html>
"""


def write_report(
    study: optuna.Study, out_dir: Path, *, reuse_top: int = 2, base: Path | None = None
) -> Path:
    """Write ``out_dir/index.html`` (and ``plotly.min.js`` beside it) for a study; return the page.

    Args:
        reuse_top: how many of the front's most accurate DenseNets get feature-reuse heatmaps
            (their checkpoints must still exist).
        base: where relative run directories are also looked for (``dnas search`` records them
            relative to its working directory), e.g. the directory that holds ``studies/``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    script = write_plotlyjs(out_dir)
    page = out_dir / "index.html"
    data = build_report_data(study, reuse_top=reuse_top, base=base)
    page.write_text(render_html(data, script), encoding="utf-8")
    return page


def storage_base(storage: str | None) -> Path | None:
    """For a SQLite study at ``DIR/studies/NAME.db``: DIR, where `dnas search` ran."""
    url = storage or "sqlite:///studies/x.db"
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///") :]).resolve().parent.parent


def load_study(name: str, storage: str | None = None) -> optuna.Study:
    """Open an existing study (default storage: ``sqlite:///studies/NAME.db``), or a DnasError."""
    from dnas.errors import DnasError

    url = storage or f"sqlite:///studies/{name}.db"
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        raise DnasError(
            f"no study database at {url[len('sqlite:///') :]};"
            f" give --storage URL for study {name!r}"
        )
    try:
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(url)) or "none"
        raise DnasError(f"no study {name!r} in {url}; studies there: {names}") from None
    except Exception as e:  # a bad URL or an unreachable server
        raise DnasError(f"cannot open storage {url!r}: {e}".splitlines()[0]) from None
