from __future__ import annotations

import re
import warnings
from pathlib import Path

import optuna
import pytest
from dnas_cli.main import app
from optuna.distributions import CategoricalDistribution, IntDistribution
from typer.testing import CliRunner

from benchmarks.bench_report import synthetic_study
from dnas.errors import DnasError
from dnas.pareto import hypervolume
from dnas.report import build_report_data, render_html, write_report
from dnas.report import data as rd
from dnas.spec import DenseNetSpec
from dnas.study import FAILED, OVER_BUDGET, PRUNED, STOPPED, TRAINED, read_all

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)


def trial(
    name: str, params: int, acc: float | None, family: str = "densenet", **attrs
) -> optuna.trial.FrozenTrial:
    """A trial as `dnas search` stores it; acc None: an over-budget proposal (never trained)."""
    user = {
        "name": name,
        "family": family,
        "params": params,
        "flops": params * 100,
        "violation": -0.5,
        **attrs,
    }
    dist = {
        "family": CategoricalDistribution(["densenet", "wrn"]),
        "densenet_layers_per_block": IntDistribution(1, 64),
    }
    p = {
        "family": family if family in ("densenet", "wrn") else "wrn",
        "densenet_layers_per_block": params % 64 + 1,
    }
    if acc is None:
        user.update(rejected="over budget", violation=1.0)
        return optuna.trial.create_trial(
            values=[0.0, float(params)], params=p, distributions=dist, user_attrs=user
        )
    metrics = [{"epoch": 1, "val_acc": acc / 2}, {"epoch": 2, "val_acc": acc}]
    user.update(trained=True, metrics=metrics, epochs=2, wall_time_s=12.5)
    return optuna.trial.create_trial(
        values=[acc, float(params)], params=p, distributions=dist, user_attrs=user
    )


def small_study(name: str = "small", storage: str | None = None) -> optuna.Study:
    study = optuna.create_study(
        study_name=name, storage=storage, directions=["maximize", "minimize"]
    )
    study.set_user_attr("budgets", ["1M-params"])
    study.set_user_attr("dataset", "cifar10")
    study.add_trials(
        [
            trial("densenet-40", 400_000, 0.60),
            trial("densenet-bc-100", 800_000, 0.70),
            trial("densenet-bc-52", 300_000, 0.55),
            trial("densenet-bc-64", 600_000, 0.58),  # dominated by densenet-40
            trial("wrn-94-11-b31", 94_000_000, None, family="wrn"),
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.FAIL,
                user_attrs={
                    "name": "wrn-40-4",
                    "family": "wrn",
                    "params": 900_000,
                    "flops": 1,
                    "failure": "RuntimeError: OOM",
                },
            ),
        ]
    )
    return study


def test_rows_never_show_a_rejected_proposals_placeholder_accuracy():
    rows = {r.name: r for r in read_all(small_study())}
    assert rows["wrn-94-11-b31"].state == OVER_BUDGET and rows["wrn-94-11-b31"].val_acc is None
    assert rows["wrn-40-4"].state == FAILED and "OOM" in rows["wrn-40-4"].note
    assert rows["densenet-bc-100"].curve == [(1, 0.35), (2, 0.70)]
    assert rows["densenet-bc-100"].epochs == 2 and rows["densenet-bc-100"].wall_time_s == 12.5


def test_pareto_data():
    rows = read_all(small_study())
    info = rd.study_info(small_study(), rows)
    data = rd.pareto_data(rows, info, "params", rd.references("cifar10"))
    assert [r.name for r in data.front] == ["densenet-bc-52", "densenet-40", "densenet-bc-100"]
    assert [r.name for r in data.trained] == ["densenet-bc-64"]
    assert [r.state for r in data.untrained] == [OVER_BUDGET, FAILED]
    assert data.budgets == [1_000_000]
    bc100 = next(r for r in data.references if r.name == "densenet-bc-100")
    # Huang et al. 2017, Table 2: DenseNet-BC (L=100, k=12), 0.8M parameters, 4.51% on C10+.
    assert (bc100.params, bc100.error, bc100.column, bc100.epochs) == (769_162, 4.51, "C10+", 300)
    assert bc100.accuracy == pytest.approx(0.9549)
    wrn = next(r for r in data.references if r.name == "wrn-28-10")
    assert (wrn.error, wrn.epochs) == (4.00, 200)
    assert rd.references("fashion-mnist") == [] and rd.references(None) == []


