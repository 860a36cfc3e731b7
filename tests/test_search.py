"""Search on real Fashion-MNIST subsets with tiny budgets: trials really train."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import optuna
import pytest
from dnas_cli.main import app
from typer.testing import CliRunner

import dnas.local_workers
import dnas.worker
from dnas import study as records
from dnas.config import SearchConfig, make_config
from dnas.device import device_name
from dnas.errors import DnasError
from dnas.search import SearchFailed, search
from dnas.summary import summarize
from dnas.worker import open_study, trained_count

TINY = dict(
    budgets=("20k-params", "3M-flops"),
    dataset="fashion-mnist",
    epochs=2,
    min_epochs=1,  # multi-fidelity on: rungs of 1 and 2 epochs
    train_subset=300,
    val_size=200,
    batch_size=64,
)


def tiny(tmp_path: Path, **kw) -> SearchConfig:
    if kw.get("space") == "wrn":  # the smallest WRN has 29k parameters
        kw.setdefault("budgets", ("60k-params", "10M-flops"))
    return make_config(
        {
            **TINY,
            "studies_dir": str(tmp_path / "studies"),
            "reports_dir": str(tmp_path / "reports"),
            **kw,
        }
    )


def cli_args(tmp_path: Path, study: str, trials: int) -> list[str]:
    return [
        "search",
        "-b",
        "20k-params",
        "-b",
        "3M-flops",
        "--dataset",
        "fashion-mnist",
        "--epochs",
        "2",
        "--min-epochs",
        "1",
        "--train-subset",
        "300",
        "--val-size",
        "200",
        "--batch-size",
        "64",
        "--trials",
        str(trials),
        "--reports-dir",
        str(tmp_path / "reports"),
        "--study",
        study,
        "--storage",
        f"sqlite:///{tmp_path}/{study}.db",
    ]


def test_budget_is_never_exceeded_by_a_trained_trial(tmp_path):
    summary = search(tiny(tmp_path, trials=3, space="all"))
    study = open_study(tiny(tmp_path, trials=3, space="all"))
    trained = [t for t in study.trials if records.started(t)]
    assert summary.complete + summary.stopped == 3 == len(trained)
    for t in study.trials:
        if t.state == optuna.trial.TrialState.WAITING:  # the rest of the initial design
            assert not t.user_attrs and records.read(t).state == records.WAITING
            continue
        over = t.user_attrs["params"] > 20_000 or t.user_attrs["flops"] > 3_000_000
        assert over == bool(t.user_attrs.get("rejected"))
        assert not (over and records.started(t))
        assert t.system_attrs.get("constraints:budget") == pytest.approx(t.user_attrs["violation"])
    for t in trained:
        rec = records.read(t)
        assert rec.metrics[-1]["val_acc"] == pytest.approx(t.values[0]) == rec.val_acc
        assert rec.name and rec.device == device_name("cpu") and rec.wall_time_s > 0
        # the run's time, its epochs' and no more: a rung that resumed the run once added the
        # earlier rungs' epochs a second time
        epochs_s = sum(m["time_s"] for m in rec.metrics)
        assert epochs_s <= rec.wall_time_s <= t.duration.total_seconds()
    assert summary.rejected_over_budget == sum(
        1 for t in study.trials if t.user_attrs.get("rejected")
    )
    front_dirs = {m.run_dir for m in summary.front}
    assert all((Path(d) / "checkpoint.pt").exists() for d in front_dirs)
    for t in trained:  # only the front keeps its checkpoint
        if t.user_attrs["run_dir"] not in front_dirs:
            assert not (Path(t.user_attrs["run_dir"]) / "checkpoint.pt").exists()


def test_memory_budget_search_trains_only_what_fits(tmp_path):
    """A memory budget alone: every proposal is predicted to fit at the trials' batch size."""
    from dnas.cost import count
    from dnas.names import parse_name

    config = tiny(tmp_path, trials=2, space="all", budgets=("40M-memory",))
    summary = search(config)
    assert summary.rejected_over_budget == 0 and summary.complete + summary.stopped == 2
    proposed = [r for r in records.read_all(open_study(config)) if r.name]
    assert len(proposed) >= 2
    for r in proposed:
        assert r.memory == count(parse_name(r.name, 10, 1), (28, 28), 64).memory <= 40 * 2**20
    result = CliRunner().invoke(
        app, cli_args(tmp_path, "y", 2)[:1] + ["-b", "1M-memory", "--dataset", "fashion-mnist"]
    )
    assert result.exit_code == 2 and "of training memory at batch 128" in result.output


