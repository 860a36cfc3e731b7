from __future__ import annotations

import datetime
import math
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from dnas import trial_table
from dnas.trial_table import load_trials
from tests.test_search_postgres import postgres  # noqa: F401 - a fixture

FIELDS = (
    "number",
    "state",
    "values",
    "params",
    "distributions",
    "user_attrs",
    "system_attrs",
    "intermediate_values",
    "datetime_start",
    "datetime_complete",
    "_trial_id",
)


def same(a: object, b: object) -> bool:
    """Equal, and of the same types all the way down (True is not 1, 1 is not 1.0), with NaN
    equal to NaN. Key order is not compared: Optuna orders only a trial's parameters (by the
    order written, which ``assert_same_trials`` checks); its attributes come in whatever order
    the database's query plan gives."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_trials(ours: list, optunas: list) -> None:
    assert [t.number for t in ours] == [t.number for t in optunas]
    for mine, theirs in zip(ours, optunas):
        assert list(mine.params) == list(theirs.params) == list(mine.distributions)
        for name in FIELDS:
            assert same(getattr(mine, name), getattr(theirs, name)), (mine.number, name)


def fill(study: optuna.Study) -> None:
    """One trial of each kind a dnas study holds, and a few it might."""
    for i, (acc, cost) in enumerate([(0.91, 7.5e5), (0.5, math.inf), (-math.inf, 12.0)]):
        t = study.ask()
        t.suggest_int("layers", 1, 64)
        t.suggest_int("width", 2, 32, log=True)
        t.suggest_int("depth", 4, 40, step=6)
        t.suggest_float("lr", 1e-4, 1.0, log=True)
        t.suggest_float("theta", 0.25, 1.0, step=0.25)
        t.suggest_float("drop", 0.0, 0.5)
        t.suggest_categorical("bottleneck", [True, False])
        t.suggest_categorical("block", [None, "b33", 3, 1.5])
        t.set_user_attr("name", f"densenet-bc-{100 + i}")
        t.set_user_attr("metrics", [{"epoch": 1, "val_acc": acc / 2, "lr": None}, {"epoch": 2}])
        t.set_user_attr("nested", {"a": [1, 2.5, "x", True, None], "é": {"b": []}})
        t.set_user_attr("big", 2**62)
        t.set_constraint("budget", -0.25 + i)
        study.tell(t, [acc, cost])
    failed = study.ask({"layers": IntDistribution(1, 64)})
    failed.set_user_attr("failure", "RuntimeError: CUDA out of memory")
    study.tell(failed, state=TrialState.FAIL)
    pruned = study.ask()
    pruned.suggest_categorical("block", [None, "b33", 3, 1.5])
    for step, value in enumerate([0.1, 0.25, math.nan, math.inf, -math.inf]):
        # Trial.report refuses multi-objective studies; Hyperband's single-objective ones report.
        pruned.storage.set_trial_intermediate_value(pruned._trial_id, step, value)
    study.tell(pruned, state=TrialState.PRUNED)
    running = study.ask()
    running.suggest_categorical("bottleneck", [True, False])
    running.set_user_attr("device", "cpu")
    study.enqueue_trial({"layers": 3}, user_attrs={"queued": True})
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.7, 1e4],
            params={"family": "wrn", "widen": 4},
            distributions={
                "family": CategoricalDistribution(["densenet", "wrn"]),
                "widen": FloatDistribution(1.0, 10.0),
            },
            user_attrs={"rejected": "over budget"},
            system_attrs={"constraints": [0.5, -1.0], "note": [1, {"x": None}]},
        )
    )


def sqlite_study(tmp_path, name: str = "s") -> optuna.Study:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    return optuna.create_study(study_name=name, storage=url, directions=["maximize", "minimize"])


@pytest.fixture
def far_from_utc(monkeypatch):
    """Local time 13.5 hours from UTC: the storage keeps UTC and Optuna gives back local time."""
    monkeypatch.setenv("TZ", "Pacific/Chatham")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_sqlite_trials_equal_optunas_field_by_field(tmp_path, far_from_utc):
    assert datetime.datetime.now().astimezone().utcoffset() != datetime.timedelta(0)
    study = sqlite_study(tmp_path)
    fill(study)
    other = optuna.create_study(study_name="other", storage=study._storage)
    other.enqueue_trial({"x": 1})  # another study in the same file stays out
    fresh = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    ours = load_trials(fresh)
    assert [t.state for t in ours] == [TrialState.COMPLETE] * 3 + [
        TrialState.FAIL,
        TrialState.PRUNED,
        TrialState.RUNNING,
        TrialState.WAITING,
        TrialState.COMPLETE,
    ]
    assert_same_trials(ours, optuna.load_study(study_name="s", storage=fresh._storage).trials)
    assert {k: v for k, v in ours[0].system_attrs.items() if "budget" in k} == {
        "constraints:budget": -0.25
    }
    assert ours[1].values == [0.5, math.inf] and ours[2].values[0] == -math.inf
    assert ours[4].intermediate_values[3] == math.inf and math.isnan(
        ours[4].intermediate_values[2]
    )
    assert ours[0].params["bottleneck"] in (True, False)


def test_the_fast_path_does_not_use_optunas_loader(tmp_path, monkeypatch):
    study = sqlite_study(tmp_path)
    fill(study)
    expected = study.get_trials(deepcopy=False)
    fresh = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")

    def refuse(*args, **kwargs):
        raise AssertionError("Optuna's loader was called")

    monkeypatch.setattr(optuna.storages.RDBStorage, "_get_trials", refuse)
    assert_same_trials(load_trials(fresh), expected)


def test_an_unknown_schema_is_read_by_optuna(tmp_path, monkeypatch):
    study = sqlite_study(tmp_path)
    fill(study)
    monkeypatch.setattr(trial_table, "KNOWN_SCHEMAS", {("v9.9.9", 99)})
    calls = []
    monkeypatch.setattr(study, "get_trials", lambda **kw: calls.append(kw) or ["optuna's"])
    assert load_trials(study) == ["optuna's"] and calls == [{"deepcopy": False}]


def test_a_study_in_memory_is_read_by_optuna():
    study = optuna.create_study(directions=["maximize", "minimize"])
    fill(study)
    ours = load_trials(study)
    assert_same_trials(ours, study.get_trials(deepcopy=False))
    assert ours[0] is study.get_trials(deepcopy=False)[0]


@pytest.mark.slow
def test_postgres_trials_equal_optunas(postgres):  # noqa: F811 - the imported fixture
    study = optuna.create_study(
        study_name="s", storage=postgres, directions=["maximize", "minimize"]
    )
    fill(study)
    fresh = optuna.load_study(study_name="s", storage=postgres)
    assert_same_trials(
        load_trials(fresh), optuna.load_study(study_name="s", storage=postgres).trials
    )