def test_front_is_exactly_the_non_dominated_set():
    rows = read_all(synthetic_study(120, seed=3))
    front = {r.number for r in rd.pareto_front(rows, "flops")}
    trained = [r for r in rows if r.state == TRAINED]
    for r in trained:
        dominated = any(
            o.val_acc >= r.val_acc
            and o.flops <= r.flops
            and (o.val_acc, o.flops) != (r.val_acc, r.flops)
            for o in trained
        )
        assert (r.number in front) != dominated or any(
            (o.val_acc, o.flops) == (r.val_acc, r.flops) and o.number in front
            for o in trained
            if o is not r
        )


def test_hypervolume_and_history():
    assert hypervolume([(0.0, 0.5)], 10) == 0.5
    # (0.5 at cost 2) and (0.8 at cost 6), reference cost 10: 0.5·4 + 0.8·4 = 5.2 -> 0.52.
    assert hypervolume([(2.0, 0.5), (6.0, 0.8)], 10) == pytest.approx(0.52)
    assert hypervolume([(20.0, 0.9)], 10) == 0.0
    study = small_study()
    rows = read_all(study)
    h = rd.history(rows, rd.study_info(study, rows))
    assert h.numbers == [0, 1, 2, 3] and h.best_acc == [0.60, 0.70, 0.70, 0.70]
    assert h.hv_reference == 1_000_000
    assert h.hypervolume == pytest.approx(
        [0.6 * 0.6, 0.6 * 0.4 + 0.7 * 0.2, 0.55 * 0.1 + 0.6 * 0.4 + 0.7 * 0.2] + [0.435]
    )


def test_importances_need_enough_trials():
    small = small_study()
    imp = rd.importances(small, read_all(small))
    assert imp.groups == {} and "at least 10" in imp.reason
    big = synthetic_study(80, seed=1)
    imp = rd.importances(big, read_all(big))
    assert "densenet" in imp.groups and "densenet_growth_rate" in imp.groups["densenet"]
    assert "family" not in imp.groups["densenet"]


def test_study_text_is_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    study = optuna.create_study(study_name=evil, directions=["maximize", "minimize"])
    study.set_user_attr("budgets", ["1M-params", "</script><b>x"])
    study.set_user_attr("dataset", evil)
    study.set_user_attr("space", evil)
    study.add_trial(trial('<img src=x onerror="alert(2)">', 1000, 0.5, family=evil, failure=evil))
    page = write_report(study, tmp_path).read_text()
    assert "alert(1)</script>" not in page and "<img src=x" not in page and "<b>x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Only our own script elements: plotly.js, then the figures and the table code.
    assert page.count("<script") == 2 and page.count("</script>") == 2


def test_report_page(tmp_path):
    page = write_report(synthetic_study(60, seed=2), tmp_path / "r", reuse_top=0)
    text = page.read_text()
    assert (tmp_path / "r" / "plotly.min.js").stat().st_size > 1_000_000
    assert re.findall(r'<script src="([^"]+)"', text) == ["plotly.min.js"]
    assert "cdn.plot.ly" not in text and "http://" not in text and "https://" not in text
    for needle in (
        'id="pareto_params"',
        'id="pareto_flops"',
        'id="history"',
        'id="curves"',
        'id="importances"',
        'class="sortable"',
        "published",
        "densenet-bc-100",
        "budget 1M params",
    ):
        assert needle in text, needle


def test_a_report_cut_short_keeps_the_previous_page(tmp_path, monkeypatch):
    """The page is written whole or not at all: a full disk (or a kill) mid-write leaves the
    previous report readable, and no partial file where the page belongs."""
    study = synthetic_study(20, seed=3)
    page = write_report(study, tmp_path / "r", reuse_top=0)
    before = page.read_bytes()

    def full(self: Path, data: bytes) -> int:
        self.open("wb").write(data[:100])  # a part written, then the device is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(DnasError, match=r"cannot write it \(No space left on device\)"):
        write_report(synthetic_study(30, seed=4), tmp_path / "r", reuse_top=0)
    monkeypatch.undo()
    assert page.read_bytes() == before
    assert sorted(p.name for p in page.parent.iterdir()) == ["index.html", "plotly.min.js"]


