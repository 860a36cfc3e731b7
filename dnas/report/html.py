"""The one place dnas writes HTML: escaping, JSON that is safe inside a <script> element, plotly.js
beside a page, and the self-contained page itself (the study report and the ``dnas reuse`` page).

Every string that came from a user, a study or a checkpoint goes through ``esc`` before it lands
in a page or in a figure's text (Plotly renders hover text and titles as HTML).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from dnas.errors import DnasError, check_replaceable, write_atomic, writing

PLOTLY_JS = "plotly.min.js"
_PLOT_JS = "function plot(id, f) { Plotly.newPlot(id, f.data, f.layout, {responsive: true}); }"

# Sorts every ``table.sortable`` by the clicked column (a cell's ``data-v`` holds its number).
SORTABLE_JS = """
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

Figures = Sequence[tuple[str, object]]  # (the id of the figure's div, a plotly Figure)


def esc(text: object) -> str:
    """``text`` as HTML text or an attribute value (quotes escaped too)."""
    return html.escape(str(text), quote=True)


def safe_json(data: object) -> str:
    """JSON that can sit inside a <script> element: no '</', '<!--' or ']]>' can close it."""
    text = data if isinstance(data, str) else json.dumps(data, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def figure_json(fig) -> str:  # noqa: ANN001 - a plotly Figure
    """A figure's data/layout as script-safe JSON (NaN becomes null)."""
    import plotly.io as pio

    return safe_json(pio.to_json(fig, validate=False, remove_uids=True))


def fig_div(key: str) -> str:
    """The element a figure is drawn into (``key`` is ours, never a user's string)."""
    return f'<div class="fig" id="{key}"></div>'


def _our_page(head: bytes) -> bool:
    """Whether a file's start is a page of ``render_page``'s (also as written before the
    generator tag)."""
    return b'<meta name="generator" content="dnas">' in head or (
        head.startswith(b"<!DOCTYPE html>") and f'<script src="{PLOTLY_JS}">'.encode() in head
    )


def _plotlyjs(head: bytes) -> bool:
    return head.startswith(b"/**\n* plotly.js v")


def write_plotlyjs(out_dir: Path, what: str = "report") -> str:
    """Write plotly.js beside a page and return its path relative to the page; ``what`` names
    the option that chose the folder in messages."""
    from plotly.offline import get_plotlyjs

    path = Path(out_dir) / PLOTLY_JS
    check_replaceable(path, what, _plotlyjs)
    write_atomic(path, get_plotlyjs().encode(), what)
    return path.name


def render_page(
    title: str, body: str, figures: Figures, *, script: str = PLOTLY_JS, js: str = ""
) -> str:
    """A whole page: ``title`` is plain text (escaped here), ``body`` is HTML, each figure is drawn
    into the element of its id, ``js`` runs after them; ``script`` is plotly.js's path."""
    calls = "\n".join(f'plot("{key}", {figure_json(fig)});' for key, fig in figures)
    title = esc(title)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="dnas">
<title>{title}</title>
<script src="{esc(script)}"></script><style>{_CSS}</style></head>
<body><h1>{title}</h1>
{body}
<script>{_PLOT_JS}
{calls}
{js}</script>
</body></html>
"""


def check_page(path: str | Path, what: str = "report") -> None:
    """Raise what ``write_page`` would refuse at ``path``: a file where its folder goes, or a
    page or plotly.js there that dnas did not write (a search checks before its trials)."""
    path = Path(path)
    for folder in (path.parent, *path.parent.parents):  # the nearest that exists
        if folder.exists():
            if not folder.is_dir():
                raise DnasError(
                    f"{what} {folder}: a file, not a folder; give a folder for the page"
                )
            break
    check_replaceable(path, what, _our_page)
    check_replaceable(path.parent / PLOTLY_JS, what, _plotlyjs)


def write_page(
    path: str | Path,
    title: str,
    body: str,
    figures: Figures,
    *,
    js: str = "",
    what: str = "report",
) -> Path:
    """Write a page that opens offline: ``path``, and plotly.js beside it; ``what`` names the
    option that chose ``path`` in messages (``report``, ``reuse --out``)."""
    path = Path(path)
    page = render_page(title, body, figures, script=PLOTLY_JS, js=js)
    check_page(path, what)  # before plotly.js goes beside it
    with writing(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_plotlyjs(path.parent, what)
    write_atomic(path, page.encode(), what)
    return path
