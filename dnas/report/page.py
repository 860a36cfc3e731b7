"""The study's page: its sections in order (front, progress, curves, importances, reuse, retrained
members, all trials), each a figure module's figure and a note; written by ``dnas.report.html``."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import optuna

from dnas.report.curves import curves_figure
from dnas.report.data import ReportData, build_report_data
from dnas.report.front import pareto_figure
from dnas.report.history import history_figure
from dnas.report.html import SORTABLE_JS, check_page, esc, fig_div, render_page, write_page
from dnas.report.importances import importance_figure
from dnas.report.reuse import reuse_grid
from dnas.report.scatter import num
from dnas.reuse import DENSENET_DEFINITION

PAGE = "index.html"  # a study's report page, in its report folder

_TRIAL_COLUMNS = (
    "trial", "name", "family", "params", "FLOPs", "val acc", "epochs", "time (s)", "state",
    "front", "note",
)  # fmt: skip


def _number(value: float | None, fmt: str = ",") -> str:
    """A sortable numeric cell: ``data-v`` holds the number (NaN when missing)."""
    v = "NaN" if value is None else repr(float(value))
    return f'<td class="n" data-v="{v}">{num(value, fmt)}</td>'


def trials_table(data: ReportData) -> str:
    """Every trial as a sortable table; the front's members in bold."""
    head = "".join(f"<th>{h}</th>" for h in _TRIAL_COLUMNS)
    out = [f'<table class="sortable" id="trials"><thead><tr>{head}</tr></thead><tbody>']
    for r in data.records:
        on = ", ".join(data.fronts_of(r.number))
        out.append(
            f'<tr class="{"front" if on else ""}">{_number(r.number, "")}'
            f"<td>{esc(r.name or '?')}</td><td>{esc(r.family or '?')}</td>"
            f"{_number(r.params)}{_number(r.flops)}{_number(r.val_acc, '.4f')}"
            f"{_number(r.epochs, '')}{_number(r.wall_time_s, '.1f')}"
            f"<td>{esc(r.state)}</td><td>{on}</td><td>{esc(r.note)}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def final_table(final: list[dict]) -> str:
    keys = sorted({k for f in final for k in f}, key=str)
    head = "".join(f"<th>{esc(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(f.get(k, ''))}</td>" for k in keys) + "</tr>" for f in final
    )
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class _Sections:
    """The page's HTML sections and the figures they hold, in order."""

    def __init__(self) -> None:
        self.html: list[str] = []
        self.figures: list[tuple[str, object]] = []

    def figure(self, key: str, fig: object) -> str:
        self.figures.append((key, fig))
        return fig_div(key)

    def add(self, title: str, *parts: str) -> None:
        self.html.append(f"<h2>{title}</h2>" + "".join(parts))


def _note(text: str) -> str:
    """A paragraph of our own words (HTML: escape what came from the study before)."""
    return f"<p class='note'>{text}</p>"


def _summary(data: ReportData) -> str:
    info = data.info
    counts = ", ".join(f"{n} {esc(s)}" for s, n in sorted(info.counts.items())) or "no trials"
    budgets = " and ".join(str(b) for b in info.budgets) or "none recorded"
    bad = f" (unreadable: {esc(', '.join(info.bad_budgets))})" if info.bad_budgets else ""
    now = datetime.datetime.now().isoformat(timespec="seconds")
    return (
        f"<p>dataset <b>{esc(info.dataset or 'unknown')}</b>,"
        f" space <b>{esc(info.space or 'unknown')}</b>,\n"
        f"objective <b>{esc(info.objective)}</b> (cost: {esc(info.cost)}),\n"
        f"budget <b>{esc(budgets)}</b>{bad};\ntrials: {counts}. Written {now}.</p>"
    )


def _front_section(data: ReportData, s: _Sections) -> None:
    refs = data.pareto["params"].references
    if refs:
        epochs = "/".join(sorted({str(r.epochs) for r in refs}))
        ref_note = (
            f"Stars are the papers' published test accuracies on {esc(refs[0].column)} after"
            f" full training ({epochs} epochs), not measurements of this study: the trials are"
            " validation accuracies after a few epochs, so they sit below them."
        )
    else:
        ref_note = f"No published results for dataset {esc(data.info.dataset or 'unknown')}."
    s.add(
        "Pareto front",
        _note(
            "Every trained trial; the front (red) is not dominated in (accuracy up, cost down)."
            " Over-budget proposals (never built), failed and pruned trials are in the strip"
            f" below each plot at their cost. {ref_note} The dashed line is the budget."
        ),
        *(s.figure(f"pareto_{m}", pareto_figure(p, data.info)) for m, p in data.pareto.items()),
    )