def test_report_shows_reuse_of_the_front_densenet(tmp_path):
    from tests.test_reuse import train_tiny

    run = train_tiny(DenseNetSpec(10, growth_rate=2), tmp_path / "run")
    study = small_study()
    study.add_trial(trial("densenet-10-k2", 20_000, 0.65, run_dir=str(run)))
    data = build_report_data(study)
    assert [row.name for row, _ in data.reuse.results] == ["densenet-10-k2"]
    assert len(data.reuse.results[0][1].blocks) == 3
    assert any("densenet-bc-100" in n and "no checkpoint" in n for n in data.reuse.notes)
    assert data.warnings == []  # a missing checkpoint is a note on the page, not a warning
    html = render_html(data)
    assert 'id="reuse0_2"' in html and "average absolute weight" in html


def test_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small_study("demo", "sqlite:///demo.db")
    runner = CliRunner()
    result = runner.invoke(app, ["report", "demo", "--storage", "sqlite:///demo.db"])
    assert result.exit_code == 0, result.output
    assert (
        tmp_path / "reports" / "demo" / "index.html"
    ).exists() and "index.html" in result.stdout
    result = runner.invoke(app, ["report", "nope", "--storage", "sqlite:///demo.db"])
    assert (
        result.exit_code == 2
        and "studies there: demo" in result.output
        and "Traceback" not in result.output
    )
    result = runner.invoke(app, ["report", "nope"])
    assert result.exit_code == 2 and "no study database" in result.output


def test_storage_base(tmp_path):
    from dnas.study import storage_base

    assert storage_base(f"sqlite:///{tmp_path}/studies/x.db") == tmp_path
    assert storage_base("postgresql://u@h/db") is None


def test_single_objective_study_with_pruned_trials(tmp_path):
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("budgets", ["300M-flops"])
    attrs = {"name": "wrn-16-2", "family": "wrn", "params": 690_000, "flops": 100_000_000}
    study.add_trial(optuna.trial.create_trial(value=0.7, user_attrs={**attrs, "trained": True}))
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED,
            intermediate_values={1: 0.3, 2: 0.4},
            user_attrs={**attrs, "name": "wrn-22-2", "trained": True},
        )
    )
    rows = read_all(study)
    assert rows[1].state == PRUNED and rows[1].val_acc == 0.4 and rows[1].epochs == 2
    info = rd.study_info(study, rows)
    assert info.objective == "accuracy" and rd.history(rows, info).hypervolume is None
    data = rd.pareto_data(rows, info, "flops", [])
    assert data.budgets == [300_000_000] and [r.name for r in data.pruned] == ["wrn-22-2"]
    assert write_report(study, tmp_path).exists()


# ---- damaged and foreign studies ---------------------------------------------------------------


def altered(t: optuna.trial.FrozenTrial, **attrs: object) -> optuna.trial.FrozenTrial:
    """The trial again with some user attributes replaced (as a damaged database holds them)."""
    return optuna.trial.create_trial(
        state=t.state,
        values=t.values,
        params=t.params,
        distributions=t.distributions,
        user_attrs={**t.user_attrs, **attrs},
    )


def damaged_study(name: str = "damaged", storage: str | None = None) -> optuna.Study:
    """The small study (trials 0-5), three trials with malformed attributes (6-8), and study
    attributes of the wrong shape."""
    study = small_study(name, storage)
    study.set_user_attr("budgets", "1M-params")  # a string, not a list of budgets
    study.set_user_attr("final", {"name": "densenet-40"})  # a record, not a list of them
    study.add_trials(
        [
            altered(trial("densenet-bc-40", 500_000, 0.62), metrics="x"),
            altered(trial("densenet-bc-28", 250_000, 0.50), params="12"),
            altered(trial("densenet-22", 100_000, 0.40), flops=-5, epochs=[1]),
        ]
    )
    return study


