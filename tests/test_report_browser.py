"""The report really renders: Debian's headless Chromium, network off, no console messages."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from benchmarks.bench_report import synthetic_study
from dnas.report import data as rd
from dnas.report import write_report
from dnas.spec import DenseNetSpec
from dnas.study import TRAINED, read_all

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"
)


def _offline_prefix() -> list[str]:
    """``unshare -rn``: a fresh network namespace without interfaces, where the kernel allows."""
    ok = (
        shutil.which("unshare")
        and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    )
    return ["unshare", "-rn"] if ok else []


def render(url: str, profile_dir) -> tuple[str, list[str]]:  # noqa: ANN001
    """The DOM after scripts ran, and the page's console messages (errors included)."""
    cmd = [
        *_offline_prefix(),
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile_dir}",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    # Chromium's own pages (chrome://...) log too; keep the messages of ours.
    console = [
        line
        for line in proc.stderr.splitlines()
        if ":CONSOLE" in line and "source: chrome://" not in line
    ]
    return proc.stdout, console


def test_console_errors_are_caught(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>throw new Error('boom')</script></body></html>")
    _, console = render(page.as_uri(), tmp_path / "profile")
    assert any("Uncaught Error: boom" in line for line in console)


def test_report_renders_offline(tmp_path):
    from tests.test_reuse import train_tiny

    run = train_tiny(DenseNetSpec(10, growth_rate=2), tmp_path / "run")
    study = synthetic_study(40, seed=5, name="<script>alert(1)</script>")
    best = max(
        (t for t in study.trials if t.user_attrs.get("trained") and t.values),
        key=lambda t: t.values[0],
    )
    study.add_trial(optuna_trial_like(best, run))
    page = write_report(study, tmp_path / "report")
    dom, console = render(page.as_uri(), tmp_path / "profile")
    assert console == []
    pareto = dom[dom.index('id="pareto_params"') : dom.index('id="pareto_flops"')]
    rows = read_all(study)
    shown = sum(
        1 for r in rows if r.params is not None and (r.val_acc is not None or r.state != TRAINED)
    )
    references = len(rd.references("cifar10"))
    assert pareto.count('class="point"') >= shown + references
    assert "main-svg" in pareto and "Pareto front" in pareto
    reuse = dom[dom.index('id="reuse0_0"') :]
    assert 'class="hm"' in reuse  # the heatmap was drawn
    assert (
        "<script>alert(1)</script>" not in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    )


def optuna_trial_like(best, run):  # noqa: ANN001, ANN201
    """The most accurate trial again, as a tiny trained DenseNet whose checkpoint exists."""
    import optuna

    attrs = {
        **best.user_attrs,
        "name": "densenet-10-k2",
        "family": "densenet",
        "params": 20_000,
        "run_dir": str(run),
    }
    return optuna.trial.create_trial(
        values=[best.values[0] + 0.01, 20_000.0],
        params=best.params,
        distributions=best.distributions,
        user_attrs=attrs,
    )