def _history_section(data: ReportData, s: _Sections) -> None:
    h = data.history
    if not h.numbers:
        s.add("Search progress", _note("No trained trials yet."))
        return
    hv = (
        f" Hypervolume: the area dominated by the front in (accuracy, {h.hv_metric}) from"
        f" accuracy 0 to {h.hv_metric} {h.hv_reference:,}, divided by {h.hv_reference:,}."
        if h.hypervolume is not None
        else ""
    )
    s.add("Search progress", _note(hv), s.figure("history", history_figure(h)))


def _curves_section(data: ReportData, s: _Sections) -> None:
    if any(r.curve for r in data.records):
        s.add(
            "Learning curves", s.figure("curves", curves_figure(data.records, data.on_any_front))
        )
    else:
        s.add("Learning curves", _note("No per-epoch metrics recorded."))


def _importances_section(data: ReportData, s: _Sections) -> None:
    imp = data.importances
    s.add(
        "Parameter importances",
        _note(
            "PED-ANOVA (Optuna): how differently each parameter is distributed among the top 10%"
            " of trained trials than among all of them; per family, since the two families share"
            " no parameter. Few trials make it noisy."
        ),
        s.figure("importances", importance_figure(imp)) if imp.groups else "",
        _note(esc(imp.reason)) if imp.reason else "",
    )


def _reuse_section(data: ReportData, s: _Sections) -> None:
    parts = [_note(esc(DENSENET_DEFINITION))]
    for i, (r, result) in enumerate(data.reuse.results):
        parts.append(f"<h3>{esc(r.name or '?')} (trial {r.number}, val acc {r.val_acc:.4f})</h3>")
        grid, figures = reuse_grid(result, f"reuse{i}")
        s.figures += figures
        parts.append(grid)
    if not data.reuse.results:
        parts.append(_note("No DenseNet on the front with a checkpoint."))
    parts += [_note(esc(n)) for n in data.reuse.notes]
    s.add("Feature reuse of the front's best DenseNets", *parts)


def _page(data: ReportData) -> tuple[str, str, list]:
    """The page's title (plain text), body (HTML) and figures."""
    s = _Sections()
    _front_section(data, s)
    _history_section(data, s)
    _curves_section(data, s)
    _importances_section(data, s)
    _reuse_section(data, s)
    if data.info.final:
        s.add("Retrained front members (test set)", final_table(data.info.final))
    if data.warnings:
        listed = "".join(f"<li>{esc(w)}</li>" for w in data.warnings)
        s.add("Left out", _note("What could not be read from the study:"), f"<ul>{listed}</ul>")
    s.add(
        "All trials",
        _note("Click a column to sort."),
        f"<div class='scroll'>{trials_table(data)}</div>",
    )
    body = _summary(data) + "\n" + "".join(s.html)
    return f"dnas report: {data.info.name}", body, s.figures


def render_html(data: ReportData, script: str = "plotly.min.js") -> str:
    """The page, given its data; ``script`` is plotly.js's path relative to the page."""
    return render_page(*_page(data), script=script, js=SORTABLE_JS)


def write_report(
    study: optuna.Study,
    out_dir: Path,
    *,
    reuse_top: int = 2,
    base: Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` (and ``plotly.min.js`` beside it) for a study; return the page.

    A damaged or foreign study still gets its page: what cannot be read is left out, listed on
    the page and passed to ``warn``, one line per trial (see ``ReportData.warnings``).

    Args:
        reuse_top: how many of the front's most accurate DenseNets get feature-reuse heatmaps
            (their checkpoints must still exist).
        base: where relative run directories are also looked for (``dnas search`` records them
            relative to its working directory), e.g. the directory that holds ``studies/``.
        warn: called with each line of what was left out, e.g.
            ``trial 7: metrics='x' is not a list of per-epoch records; left out``.
    """
    data = build_report_data(study, reuse_top=reuse_top, base=base)
    if warn is not None:
        for line in data.warnings:
            warn(line)
    title, body, figures = _page(data)
    return write_page(Path(out_dir) / PAGE, title, body, figures, js=SORTABLE_JS)


def check_report(out_dir: str | Path) -> None:
    """Raise now what ``write_report`` would refuse in ``out_dir`` (see ``check_page``)."""
    check_page(Path(out_dir) / PAGE)