def test_a_damaged_study_is_reported_without_what_cannot_be_read(tmp_path):
    lines: list[str] = []
    page = write_report(damaged_study(), tmp_path, warn=lines.append)
    assert lines[:3] == [
        "study: budgets='1M-params' is not a list of budgets; left out",
        "study: final={'name': 'densenet-40'} is not a list of retrained front members; left out",
        "trial 6: metrics='x' is not a list of per-epoch records; left out",
    ]
    assert lines[3].startswith("trial 7: params='12' ") and lines[3].endswith("; left out")
    assert lines[4].startswith("trial 8: ") and "flops=-5" in lines[4] and "epochs=[1]" in lines[4]
    assert len(lines) == 5
    text = page.read_text()
    assert "Left out" in text and "trial 6: metrics=&#x27;x&#x27;" in text

    data = build_report_data(damaged_study(), reuse_top=0)
    records = {r.number: r for r in data.records}
    assert records[6].state == TRAINED and records[6].metrics == [] and records[6].curve == []
    assert records[7].params is None and records[7].flops == 25_000_000
    assert data.info.budgets == [] and data.info.final == []
    assert data.pareto["params"].budgets == []
    # Trial 7 has no parameter count: on the FLOPs front, not drawn against parameters.
    assert 7 in data.pareto["flops"].on_front
    params = data.pareto["params"]
    assert 7 not in {r.number for r in params.trained + params.front}
    assert data.warnings == lines


