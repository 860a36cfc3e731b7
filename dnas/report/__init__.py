"""A study's report: one self-contained HTML page (plotly.js written beside it, no network).

Each figure is made in three steps (as Optuna's plots are): study -> plain data
(``dnas.report.data``) -> a Plotly figure (one module per figure: ``front``, ``history``,
``curves``, ``importances``, ``reuse``) -> the page (``dnas.report.html``, the one module that
writes HTML and escapes what came from a user or a study).

    from dnas.report import write_report
    page = write_report(study, "reports/demo", warn=print)
"""

from __future__ import annotations

from dnas.report.data import ReportData, build_report_data
from dnas.report.page import render_html, write_report
from dnas.report.reuse import write_reuse_page

__all__ = ["ReportData", "build_report_data", "render_html", "write_report", "write_reuse_page"]