def test_initial_design_is_enqueued_once_and_only_for_tpe(tmp_path):
    from dnas.datasets import DATASETS
    from dnas.search import enqueue_initial_design

    info = DATASETS["fashion-mnist"]
    config = tiny(tmp_path, trials=1, space="all")
    names = enqueue_initial_design(open_study(config), config, info)
    study = open_study(config)
    assert len(names) == 6 and len(study.trials) == 6
    assert all(t.state == optuna.trial.TrialState.WAITING for t in study.trials)
    assert enqueue_initial_design(study, config, info) == []  # the study has trials
    for kw in (dict(sampler="random"), dict(sampler="nsga2"), dict(initial_design=0),
               dict(objective="accuracy")):  # fmt: skip
        other = tiny(
            tmp_path, trials=1, space="all", study=f"s{len(kw)}{list(kw.values())[0]}", **kw
        )
        assert enqueue_initial_design(open_study(other), other, info) == []
    summary = search(config)  # the first trial trained is the smallest of the design
    first = min(open_study(config).trials, key=lambda t: t.number)
    assert first.user_attrs["name"] == names[0] and summary.complete + summary.stopped == 1


def test_rerun_resumes_the_same_study(tmp_path):
    search(tiny(tmp_path, trials=1, space="wrn"))
    summary = search(tiny(tmp_path, trials=2, space="wrn"))
    assert summary.complete + summary.stopped == 2  # one more, not two more


def test_impossible_budget_fails_before_any_trial(tmp_path):
    result = CliRunner().invoke(
        app, cli_args(tmp_path, "x", 2)[:1] + ["-b", "1k-params", "--dataset", "fashion-mnist"]
    )
    assert result.exit_code == 2 and "the smallest costs" in result.output
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--objective", "best"], "'best' is not one of"),
        (["--sampler", "grid"], "'grid' is not one of"),
        (["--cost", "latency"], "'latency' is not one of"),
        (["--timeout", "soon"], "bad duration"),
        (["--trials", "0"], "--trials 0: expected int >= 1"),
        (["--config", "nope.toml"], "no such file"),
        (["-b", "1M"], "e.g. 1M-params"),
        (["--storage", "nosuchdb://x"], "cannot open storage"),
        (
            ["--storage", "foo"],
            "cannot open storage 'foo': Could not parse SQLAlchemy URL from"
            " given URL string; write e.g. sqlite:///studies/NAME.db or postgresql://",
        ),
        (
            ["--storage", "mysql://u@127.0.0.1:1/db"],
            "cannot open storage"
            " 'mysql://u@127.0.0.1:1/db': no Python driver for mysql is installed; install one",
        ),
        (["-b", "100k-params", "--batch-size", "99999999999"], "use a batch of at most about"),
    ],
)
def test_bad_search_input(args, fragment, tmp_path):
    result = CliRunner().invoke(
        app,
        ["search", "--dataset", "fashion-mnist", "--study", "s", "--trials", "1", *args]
        if "--storage" in args
        else [
            "search",
            "--dataset",
            "fashion-mnist",
            "--trials",
            "1",
            "--storage",
            f"sqlite:///{tmp_path}/s.db",
            *args,
        ],
    )
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s.db").exists()  # refused before the study is made