def test_a_study_of_wrongly_typed_attributes_still_gets_its_page(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for key, value in (("dataset", 10), ("space", ["all"]), ("objective", 2), ("cost", "x")):
        study.set_user_attr(key, value)
    study.set_user_attr("budgets", [3, "nonsense", "1M-params"])
    study.set_user_attr("final", [{"name": "a", "test_acc": 0.9}, "b"])
    study.add_trial(
        altered(trial("densenet-40", 400_000, 0.6), name=7, family=None, wall_time_s="x")
    )
    data = build_report_data(study)
    info = data.info
    assert info.dataset is None and info.space is None
    assert info.objective == "pareto" and info.cost == "params"  # the defaults
    assert [str(b) for b in info.budgets] == ["1M-params"]
    assert info.bad_budgets == ["3", "nonsense"]
    assert info.final == [{"name": "a", "test_acc": 0.9}]
    assert [w.split("=")[0] for w in data.warnings] == [
        "study: dataset",
        "study: space",
        "study: objective",
        "study: cost",
        "study: final: 1 of 2 entries are not records; left out",
        "trial 0: name",
    ]
    assert write_report(study, tmp_path).exists()


def checkpoint_of(name: str, folder: Path) -> Path:
    """A run folder holding a genuine dnas checkpoint of the untrained network ``name``."""
    import torch

    from dnas.checkpoint import RunDir, checkpoint_state
    from dnas.models import build
    from dnas.names import parse_name

    spec = parse_name(name)
    model = build(spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = RunDir(folder)
    run.start([])
    run.save(checkpoint_state(spec, {}, {}, {}, model, optimizer, torch.Generator(), [{"e": 1}]))
    return folder


def test_front_members_with_foreign_or_damaged_checkpoints_are_notes(tmp_path):
    other = checkpoint_of("densenet-bc-10-k4", tmp_path / "other")  # another DenseNet
    wrn = checkpoint_of("wrn-10-1", tmp_path / "wrn")  # another family
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoint.pt").write_bytes(b"PK\x03\x04 cut short")
    fine = checkpoint_of("densenet-10-k2", tmp_path / "fine")  # the trial's own network
    study = small_study()
    study.add_trials(  # trials 6-10: the front's five most accurate DenseNets
        [
            trial("densenet-10-k3", 20_000, 0.74, run_dir=str(other)),
            trial("densenet-10-k4", 30_000, 0.75, run_dir=str(wrn)),
            trial("densenet-10-k5", 40_000, 0.76, run_dir=str(corrupt)),
            trial("densenet-10-k2", 50_000, 0.77, run_dir=str(fine)),
            trial("densenet-10-k6", 60_000, 0.78, run_dir="x" * 5000),  # a name too long
        ]
    )
    lines: list[str] = []
    page = write_report(study, tmp_path / "report", reuse_top=5, warn=lines.append)
    assert [line.split(":")[0] for line in lines] == ["trial 6", "trial 7", "trial 8"]
    assert "holds densenet-bc-10-k4, not the trial's densenet-10-k3" in lines[0]
    assert "holds wrn-10-1, not the trial's densenet-10-k4" in lines[1]
    assert "damaged" in lines[2] and "not a dnas checkpoint" in lines[2]
    assert all(line.count("\n") == 0 and "Traceback" not in line for line in lines)
    data = build_report_data(study, reuse_top=5)
    assert [r.name for r, _ in data.reuse.results] == ["densenet-10-k2"]
    assert sorted(data.reuse.failures) == [6, 7, 8]
    text = page.read_text()
    assert len(data.reuse.notes) == 4 and "trial 10 (densenet-10-k6): no checkpoint" in text
    assert 'id="reuse0_2"' in text and "holds wrn-10-1" in text


def test_cli_prints_one_warning_line_per_trial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    damaged_study("demo", "sqlite:///demo.db")
    result = CliRunner().invoke(app, ["report", "demo", "--storage", "sqlite:///demo.db"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(lines) == 5 and "warning:" not in result.stdout
    metrics = "warning: trial 6: metrics='x' is not a list of per-epoch records; left out"
    assert metrics in lines
    assert (tmp_path / "reports" / "demo" / "index.html").exists()


def test_a_candidate_stopped_at_a_lower_rung_is_drawn_apart_and_never_on_the_front(tmp_path):
    study = small_study("rungs")
    stopped = trial("densenet-bc-16-k6", 100_000, 0.99, rungs={"1": 0.99}, stopped="at epoch 1,"
                    " stopped: place 3 of 3, best 1 continue")  # fmt: skip
    promoted = trial("densenet-bc-22-k4", 200_000, 0.65, rungs={"1": 0.3, "2": 0.65},
                     promoted=["at epoch 1, promoted: place 1 of 1, best 1 continue"])  # fmt: skip
    study.add_trials([stopped, promoted])
    rows = read_all(study)
    info = rd.study_info(study, rows)
    data = rd.pareto_data(rows, info, "params", [])
    # Its accuracy (at epoch 1) would dominate the whole front; it is not a full-training result.
    assert [r.name for r in data.stopped] == ["densenet-bc-16-k6"]
    assert "densenet-bc-16-k6" not in {r.name for r in data.front + data.trained}
    assert "densenet-bc-22-k4" in {r.name for r in data.front}
    by_name = {r.name: r for r in rows}
    assert by_name["densenet-bc-16-k6"].state == STOPPED
    assert by_name["densenet-bc-22-k4"].note.startswith("at epoch 1, promoted: place 1 of 1")
    html = write_report(study, tmp_path / "r").read_text()
    assert "stopped at a lower rung" in html and "rungs reached: 1, 2" in html


def test_an_attribute_that_is_not_json_is_left_out_not_a_traceback(tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.chdir(tmp_path)
    damaged_study("demo", "sqlite:///demo.db")
    with sqlite3.connect(tmp_path / "demo.db") as db:  # as a damaged disk or a hand edit leaves it
        db.execute("update trial_user_attributes set value_json='[1,2' where key='metrics'")
    result = CliRunner().invoke(app, ["report", "demo", "--storage", "sqlite:///demo.db"])
    assert result.exit_code == 0, result.output
    assert "warning: trial 0: metrics=<not JSON: '[1,2'> is not a list" in result.stderr
    with sqlite3.connect(tmp_path / "demo.db") as db:  # the study's own attributes too
        db.execute("update study_user_attributes set value_json='{' where key='final'")
    result = CliRunner().invoke(app, ["report", "demo", "--storage", "sqlite:///demo.db"])
    assert result.exit_code == 0, result.output
    assert "warning: study: its attributes are not JSON (a damaged database)" in result.stderr
    search = ["search", "-b", "1M-params", "--dataset", "fashion-mnist", "--train-subset", "300",
              "--val-size", "200",
              "--study", "demo", "--storage", "sqlite:///demo.db"]  # fmt: skip
    result = CliRunner().invoke(app, search)
    assert result.exit_code == 2 and result.output.startswith(
        "Error: study 'demo' in sqlite:///demo.db: its stored attributes are not JSON"
    )
    assert len(result.output.splitlines()) == 1