def test_cli_search_json_and_config_file(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text(
        'budget = ["20k-params", "3M-flops"]\ndataset = "fashion-mnist"\nepochs = 1\n'
        "train_subset = 300\n"
        'val_size = 200\nspace = "densenet"\ntrials = 2\n'
    )
    dirs = ["--studies-dir", f"{tmp_path}/studies", "--reports-dir", f"{tmp_path}/reports"]
    result = CliRunner().invoke(app, ["search", "--config", str(cfg), "--json", *dirs])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{") :])
    assert data["complete"] + data["stopped"] == 2 and data["best"]["params"] <= 20_000
    assert all(m["name"].startswith("densenet") for m in data["front"])
    assert Path(data["report"]).is_file() and "plotly" in Path(data["report"]).read_text()
    # the progress line of each finished trial: trials started of --trials, the best so far
    assert re.search(r"^\[[12]/2 started\] trial \d+: .* \| best ", result.stderr, re.M)


def test_two_local_workers_share_sqlite(tmp_path):
    trials, epochs = [], []
    summary = search(tiny(tmp_path, trials=4, workers=2, space="wrn"), on_trial=trials.append,
                     on_epoch=epochs.append)  # fmt: skip
    study = open_study(tiny(tmp_path, trials=4, workers=2, space="wrn"))
    states = [t.state for t in study.trials if records.started(t)]
    assert summary.failed == 0 and all(s == optuna.trial.TrialState.COMPLETE for s in states)
    assert 4 <= len(states) <= 5  # each worker stops once 4 are trained; a race can add one
    # The parent reports every epoch the workers trained (they were silent) and every trial once,
    # each with the best accuracy trained by the time it finished (was: by the time it was read)
    assert sorted(e.record.number for e in trials) == [t.number for t in study.trials]
    end = {t.number: t.datetime_complete for t in study.trials}
    trained = [r.record for r in trials if r.record.state == records.TRAINED]
    for e in trials:  # the best of those trained to the top rung (not stopped at a lower one)
        by_then = [r.val_acc for r in trained if end[r.number] <= end[e.record.number]]
        assert e.best_acc == max(by_then, default=None)
    done = [records.read(t) for t in study.trials if records.started(t)]
    assert sorted((e.number, e.epoch) for e in epochs) == sorted(
        (r.number, i) for r in done for i in range(1, r.epochs + 1)
    )


def test_trials_reported_together_carry_the_study_as_it_was_when_each_finished():
    # Local workers' trials are read from the study every few seconds: several may have
    # finished since the last read. Each used to carry the count and best of the read's moment.
    from datetime import datetime, timedelta

    t0 = datetime(2026, 1, 1)

    def trial(number, start, end=None, acc=None):
        state = optuna.trial.TrialState
        t = optuna.trial.create_trial(
            state=state.RUNNING if end is None else state.COMPLETE,
            values=None if end is None else [acc, 1000.0],
            user_attrs={"started_training": True, "name": f"densenet-bc-{number}"},
        )
        t.number, t.datetime_start = number, t0 + timedelta(seconds=start)
        t.datetime_complete = None if end is None else t0 + timedelta(seconds=end)
        return t

    trials = [trial(0, 0, 30, 0.5), trial(1, 1, 50, 0.7), trial(2, 31, 40, 0.6), trial(3, 51)]
    events = dnas.worker.trial_events(trials, [2, 1, 0], SearchConfig(trials=4))
    assert [(e.record.number, e.trained, e.best_acc) for e in events] == [
        (0, 2, 0.5),  # when trial 0 finished, trials 0 and 1 had started
        (2, 3, 0.6),
        (1, 3, 0.7),  # trial 3 started after trial 1 finished
    ]


def test_a_study_is_reopened_only_for_the_problem_it_was_created_for(tmp_path):
    # Another budget once failed every trial ("CategoricalDistribution does not support dynamic
    # value space") or trained over-budget candidates into the study; another cost mixed params
    # and FLOPs in one objective.
    open_study(tiny(tmp_path, study="mix"))
    same = [{"budgets": ("3M-flops", "20000-params")}, {"epochs": 5, "lr": 0.05}]
    for kw in same:  # the same limits spelt otherwise; training settings may change
        open_study(tiny(tmp_path, study="mix", **kw))
    others = [
        ({"budgets": ("5k-params",)}, "--budget 20k-params --budget 3M-flops"),
        ({"budgets": ("20k-params", "4M-flops")}, "--budget 20k-params --budget 3M-flops"),
        ({"dataset": "mnist"}, "--dataset fashion-mnist"),
        ({"space": "wrn", "budgets": TINY["budgets"]}, "--space all"),
        ({"cost": "flops"}, "--cost params"),
    ]
    for kw, option in others:
        with pytest.raises(DnasError, match=f"study 'mix' was created with {option}; use that"):
            open_study(tiny(tmp_path, study="mix", **kw))
    assert [t.number for t in open_study(tiny(tmp_path, study="mix")).trials] == []
    folder = tiny(tmp_path, study="imf", dataset=f"imagefolder:{tmp_path}/d")
    open_study(folder)
    open_study(msgspec.structs.replace(folder, dataset=f"imagefolder:{tmp_path}/x/../d/"))
    with pytest.raises(DnasError, match=f"created with --dataset imagefolder:{tmp_path}/d;"):
        open_study(msgspec.structs.replace(folder, dataset=f"imagefolder:{tmp_path}/e"))


def test_an_impossible_budget_on_an_image_folder_is_found_before_any_trial(tmp_path):
    # Its size is known only once read; trials used to fail ("The `choices` must contain one or
    # more elements") with the study and report folders written.
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "imf" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "imf" / cls / f"{i}.png")
    folder = f"imagefolder:{tmp_path / 'imf'}"
    cases = [
        ("10-params", r"10-params: the smallest costs 1\.\d+k params"),
        ("10G-memory", r"10G-memory: .* of training memory at batch 1000000"),
    ]
    for budget, message in cases:
        config = tiny(tmp_path, dataset=folder, budgets=(budget,), batch_size=10**6, val_size=2,
                      train_subset=None, trials=1)  # fmt: skip
        with pytest.raises(DnasError, match=rf"on {re.escape(folder)} meets {message}"):
            search(config)
    config = tiny(tmp_path, dataset=folder, val_size=2, train_subset=None, retrain_top=1)
    with pytest.raises(DnasError, match="--retrain-top tests the retrained models: .* no test"):
        search(config)  # found before the search, not after it
    assert not (tmp_path / "studies").exists() and not (tmp_path / "reports").exists()


def test_a_worker_that_fails_by_itself_fails_the_search(tmp_path, monkeypatch, capfd):
    # Forked rather than spawned workers, so that they see this test's run_worker: worker 0
    # finds nothing to do, worker 1 meets an error of its own (as a full disk under the storage).
    import multiprocessing as mp

    real = mp.get_context
    monkeypatch.setattr(mp, "get_context", lambda method=None: real("fork"))

    config = tiny(tmp_path, trials=4, workers=2, space="wrn")

    def run_worker(worker_config, *args, worker=0, **kwargs):
        if worker == 0:
            return None
        raise DnasError("the disk holding the study is full")

    monkeypatch.setattr(dnas.local_workers, "run_worker", run_worker)
    with pytest.raises(SearchFailed, match=r"stopped: worker 1 \(exit 2\) failed; its error is"):
        search(config)
    assert "Error: worker 1: the disk holding the study is full" in capfd.readouterr().err


def test_each_local_worker_sees_one_of_the_gpus_its_parent_was_given(tmp_path, monkeypatch):
    # Two GPUs (CUDA patched), named by UUID as a shared server's scheduler may give them;
    # forked workers, so that they see this test's run_worker, which notes what each was given.
    import multiprocessing as mp

    import torch

    real = mp.get_context
    monkeypatch.setattr(mp, "get_context", lambda method=None: real("fork"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-a1,GPU-b2")

    def run_worker(config, *args, worker=0, **kwargs):
        text = f"{os.environ['CUDA_VISIBLE_DEVICES']} seed {config.seed}"
        (tmp_path / str(worker)).write_text(text)

    monkeypatch.setattr(dnas.local_workers, "run_worker", run_worker)
    config = SearchConfig(
        workers=3, device="cuda", trials=1, studies_dir=str(tmp_path / "s"), seed=2**32 - 1
    )
    run = dnas.local_workers.run_local_workers
    assert run(config, optuna.create_study(), lambda e: None) is None
    seen = {p.name: p.read_text() for p in tmp_path.iterdir() if p.is_file()}
    seed = "seed 4294967295"  # a trial trains with the study's seed, whichever worker runs it
    assert seen == {"0": f"GPU-a1 {seed}", "1": f"GPU-b2 {seed}", "2": f"GPU-a1 {seed}"}
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-a1,GPU-b2"  # the parent's own is kept


def test_each_local_worker_samples_its_own_stream_from_the_study_seed():
    # Worker i's sampler has seed + 1000 i, wrapped to 32 bits (the training seeds do not move:
    # they once did, so a trial's result depended on which worker took it).
    config = SearchConfig(sampler="random", seed=2**32 - 1)

    def first(sampler):
        return optuna.create_study(sampler=sampler).ask().suggest_float("x", 0, 1)

    draws = [first(dnas.worker.make_sampler(config, worker)) for worker in range(3)]
    expected = [first(optuna.samplers.RandomSampler(seed=s)) for s in (2**32 - 1, 999, 1999)]
    assert draws == expected and len(set(draws)) == 3


# Runs the CLI with the second candidate's training blocked (after writing a marker file), so that
# the test kills the process at a known moment: one trial complete, one training.
BLOCK_SECOND = """
import sys, time
from pathlib import Path
import dnas.train
real, seen, marker = dnas.train.train, [], Path(sys.argv.pop(1))
def train(spec, data, config, run_dir, **kw):
    seen.append(run_dir) if run_dir not in seen else None
    if len(seen) > 1:
        marker.write_text(str(run_dir))
        time.sleep(3600)
    return real(spec, data, config, run_dir=run_dir, **kw)
dnas.train.train = train
from dnas_cli.main import app
app(prog_name="dnas")
"""


@pytest.mark.slow
def test_killed_worker_loses_no_completed_trial(tmp_path):
    study_name, db = "kill", tmp_path / "kill.db"
    args = [
        *cli_args(tmp_path, study_name, 2)[:-4],
        "--space",
        "densenet",
        "--study",
        study_name,
        "--storage",
        f"sqlite:///{db}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    wrapper, marker = tmp_path / "block_second.py", tmp_path / "second-started"
    wrapper.write_text(BLOCK_SECOND)
    proc = subprocess.Popen(
        [sys.executable, str(wrapper), str(marker), *args],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    storage = f"sqlite:///{db}"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), proc.stderr.read()[-2000:] if proc.poll() is not None else "timed out"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {
        t.number
        for t in optuna.load_study(study_name=study_name, storage=storage).trials
        if t.state == optuna.trial.TrialState.COMPLETE and records.started(t)
    }
    assert before
    # At once, within the heartbeat's 30 s grace: the killed trial's worker was a process of this
    # machine, and it is gone (this rerun once counted the dead trial as trained and stopped).
    rerun = subprocess.run(
        [sys.executable, "-m", "dnas_cli.main", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    study = optuna.load_study(study_name=study_name, storage=storage)
    after = {
        t.number
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and records.started(t)
    }
    assert before <= after and len(after) >= 2
    assert trained_count(study) >= 2
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert any(
        t.state == optuna.trial.TrialState.FAIL for t in study.trials
    )  # the killed one, failed and queued again as the heartbeat would


POP_ALL = """
import sys, warnings
import optuna
from dnas.study import open_storage
warnings.simplefilter("ignore")
study = optuna.load_study(study_name="s", storage=open_storage(sys.argv[1]))
while (t := study.ask()).number < int(sys.argv[2]):  # the queue, then one fresh trial
    print(t.number)
"""


def test_two_workers_asking_at_once_never_take_the_same_waiting_trial(tmp_path):
    """SQLite ignores SELECT ... FOR UPDATE: without immediate transactions, two processes took
    18 of 200 queued trials both (and one then failed: "Cannot tell a COMPLETE trial")."""
    url, n = f"sqlite:///{tmp_path}/s.db", 150
    study = optuna.create_study(study_name="s", storage=url)
    for i in range(n):
        study.enqueue_trial({"x": i})
    (tmp_path / "pop.py").write_text(POP_ALL)
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "pop.py"), url, str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    taken = [p.communicate(timeout=240)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert not set(taken[0]) & set(taken[1]) and len(taken[0]) + len(taken[1]) == n


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # trials asked, not optimized
def test_only_trials_of_dead_workers_of_this_machine_are_failed(tmp_path):
    study = optuna.create_study(
        storage=records.open_storage(f"sqlite:///{tmp_path}/s.db"), study_name="s"
    )
    gone = subprocess.Popen(["true"])
    gone.wait()
    machine = records.worker_id().rpartition(":")[0]
    workers = [f"{machine}:{gone.pid}", f"{machine}:{os.getpid()}", f"elsewhere:{gone.pid}"]
    for worker in workers:
        study.ask().set_user_attr("worker", worker)
    study.ask()  # a trial that has not started training names no worker
    assert records.fail_dead_trials(study) == 1
    states = [t.state for t in study.trials]
    S = optuna.trial.TrialState
    assert states == [S.FAIL, S.RUNNING, S.RUNNING, S.RUNNING, S.WAITING]  # trial 0 queued again
    retry = study.ask()  # a live worker takes it; it still bears its dead original's worker
    assert retry.number == 4 and retry.user_attrs["worker"] == workers[0]
    assert records.fail_dead_trials(study) == 0  # another worker starting meanwhile spares it
    assert study.trials[4].state == S.RUNNING
    assert records.fail_dead_trials(optuna.create_study()) == 0  # storage without heartbeats


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")
def test_a_trial_lost_with_its_worker_is_neither_a_failure_nor_trained_twice(tmp_path):
    # After kill -9 and a rerun, the summary said "trained 3 ... 1 failed" of one trial: the dead
    # trial counted as failed and trained, and its queued retry (which Optuna gives the dead
    # one's attributes) as trained again.
    config = tiny(tmp_path, study="k")
    study = open_study(config)
    gone = subprocess.Popen(["true"])
    gone.wait()
    trial = study.ask()
    records.record_started(trial, "cpu", tmp_path / "run")
    trial.set_user_attr("worker", f"{records.worker_id().rpartition(':')[0]}:{gone.pid}")
    assert records.fail_dead_trials(study) == 1
    lost, retry = records.read_all(study)
    assert (lost.state, lost.started) == (records.LOST, True)
    assert lost.note == "lost with its worker (killed, out of memory, or its machine gone)"
    assert (retry.state, retry.started) == (records.WAITING, False)
    summary = summarize(study, config, 1.0)
    assert (summary.trained, summary.failed, summary.first_failure) == (0, 0, None)
    assert summary.lost == 1


@pytest.mark.slow
@pytest.mark.timeout(600)  # the retraining reads all 60,000 training images
def test_accuracy_objective_reports_epochs_and_retrains_on_test(tmp_path):
    cfg = tiny(
        tmp_path,
        trials=2,
        space="densenet",
        objective="accuracy",
        epochs=2,
        retrain_top=1,
        final_epochs=1,
    )
    lines: list[str] = []
    summary = search(cfg, log=lines.append)
    study = open_study(cfg)
    assert len(study.directions) == 1
    trained = [t for t in study.trials if records.started(t)]
    assert all(
        sorted(t.intermediate_values) == [1, 2] for t in trained if t.state.name == "COMPLETE"
    )
    (final,) = summary.final
    assert final["epochs"] == 1 and 0.0 <= final["test_acc"] <= 1.0
    assert study.user_attrs["final"] == summary.final  # kept apart from the validation numbers
    assert final["search_val_acc"] == max(t.values[0] for t in trained if t.values)
    # the retraining said what it trains, on how many images, and each epoch (it was silent)
    name = final["name"]
    said = "\n".join(lines)
    assert f"final training 1/1: {name} for 1 epoch on all 59,800 training images" in said
    assert f"  {name}: epoch 1/1 val acc {final['final_val_acc']:.4f} (" in said


def test_each_set_of_final_training_settings_has_its_own_run_folder(tmp_path):
    # A rerun with another --final-epochs once found the first one's checkpoint in final/NAME and
    # failed after the whole search ("the checkpoint was trained with epochs=1 (now 2)").
    folder = tiny(tmp_path, final_epochs=1).final_run_dir("wrn-10-1")
    assert folder == tiny(tmp_path, final_epochs=1).final_run_dir("wrn-10-1")  # resumes
    assert folder.name == "wrn-10-1-e1-s0-b64-v200" and folder.parent.name == "final"
    others = [{"final_epochs": 2}, {"seed": 1}, {"lr": 0.05}, {"batch_size": 32}, {"val_size": 9}]
    folders = {tiny(tmp_path, **{"final_epochs": 1, **kw}).final_run_dir("wrn-10-1")
               for kw in others}  # fmt: skip
    assert len(folders) == len(others) and folder not in folders


def test_diverging_trials_fail_with_a_reason_and_the_search_says_so(tmp_path):
    cfg = tiny(tmp_path, trials=2, space="densenet", lr=1e30)  # float32 overflows: NaN
    with pytest.raises(SearchFailed, match="no trained trial in study .*: RuntimeError: diverged"):
        search(cfg)
    study = open_study(cfg)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 2  # failed trials count towards --trials: the search ends
    assert all("diverged" in records.read(t).note for t in failed)
    assert (tmp_path / "reports" / cfg.study_name / "index.html").is_file()


def test_summary_front_honours_the_cost_metric(tmp_path):
    """A --cost flops study's front is accuracy against FLOPs: a trial that is cheap in FLOPs
    but not in parameters is on it (and off the parameters front)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    trials = [  # name, params, flops, accuracy
        ("a", 1_000, 9_000_000, 0.60),
        ("b", 5_000, 1_000_000, 0.70),
        ("c", 2_000, 5_000_000, 0.80),
    ]
    for name, params, flops, acc in trials:
        attrs = {"name": name, "family": "densenet", "params": params, "flops": flops,
                 "started_training": True, "metrics": [{"epoch": 1, "val_acc": acc}]}  # fmt: skip
        study.add_trial(optuna.trial.create_trial(values=[acc, float(flops)], user_attrs=attrs))
    from dnas.summary import summarize

    by_flops = summarize(study, tiny(tmp_path, cost="flops"), 1.0)
    by_params = summarize(study, tiny(tmp_path, cost="params"), 1.0)
    assert by_flops.cost == "flops" and [m.name for m in by_flops.front] == ["b", "c"]
    assert [m.name for m in by_params.front] == ["a", "c"]


def test_a_retry_does_not_compete_with_its_own_lost_original_at_a_rung(tmp_path):
    # A trial cut by the time limit (or interrupted) keeps the rungs it reached; its retry, the
    # same candidate, used to meet that ghost at the rung and lose the tie-break to it.
    from types import SimpleNamespace

    from dnas.trial import TrialRunner

    config = tiny(tmp_path)
    study = optuna.create_study(directions=["maximize", "minimize"])
    same = {"name": "densenet-c-7", "family": "densenet", "params": 4000, "flops": 900_000,
            "settings": config.training_key, "started_training": True}  # fmt: skip
    lost = {**same, "rungs": {"1": 0.9}, "interrupted": "cut by the time limit; queued again"}
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=lost))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=same))
    assert records.read(study.trials[0]).state == records.LOST
    retry = SimpleNamespace(number=1, study=study)
    decision = TrialRunner._decide(SimpleNamespace(config=config), retry, 1, 0.5, 4000.0)
    assert decision.promote and decision.competitors == 1  # alone at the rung: the ghost is out


def test_a_trial_queued_again_knows_the_lost_trials_whose_run_it_may_go_on_with():
    # Queued by dnas (interrupted, cut by the time limit) or by Optuna's heartbeat (its worker
    # died: the lost trial's attributes copied, its number in the retry history): the lost
    # trial's run first, then the one that trial was queued for (it may have died before taking
    # its folder over), never a later trial's.
    S = optuna.trial.TrialState

    def waiting(number, user_attrs=None, system_attrs=None):
        t = optuna.trial.create_trial(state=S.WAITING, user_attrs=user_attrs or {},
                                      system_attrs=system_attrs or {})  # fmt: skip
        t.number = number
        return t

    assert records.lost_runs(waiting(5)) == []
    assert records.lost_runs(waiting(5, {"continues": 3})) == [3]
    # worker of trial 7 (itself queued for trial 3) died: the heartbeat's retry copies 7's marks
    heartbeat = {"failed_trial": 7, "retry_history": [7]}
    assert records.lost_runs(waiting(9, {"continues": 3}, heartbeat)) == [7, 3]
    twice = {"failed_trial": 2, "retry_history": [2, 7]}
    assert records.lost_runs(waiting(9, {}, twice)) == [7]
    assert records.lost_runs(waiting(9, {"continues": 7}, twice)) == [7]
    for bad in ({"continues": 9}, {"continues": "3"}, {"continues": True}, {"continues": -1}):
        assert records.lost_runs(waiting(9, bad)) == []
    assert records.lost_runs(waiting(9, {}, {"retry_history": [12]})) == []
    # their folders are kept from pruning, and so are the waiting trials' own
    done = optuna.trial.create_trial(state=S.COMPLETE, value=0.5)
    done.number = 1
    assert records.awaited_runs([done, waiting(9, {"continues": 3}, heartbeat)]) == {9, 7, 3}


def test_a_retry_of_a_retry_says_nothing_of_the_run_its_original_went_on_with():
    # Optuna's heartbeat copies the lost trial's attributes into its retry: one that went on
    # with trial 0's run must not make the retry, which trains from the start, say so too.
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    study.enqueue_trial({}, user_attrs={"continued": 0, "resumed_at_epoch": 2})
    trial = study.ask()
    assert records.read(study.trials[1]).continued == 0
    records.record_started(trial, "cpu", Path("trial-00001"))
    rec = records.read(study.trials[1])
    assert (rec.continued, rec.resumed_at_epoch, rec.problems) == (None, None, [])


def test_a_worker_killed_by_a_signal_is_not_said_to_have_printed_an_error():
    # kill -9 of one worker (the out-of-memory killer's signal) ended the search with
    # "worker 0 (exit -9) failed; its error is printed above", and nothing was printed.
    said = dnas.local_workers._workers_failed
    assert said([0, 3]) is None and said([None, 0]) is None
    again = "rerun the same command to resume"
    assert said([-9, 0]) == (
        f"worker 0 was killed by SIGKILL (kill -9, or the out-of-memory killer); {again}"
    )
    assert said([0, 143]) == f"worker 1 was stopped by SIGTERM sent to it alone; {again}"
    assert said([2, -15]) == (
        f"worker 0 (exit 2) failed; its error is printed above; worker 1 was killed by SIGTERM;"
        f" {again}"
    )
    assert said([-40]) == f"worker 0 was killed by signal 40; {again}"  # was a ValueError


@pytest.mark.parametrize("trained", [0, 4])
def test_a_worker_killed_after_the_others_trained_the_trials_fails_nothing(
    tmp_path, monkeypatch, trained
):
    # Forked workers, so that they see this test's run_worker: worker 0 is killed outright,
    # worker 1 ends done. Once the study has its trials, the kill is said, not a failure.
    import multiprocessing as mp

    real = mp.get_context
    monkeypatch.setattr(mp, "get_context", lambda method=None: real("fork"))

    def run_worker(config, *args, worker=0, **kwargs):
        if worker == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(dnas.local_workers, "run_worker", run_worker)
    monkeypatch.setattr(dnas.local_workers, "trained_count", lambda *a: trained)
    config = SearchConfig(workers=2, trials=4, studies_dir=str(tmp_path / "s"))
    said: list[str] = []
    stop = dnas.local_workers.run_local_workers(
        config, optuna.create_study(), lambda e: None, log=said.append
    )
    killed = "worker 0 was killed by SIGKILL (kill -9, or the out-of-memory killer)"
    if trained:
        assert stop is None and said == [f"{killed}; the others trained the trials"]
    else:
        assert stop == f"{killed}; rerun the same command to resume" and said == []


def test_a_candidate_queued_before_is_never_queued_again_as_untried():
    # A second reader's finding: a candidate queued once (by the initial design, say) that then
    # failed was returned by queue_untried each time while Optuna skipped the same values, so a
    # sampler stuck on known candidates kept the search going for ever.
    from types import SimpleNamespace

    import torch

    from dnas.budget import parse_budgets
    from dnas.datasets import DATASETS
    from dnas.trial import TrialRunner

    config = make_config({"budgets": ("60k-params",), "space": "wrn", "trials": 50,
                          "dataset": "fashion-mnist"})  # fmt: skip
    data = SimpleNamespace(info=DATASETS["fashion-mnist"], device=torch.device("cpu"))
    runner = TrialRunner(config, data, parse_budgets(config.budgets), "cpu", lambda s, n: 0)
    study = optuna.create_study(directions=["maximize", "minimize"])
    candidates = runner.space.candidates()
    assert len(candidates) == 8  # 4 WRN-10-1 blocks, with and without dropout
    first = runner.queue_untried(study)  # one not queued yet, queued now
    (waiting,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert first in candidates and waiting.system_attrs["fixed_params"] == (
        runner.space.params_for(first)
    )
    second = runner.queue_untried(study)
    assert second is not None and second != first
    for spec in candidates:  # every other one queued, and all of them failed
        if spec not in (first, second):
            study.enqueue_trial(runner.space.params_for(spec))
    while study.get_trials(states=(optuna.trial.TrialState.WAITING,)):
        study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    before = len(study.trials)
    assert runner.queue_untried(study) is None and len(study.trials) == before
