"""Fault injection: every bad input and every fault ends in one clear line, with a non-zero exit,
nothing written outside studies/ and reports/, and nothing completed lost."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
import weakref
from pathlib import Path

import optuna
import pytest
from dnas_cli.main import app
from typer.testing import CliRunner

from dnas import errors
from dnas import study as records
from dnas.config import SearchConfig, Space, make_config
from dnas.errors import (
    STALE_WRITE_S,
    DnasError,
    Terminated,
    check_stop,
    interruption,
    partial_writes,
    write_atomic,
)
from dnas.report.page import check_report
from dnas.search import SearchFailed, prepare, search
from dnas.summary import MAX_DUPLICATES, prune_checkpoints
from dnas.trial import TrialRunner
from dnas.worker import run_worker

SMALL = ["-b", "20k-params", "-b", "3M-flops", "--dataset", "fashion-mnist", "--epochs", "1",
         "--train-subset", "300", "--val-size", "200", "--batch-size", "64"]  # fmt: skip


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_cli(tmp_path: Path, monkeypatch, *args: str):  # noqa: ANN201
    """``dnas ARGS`` run in an empty working directory."""
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--val-size", "0"], "--val-size 0: expected int >= 1"),
        (["--val-size", "70000"], "--val-size 70000: fashion-mnist has 60,000 training images"),
        (["--train-subset", "0"], "--train-subset 0: expected int >= 1"),
        (["--train-subset", "60000"], "--train-subset must be in [1, 59800]"),
        (["--epochs", "0"], "--epochs 0: expected int >= 1"),
        (["--seed", "-1"], "--seed -1: expected int >= 0"),
        (["--trials", "-3"], "--trials -3: expected int >= 1"),
        (["--initial-design", "3000"], "--initial-design 3000: expected int <= 1000"),
        (["--timeout", "0s"], "bad duration '0s'"),
        (["--lr", "inf"], "--lr inf: expected float <= 3.4028234663852886e+38"),
        (["--lr", "nan"], "--lr nan: expected float > 0.0"),
        (["--study", "../../x"], "bad study name '../../x': use letters, digits"),
        (["--study", ".."], "bad study name '..'"),
        (["--study", "/abs/path"], "bad study name '/abs/path'"),
        (["--study", ""], "bad study name ''"),
        (["--study", "a" * 101], "at most 100 characters"),
        (["--study", "coll.db"], "not ending in '.db' or '.db-journal', '-wal', '-shm'"),
        (["--study", "coll.db-wal"], "not ending in '.db' or '.db-journal', '-wal', '-shm'"),
        (["-b", "1k-memory"], "no candidate on fashion-mnist meets 20k-params and 3M-flops and"),
        (["-b", "1k-params"], "two params budgets, '20k-params' and '1k-params'"),
        (["--dataset", "imagefolder:/nonexistent"], "imagefolder"),
    ],
)
def test_bad_search_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, args, message):
    result = run_cli(tmp_path, monkeypatch, "search", *SMALL, "--trials", "1", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert files_under(tmp_path) == set()  # not even an empty studies/ folder


@pytest.mark.parametrize(
    "toml, message",
    [
        ("budget = []", "give at least one budget"),
        ('trials = "ten"', "trials = 'ten': expected int"),
        ("epochs = 2.5", "epochs = 2.5: expected int"),
        ('dataset = ["a"]', "dataset = ['a']: expected str"),
        ("workers = 0", "workers = 0: expected int >= 1"),
        ('space = "resnet"', "space = 'resnet': expected one of all, densenet, densenet-bc, wrn"),
        ("seed = true", "seed = true: expected int"),
        ("budget = 5", "budget = 5: expected '1M-params' or a list"),
        ('budget = ["1M-params", 2]', "budget[1] = 2: expected str"),
        ('budget = ["1M-params", "2M-params"]', "two params budgets, '1M-params' and '2M-params'"),
        ('timeout = "soon"', "timeout = 'soon': bad duration"),
        ("colour = 1", "unknown key 'colour'; a study file may set"),
        ('studies_dir = "/tmp/elsewhere"', "unknown key 'studies_dir'"),
        ('reports_dir = "."', "unknown key 'reports_dir'"),
        ('storage = "sqlite:////tmp/elsewhere.db"', "unknown key 'storage'"),
        ('data_dir = "/tmp/elsewhere"', "unknown key 'data_dir'"),
        ("epochs = 99999", "epochs = 99999: expected int <= 10000"),
        ("lr = 1e300", "lr = 1e+300: expected float <= 3.4028234663852886e+38"),
        ('study = "../up"', "bad study name '../up'"),
        ("trials = [", "not valid TOML"),
        ("# " + "x" * 70_000, "longer than 64 KiB; give a study file (a short TOML"),
        (b"trials = 1 \xff".decode("latin-1"), "not valid TOML"),
    ],
)
def test_bad_study_file_names_the_key_value_and_expectation(tmp_path, monkeypatch, toml, message):
    (tmp_path / "s.toml").write_bytes((toml + "\n").encode("latin-1"))  # "\xff": not UTF-8
    # Bare, and with every key a file may set given on the command line too: a bad value that
    # an option overrides is still refused (`trials = "ten"` with --trials 2 ran).
    overridden = [*SMALL, "--trials", "1", "--study", "ok", "--space", "wrn", "--seed", "1",
                  "--workers", "1", "--timeout", "1h", "--lr", "0.1"]  # fmt: skip
    for options in ([], [] if toml == "budget = []" else overridden):
        result = run_cli(tmp_path, monkeypatch, "search", "--config", "s.toml", *options)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert result.output.startswith("Error: --config s.toml: ")
        assert files_under(tmp_path) == {"s.toml"}


def test_failures_before_training_count_and_stop_the_search(tmp_path, monkeypatch):
    """A proposal that raises before training is a failed trial; three in a row with one reason
    stop the search (once this looped forever) with that reason and a non-zero exit."""

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise ValueError("cost model exploded")

    monkeypatch.setattr("dnas.trial.count", broken)
    result = run_cli(tmp_path, monkeypatch, "search", *SMALL, "--trials", "2", "--study", "s")
    assert result.exit_code == 1, result.output
    assert "stopped: the last 3 trials failed with ValueError: cost model exploded" in (
        result.output
    )
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/studies/s.db")
    states = [records.read(t).state for t in study.trials]
    assert states == [records.FAILED] * 3 + [records.WAITING] * 3  # the initial design's rest


def test_failure_reasons_differing_only_in_numbers_are_the_same(tmp_path, monkeypatch):
    calls = iter(range(100))

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError(f"loss {next(calls) * 1.5} at step {next(calls)}")

    monkeypatch.setattr("dnas.trial.count", broken)
    cfg = make_config({"budgets": ("20k-params",), "dataset": "fashion-mnist", "trials": 5,
                       "train_subset": 300, "val_size": 200, "epochs": 1,
                       "studies_dir": str(tmp_path / "studies"),
                       "reports_dir": str(tmp_path / "reports")})  # fmt: skip
    with pytest.raises(SearchFailed, match="the last 3 trials failed with RuntimeError: loss"):
        search(cfg)


def test_workers_are_capped_at_the_machine(monkeypatch):
    monkeypatch.setattr("dnas.search.worker_capacity", lambda device: 2)
    said: list[str] = []
    cfg = prepare(make_config({"budgets": ("1M-params",), "workers": 64, "device": "cpu"}),
                  said.append)  # fmt: skip
    assert cfg.workers == 2
    assert said == ["--workers 64: this machine has 2 CPU cores; using 2 workers"]


def test_workers_cap_follows_visible_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    said: list[str] = []
    cfg = prepare(make_config({"budgets": ("1M-params",), "workers": 8}), said.append)
    assert cfg.device.value == "cuda" and cfg.workers == 3
    assert "3 visible GPUs" in said[0]


def test_trial_folders_of_two_storages_never_collide(tmp_path):
    a = make_config({"study": "s", "studies_dir": str(tmp_path)})
    b = make_config({"study": "s", "studies_dir": str(tmp_path), "storage": "sqlite:///other.db"})
    c = make_config({"study": "s", "studies_dir": str(tmp_path),
                     "storage": "postgresql://u@h/db"})  # fmt: skip
    roots = {a.trial_root, b.trial_root, c.trial_root}
    assert len(roots) == 3 and all(r.parent == tmp_path for r in roots)
    assert a.trial_root == tmp_path / "s"  # the default storage keeps the plain name


def test_pruning_deletes_only_inside_the_study_trial_folders(tmp_path):
    root = tmp_path / "studies" / "s"
    keep, drop = root / "trial-00001", root / "trial-00002"
    outside = tmp_path / "precious"
    for d in (keep, drop, outside):
        d.mkdir(parents=True)
        (d / "checkpoint.pt").write_bytes(b"x")
    (root / "trial-00003").symlink_to(outside, target_is_directory=True)  # a planted link
    (root / "notes").mkdir()
    (root / "notes" / "checkpoint.pt").write_bytes(b"x")
    (drop / ".checkpoint.pt.4242.tmp").write_bytes(b"x")  # a save killed mid-write
    assert prune_checkpoints(root, keep={1}) == 2
    assert list(drop.iterdir()) == []
    assert (keep / "checkpoint.pt").exists() and not (drop / "checkpoint.pt").exists()
    assert (outside / "checkpoint.pt").exists() and (root / "notes" / "checkpoint.pt").exists()
    assert prune_checkpoints(tmp_path / "missing", keep=set()) == 0


def test_the_next_atomic_write_removes_what_a_killed_write_left(tmp_path):
    page = tmp_path / "index.html"
    stale, live = tmp_path / ".index.html.4242.tmp", tmp_path / ".index.html.4343.tmp"
    other = tmp_path / ".config.json.4242.tmp"  # another file's: not this write's business
    for f in (stale, live, other):
        f.write_bytes(b"<ht")
    old = time.time() - STALE_WRITE_S - 1
    for f in (stale, other):
        os.utime(f, (old, old))
    assert partial_writes(page) == [stale, live] and partial_writes(page, STALE_WRITE_S) == [stale]
    write_atomic(page, b"<html>", "report")
    assert page.read_bytes() == b"<html>"
    with pytest.raises(DnasError, match="not a plain file"):  # renamed over, /dev/null was gone
        write_atomic(Path(os.devnull), b"<html>", "report")
    assert Path(os.devnull).is_char_device()
    assert not stale.exists() and live.exists() and other.exists()  # live: maybe being written


def test_a_rerun_with_other_training_settings_trains_its_own_trials(tmp_path, monkeypatch):
    """--trials counts the trials of this search's settings: a rerun with --epochs 2 once found
    the 1-epoch trial, trained nothing, and failed with a wrong reason."""
    args = ("search", *SMALL, "--trials", "1", "--study", "s", "--initial-design", "0")
    assert run_cli(tmp_path, monkeypatch, *args).exit_code == 0
    read = records.read

    def better_elsewhere(trial):  # noqa: ANN001, ANN202 - the 1-epoch trial at 99%
        rec = read(trial)
        if rec.epochs == 1:
            rec.val_acc = 0.99
        return rec

    monkeypatch.setattr(records, "read", better_elsewhere)
    result = run_cli(tmp_path, monkeypatch, *args, "--epochs", "2", "--json")
    monkeypatch.setattr(records, "read", read)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["trained"] == summary["complete"] == 1
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/studies/s.db")
    assert sorted(records.read(t).epochs for t in study.trials if records.started(t)) == [1, 2]
    # the progress line's best is this search's too (it once took the 1-epoch trial's)
    (ours,) = [records.read(t) for t in study.trials if records.read(t).epochs == 2]
    (progress,) = [line for line in result.stderr.splitlines() if "| best" in line]
    assert progress.endswith(f"| best {ours.val_acc:.4f}")


def test_a_time_limit_spent_before_the_first_trial_is_one_line_and_writes_nothing(
    tmp_path, monkeypatch
):
    # It wrote the study and its report, then said "no trained trial in study none: none ran".
    result = run_cli(tmp_path, monkeypatch, "search", *SMALL, "--timeout", "0.0001s",
                     "--study", "none")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: --timeout 0.0001s ran out before the first trial, while the data loaded and the"
        " space was checked; give a longer --timeout"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_trial_cut_by_the_time_limit_is_queued_again_until_cut_with_no_progress(
    tmp_path, monkeypatch
):
    check = TrialRunner._check_time

    def late(self, *args):  # noqa: ANN001, ANN202 - the limit passes while the trial trains
        self.deadline = time.monotonic() - 1
        return check(self, *args)

    monkeypatch.setattr(TrialRunner, "_check_time", late)
    args = ("search", *SMALL, "--timeout", "1h", "--initial-design", "0", "--study", "t")
    result = run_cli(tmp_path, monkeypatch, *args)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: no trained trial in study t: no trial finished training within the time limit"
        " (a trial it cut is queued again: rerun, or give a longer --timeout)"
    )
    # It used to be recorded pruned, so a rerun counted it towards --trials and never trained
    # it (and the summary called it trained).
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/studies/t.db")
    cut, retry = study.trials
    record = records.read(cut)
    assert record.state == records.LOST and record.note.startswith("cut by the time limit at")
    assert not records.counts_towards_trials(cut)
    assert retry.state == optuna.trial.TrialState.WAITING
    assert retry.system_attrs["fixed_params"] == cut.params
    # Cut again on a rerun before it finished an epoch: too long for the limit. Pruned, not
    # queued a third time (which would spend every rerun's time on it).
    again = run_cli(tmp_path, monkeypatch, *args)
    assert again.exit_code == 1
    last = again.output.strip().splitlines()[-1]  # not "queued again": it is not
    assert last.endswith(" (give a longer --timeout: a trial cut again, with no epoch finished"
                         " in half the limit or more, is not queued again)")  # fmt: skip
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/studies/t.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "PRUNED"]
    assert records.read(study.trials[1]).note.endswith(
        " with no epoch finished in half the limit or more, as trial 0 was cut before it: not"
        " queued again"
    )


def test_a_trial_queued_again_goes_on_with_the_run_it_lost_as_if_never_stopped(
    tmp_path, monkeypatch
):
    # The retry of a trial cut by the time limit (or interrupted, or lost with its worker)
    # trained from the start: the lost trial's checkpoint was deleted with the others off the
    # front, and the retry trained with a seed of its own.
    args = [*SMALL, "--epochs", "3", "--trials", "1", "--space", "densenet",
            "--initial-design", "0", "--json"]  # fmt: skip
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    whole = run_cli(tmp_path / "a", monkeypatch, "search", *args, "--study", "whole")
    assert whole.exit_code == 0, whole.output
    check = TrialRunner._check_time

    def cut_in_epoch_3(self, epoch, *args):  # noqa: ANN001, ANN202
        if epoch == 3:
            self.deadline = time.monotonic() - 1
        return check(self, epoch, *args)

    monkeypatch.setattr(TrialRunner, "_check_time", cut_in_epoch_3)
    cut = run_cli(tmp_path / "b", monkeypatch, "search", *args, "--timeout", "1h", "--study", "c")
    assert cut.exit_code == 1, cut.output
    assert (tmp_path / "b/studies/c/trial-00000/checkpoint.pt").is_file()  # kept for the retry
    monkeypatch.setattr(TrialRunner, "_check_time", check)
    again = run_cli(tmp_path / "b", monkeypatch, "search", *args, "--study", "c")
    assert again.exit_code == 0, again.output
    assert "trial 1 " in again.stderr and "epoch 1/3" not in again.stderr  # epochs 3 on only
    assert "after 3 epochs in " in again.stderr  # the run's, of which the retry trained one
    assert "(trial 0's run, gone on after epoch 2) | best" in again.stderr
    studies = {
        name: optuna.load_study(study_name=name, storage=f"sqlite:///{root}/studies/{name}.db")
        for name, root in (("whole", tmp_path / "a"), ("c", tmp_path / "b"))
    }
    (one,) = [records.read(t) for t in studies["whole"].trials]
    lost, went_on = (records.read(t) for t in studies["c"].trials)
    assert lost.state == records.LOST and went_on.state == records.TRAINED
    assert (went_on.continued, went_on.resumed_at_epoch) == (0, 2)
    assert went_on.name == one.name
    # the same run: the same seed, and after the resume the same weights (bit-identical on a
    # CPU), so the same accuracy every epoch as the run never stopped
    assert [m["val_acc"] for m in went_on.metrics] == [m["val_acc"] for m in one.metrics]
    assert went_on.val_acc == one.val_acc
    assert sorted(files_under(tmp_path / "b/studies/c")) == [
        "trial-00001", *(f"trial-00001/{f}" for f in ("checkpoint.pt", "config.json",
                                                      "metrics.jsonl", "result.json"))
    ]  # fmt: skip


def test_a_retry_cut_again_after_finishing_an_epoch_is_queued_again(tmp_path, monkeypatch):
    # Each cut keeps the run's epochs now: a retry that got further is not "too long for the
    # limit" (it used to be pruned at its second cut, half-trained for good).
    args = [*SMALL, "--epochs", "3", "--trials", "1", "--space", "densenet",
            "--initial-design", "0", "--timeout", "1h", "--study", "c"]  # fmt: skip
    check = TrialRunner._check_time

    def cut_in(epoch_to_cut):  # noqa: ANN001, ANN202
        def late(self, epoch, *args):  # noqa: ANN001, ANN202
            if epoch == epoch_to_cut:
                self.deadline = time.monotonic() - 1
            return check(self, epoch, *args)

        return late

    for epoch in (2, 3):  # a cut in epoch 2, then its retry's in epoch 3 (epoch 2 finished)
        monkeypatch.setattr(TrialRunner, "_check_time", cut_in(epoch))
        assert run_cli(tmp_path, monkeypatch, "search", *args).exit_code == 1
    monkeypatch.setattr(TrialRunner, "_check_time", check)
    result = run_cli(tmp_path, monkeypatch, "search", *args)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path}/studies/c.db")
    first, second, third = (records.read(t) for t in study.trials)
    assert [r.state for r in (first, second, third)] == [records.LOST] * 2 + [records.TRAINED]
    assert re.fullmatch(r"cut by the time limit at epoch 3, step \d+; queued again", second.note)
    assert (second.continued, third.continued, third.resumed_at_epoch) == (0, 1, 2)
    assert "epoch 3/3" in result.stderr and "epoch 2/3" not in result.stderr


def test_a_retry_cut_again_is_pruned_only_if_it_had_half_the_limit_and_finished_no_epoch():
    # One that started with seconds left (behind the trials queued before it, or on a worker
    # whose deadline came later) was pruned too, half-trained for good.
    from types import SimpleNamespace

    def too_long(epochs_trained, time_left):  # noqa: ANN001, ANN202
        runner = SimpleNamespace(config=SimpleNamespace(timeout_s=600.0),
                                 epochs_trained=epochs_trained, time_left=time_left)  # fmt: skip
        return TrialRunner._too_long(runner)

    assert too_long(0, 600.0) and too_long(0, 300.0)
    assert not too_long(0, 299.0)  # started late: says nothing of the candidate
    assert not too_long(1, 600.0)  # it got further: queued again


def _search_lost_then_rerun(tmp_path, monkeypatch, args, patch):  # noqa: ANN001, ANN202
    """Search ``args`` once whole (study 'whole'), once with ``patch`` applied (study 'lost',
    which it interrupts) and again without it: the three studies' trials, read."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    whole = run_cli(tmp_path / "a", monkeypatch, "search", *args, "--study", "whole")
    assert whole.exit_code == 0, whole.output
    with monkeypatch.context() as m:
        patch(m)
        lost = run_cli(tmp_path / "b", monkeypatch, "search", *args, "--study", "lost")
    assert lost.exit_code != 0, lost.output
    again = run_cli(tmp_path / "b", monkeypatch, "search", *args, "--study", "lost")
    assert again.exit_code == 0, again.output
    read = {
        name: [records.read(t) for t in optuna.load_study(
            study_name=name, storage=f"sqlite:///{root}/studies/{name}.db").trials]
        for name, root in (("whole", tmp_path / "a"), ("lost", tmp_path / "b"))
    }  # fmt: skip
    return read["whole"], read["lost"], again.stderr


def test_a_retry_takes_the_rung_decision_its_lost_run_missed_and_trains_on_from_there(
    tmp_path, monkeypatch
):
    # Rungs of 1 and 2 epochs; the run is lost at its rung-1 decision (after the checkpoint).
    # The retry counted the rung as passed without a decision; it now takes it, untrained.
    args = [*SMALL, "--epochs", "2", "--min-epochs", "1", "--trials", "1", "--space",
            "densenet", "--initial-design", "0", "--timeout", "1h"]  # fmt: skip

    def lost_at_the_decision(m):  # noqa: ANN001, ANN202
        def decide(*args):  # noqa: ANN002, ANN202
            raise Terminated()

        m.setattr(TrialRunner, "_decide", decide)

    (one,), (lost, retry), stderr = _search_lost_then_rerun(
        tmp_path, monkeypatch, args, lost_at_the_decision
    )
    assert lost.state == records.LOST and retry.state == records.TRAINED
    assert (retry.continued, retry.resumed_at_epoch) == (0, 1)
    assert "epoch 1/2" not in stderr and "epoch 2/2" in stderr
    assert [p.split(",")[0] for p in retry.promoted] == ["at epoch 1"]  # decided, not assumed
    assert [m["val_acc"] for m in retry.metrics] == [m["val_acc"] for m in one.metrics]


def test_a_hyperband_retry_reports_the_epochs_of_the_run_it_goes_on_with(tmp_path, monkeypatch):
    # Single objective: Hyperband judges a trial on the accuracy it reported at each epoch. The
    # retry reported only the epochs it trained, so Optuna judged the lost ones by later ones.
    args = [*SMALL, "--epochs", "3", "--trials", "1", "--space", "densenet", "--objective",
            "accuracy", "--timeout", "1h"]  # fmt: skip
    check = TrialRunner._check_time

    def cut_in_epoch_3(m):  # noqa: ANN001, ANN202
        def late(self, epoch, *args):  # noqa: ANN001, ANN202
            if epoch == 3:
                self.deadline = time.monotonic() - 1
            return check(self, epoch, *args)

        m.setattr(TrialRunner, "_check_time", late)

    (one,), (lost, retry), _ = _search_lost_then_rerun(tmp_path, monkeypatch, args, cut_in_epoch_3)
    assert (retry.state, retry.continued, retry.resumed_at_epoch) == (records.TRAINED, 0, 2)
    study = optuna.load_study(study_name="lost", storage=f"sqlite:///{tmp_path}/b/studies/lost.db")
    reported = study.trials[1].intermediate_values
    assert reported == {m["epoch"]: m["val_acc"] for m in one.metrics}  # epochs 1 and 2 too


def test_study_names_are_checked_where_studies_are_opened(tmp_path):
    with pytest.raises(DnasError, match="bad study name"):
        records.load_study("../x", f"sqlite:///{tmp_path}/x.db")
    with pytest.raises(DnasError, match="bad study name"):
        records.default_storage("studies", "a/b")


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    """SIGINT while a trial trains: one line saying what is kept and how to resume, exit 130,
    no traceback; the interrupted trial's checkpoint is kept for its retry, no other."""
    args = [
        sys.executable,
        "-m",
        "dnas_cli.main",
        "search",
        *SMALL,
        "--train-subset",
        "3000",
        "--epochs",
        "3",
        "--min-epochs",
        "3",
        "--trials",
        "20",
        "--space",
        "densenet",
        "--study",
        "c",
    ]  # fmt: skip (full-fidelity trials: still training at the signal)
    # One thread: on a loaded 2-core machine two OpenMP threads per process can run 20x slower.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    # A shell without job control starts background commands (`make test &`) with SIGINT
    # ignored, and a child inherits that: Ctrl-C's default comes back for this one.
    def default_ctrl_c() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, preexec_fn=default_ctrl_c, **pipes)
    deadline = time.time() + 120
    root = tmp_path / "studies" / "c"
    while time.time() < deadline and not list(root.glob("trial-*/checkpoint.pt")):
        time.sleep(0.5)
    seen = {int(p.parent.name[6:]) for p in root.glob("trial-*/checkpoint.pt")}
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # say where it hangs: every thread's stack, then stop it
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(f"still running 120 s after SIGINT:\n{stderr[-6000:]}")
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: interrupted:") and "rerun the same command" in last
    study = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path}/studies/c.db")
    kept = {r.number for r in records.read_all(study) if r.state == records.TRAINED}
    left = {int(p.parent.name[6:]) for p in root.glob("trial-*/checkpoint.pt")}
    (cut,) = [t for t in study.trials if records.read(t).note.startswith("interrupted")]
    assert cut.params in queued(study)  # a rerun trains it, going on from its checkpoint
    assert left <= kept | {cut.number}
    if cut.number in seen:  # it had finished an epoch: kept (it was deleted with the others)
        assert cut.number in left
    assert files_under(tmp_path) <= {"studies"} | {
        str(p.relative_to(tmp_path)) for p in (tmp_path / "studies").rglob("*")
    }


def test_space_csv_to_an_unwritable_path_is_one_line(tmp_path, monkeypatch):
    result = run_cli(tmp_path, monkeypatch, "space", "wrn", "-b", "1M-params", "--csv",
                     str(tmp_path / "missing" / "x.csv"))  # fmt: skip
    assert result.exit_code == 2 and "cannot write it" in result.output
    assert "Traceback" not in result.output


def test_space_csv_never_replaces_a_file_dnas_did_not_write(tmp_path, monkeypatch):
    (tmp_path / "README.md").write_text("mine")
    args = ("space", "wrn", "-b", "100k-params")
    result = run_cli(tmp_path, monkeypatch, *args, "--csv", "README.md")
    assert result.exit_code == 2 and "dnas did not write it" in result.output
    assert (tmp_path / "README.md").read_text() == "mine"
    for _ in range(2):  # its own file it rewrites
        assert run_cli(tmp_path, monkeypatch, *args, "--csv", "rows.csv").exit_code == 0
    (tmp_path / "empty.csv").write_text("")  # nothing to lose, say a killed run's
    for target in ("empty.csv", os.devnull):  # a device is written in place, not renamed over
        assert run_cli(tmp_path, monkeypatch, *args, "--csv", target).exit_code == 0
    assert Path(os.devnull).is_char_device()
    # A full disk leaves the earlier CSV whole (it once left one cut off mid-row).
    before = (tmp_path / "rows.csv").read_bytes()

    def full(self, data):
        self.write_bytes_real(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes_real", Path.write_bytes, raising=False)
    monkeypatch.setattr(Path, "write_bytes", full)
    result = run_cli(tmp_path, monkeypatch, "space", "all", "--csv", "rows.csv")
    assert result.exit_code == 2
    assert result.output == "Error: --csv rows.csv: cannot write it (No space left on device)\n"
    assert (tmp_path / "rows.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "empty.csv", "rows.csv"]


def test_the_python_api_is_held_to_the_limits_too():
    cases = [
        ({"lr": float("nan")}, "lr = nan: expected float > 0.0"),
        ({"lr": 1e300}, "lr = 1e+300: expected float <= 3.4028234663852886e+38"),
        ({"epochs": 10_001}, "epochs = 10001: expected int <= 10000"),
        ({"trials": 10**7}, "trials = 10000000: expected int <= 1000000"),
        ({"workers": 0}, "workers = 0: expected int >= 1"),
        ({"seed": -1}, "seed = -1: expected int >= 0"),
        ({"epochs": "3"}, "epochs = '3': expected int"),
        ({"budgets": ("1M-params", 1)}, "budget[1] = 1: expected str"),  # not the whole list
        (
            {"space": "all-of-them"},
            "space = 'all-of-them': expected one of all, densenet, densenet-bc, wrn",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(DnasError, match=re.escape(message)):
            SearchConfig(**kwargs)
    # The Python API may spell a choice or a list as a user would; the config holds their types.
    config = SearchConfig(space="wrn", budgets=["1M-params"], timeout_s=60, studies_dir=Path("s"))
    assert config.space is Space.wrn and config.budgets == ("1M-params",)
    assert config.studies_dir == "s"
    assert config.timeout_s == 60.0 and isinstance(config.timeout_s, float)


@pytest.mark.parametrize(
    "args",
    [
        ("space", "wrn", "--csv", ""),
        ("train", "wrn-10-1", "--out", " "),
        ("train", "wrn-10-1", "--data-dir", ""),
        ("report", "s", "--out", ""),
        ("reuse", "run", "--out", ""),
        ("search", "--studies-dir", ""),
        ("search", "--reports-dir", ""),
        ("search", "--data-dir", ""),
        ("reuse", ""),
    ],
)
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(tmp_path, monkeypatch, args):
    result = run_cli(tmp_path, monkeypatch, *args)
    assert result.exit_code == 2 and "an empty path; give a file or folder name" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args, message",
    [
        (("search", *SMALL, "--storage", ""), "--storage '': expected str of length >= 1"),
        (("search", "-b", "5k-params", "--dataset", "imagefolder:"), "imagefolder: needs a fo"),
        (("train", "wrn-10-1", "--dataset", "imagefolder: "), "imagefolder: needs a folder"),
    ],
)
def test_other_empty_names_are_refused_too(tmp_path, monkeypatch, args, message):
    result = run_cli(tmp_path, monkeypatch, *args)
    assert result.exit_code == 2 and result.output.startswith(f"Error: {message}")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite:///file:x?mode=memory",
        "sqlite+pysqlite://",
        "sqlite:///:memory:?cache=shared",
    ],  # fmt: skip
)
@pytest.mark.parametrize("command", ["search", "report"])
def test_an_in_memory_database_is_refused_as_storage(tmp_path, monkeypatch, command, url):
    # `dnas search --storage sqlite://` failed with "no such table": each connection had an empty
    # database of its own, and the study would have been lost at exit anyway.
    args = ("search", *SMALL, "--trials", "1") if command == "search" else ("report", "zz")
    result = run_cli(tmp_path, monkeypatch, *args, "--storage", url)
    assert result.exit_code == 2 and result.output.startswith(
        f"Error: storage {url!r} is an in-memory database: the study would be lost when dnas"
    )
    assert len(result.output.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_a_file_given_as_run_folder_is_told_so(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("mine")
    args = ("train", "wrn-10-1", "--dataset", "fashion-mnist", "--train-subset", "100",
            "--val-size", "50", "--epochs", "1", "--out", "afile")  # fmt: skip
    result = run_cli(tmp_path, monkeypatch, *args)
    assert result.exit_code == 2 and result.output.endswith(
        "Error: afile is a file, not a run folder; give a new or empty folder\n"
    )
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize(
    "args, message",
    [
        (("train", "bin.json"), "spec file bin.json: not JSON ('utf-8' codec can't decode"),
        (("train", "deep.json"), "spec file deep.json: not JSON (nested too deeply)"),
        (("train", "fifo.json"), "spec file fifo.json: not a plain file (a pipe or device)"),
        (("search", "--config", "fifo.json"), "--config fifo.json: not a plain file (a pipe"),
    ],
)
def test_unreadable_input_files_are_one_line_and_never_wait(tmp_path, monkeypatch, args, message):
    (tmp_path / "bin.json").write_bytes(bytes(range(128, 256)))
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    os.mkfifo(tmp_path / "fifo.json")  # reading it would wait for a writer for ever
    result = run_cli(tmp_path, monkeypatch, *args)
    assert result.exit_code == 2 and result.output.startswith(f"Error: {message}"), result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_study_file_may_start_with_a_byte_order_mark(tmp_path, monkeypatch):
    (tmp_path / "s.toml").write_bytes(b"\xef\xbb\xbftrials = 0\n")
    result = run_cli(tmp_path, monkeypatch, "search", "--config", "s.toml")
    assert "trials = 0: expected int >= 1" in result.output  # read past the mark to the value


def test_study_folders_that_are_files_or_orphans_are_refused_before_any_write(
    tmp_path, monkeypatch
):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "notes.md").write_text("mine")
    (tmp_path / "studies" / "old" / "trial-00000").mkdir(parents=True)  # its database deleted
    before = files_under(tmp_path)
    for study, message in (
        ("notes.md", "studies/notes.md is a file, not study notes.md's folder"),
        ("old", "studies/old holds the trial folders of an earlier study old, whose database"),
        ("-x", "bad study name '-x'"),
    ):
        result = run_cli(tmp_path, monkeypatch, "search", *SMALL, "--trials=1", "--study", study)
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert files_under(tmp_path) == before


def test_a_directory_as_study_file_is_one_line(tmp_path, monkeypatch):
    result = run_cli(tmp_path, monkeypatch, "search", "--config", str(tmp_path))
    assert result.exit_code == 2 and "a directory, not a study file" in result.output


def test_a_search_asking_for_more_candidates_than_exist_ends(tmp_path, monkeypatch):
    """Under 3k parameters the densenet-bc space holds one architecture, with and without
    dropout: two candidates. Asked for 10 trials, the search trains both, answers the repeated
    proposals from the study, and stops once a run of them says the space is exhausted."""
    result = run_cli(tmp_path, monkeypatch, "search", "-b", "3k-params", "--space",
                     "densenet-bc", "--dataset", "fashion-mnist", "--epochs", "1",
                     "--train-subset", "300", "--val-size", "200", "--trials", "10", "--study",
                     "few", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{") :])
    assert data["trained"] == 2 and data["retrained_duplicates"] == 0 and data["exhausted"]
    assert data["reused"] >= MAX_DUPLICATES and {
        m["name"].split("-drop")[0] for m in data["front"]
    } == {"densenet-bc-10-k4"}


def test_a_sampler_keeping_to_one_candidate_is_given_the_ones_it_left_out(tmp_path, monkeypatch):
    """Under 1,300 parameters TPE proposed one of two candidates 30 times and the search said
    the space was exhausted, the other never tried. A sampler that always draws the same
    values stands in for it: each untried candidate is queued in turn, then the space is."""
    import dnas.summary
    import dnas.worker

    class Stuck(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, name, distribution):  # noqa: ANN001, ANN201
            if isinstance(distribution, optuna.distributions.CategoricalDistribution):
                return distribution.choices[0]
            return distribution.low

    monkeypatch.setattr(dnas.worker, "make_sampler", lambda *a, **k: Stuck())
    for module in (dnas.worker, dnas.summary):
        monkeypatch.setattr(module, "MAX_DUPLICATES", 3)
    result = run_cli(tmp_path, monkeypatch, "search", "-b", "3k-params", "--space",
                     "densenet-bc", "--dataset", "fashion-mnist", "--epochs", "1",
                     "--train-subset", "300", "--val-size", "200", "--trials", "10",
                     "--initial-design", "0", "--study", "stuck", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{") :])
    assert data["trained"] == 2 and data["exhausted"], data  # was 1: the other never tried
    study = optuna.load_study(study_name="stuck", storage=f"sqlite:///{tmp_path}/studies/stuck.db")
    trained = {r.name for r in records.read_all(study) if r.state == records.TRAINED}
    assert trained == {"densenet-bc-10-k4", "densenet-bc-10-k4-drop0.2"}


@pytest.mark.parametrize("option", ["--studies-dir", "--reports-dir"])
def test_an_unwritable_output_folder_is_refused_before_training(tmp_path, monkeypatch, option):
    (tmp_path / "afile").write_text("x")
    result = run_cli(tmp_path, monkeypatch, "search", *SMALL, "--trials", "1", option, "afile/x")
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"Error: {option} afile/x: {tmp_path / 'afile'} is a file, not a folder; give a folder"
    ]
    assert files_under(tmp_path) == {"afile"}


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux's /proc")
def test_a_folder_the_kernel_refuses_is_found_before_training(tmp_path, monkeypatch):
    result = run_cli(tmp_path, monkeypatch, "search", *SMALL, "--trials", "1",
                     "--reports-dir", "/proc/x")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: --reports-dir /proc/x: cannot write in /proc (")
    assert files_under(tmp_path) == set()  # nothing trained, nothing written


def test_a_report_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    result = run_cli(
        tmp_path, monkeypatch, "search", *SMALL, "--trials", "1", "--space", "densenet"
    )
    assert result.exit_code == 0, result.output
    (tmp_path / "afile").write_text("x")
    result = run_cli(tmp_path, monkeypatch, "report", "densenet-fashion-mnist-20k-params-3M-flops",
                     "--out", "afile/r")  # fmt: skip
    assert result.exit_code == 2, result.output
    expected = "Error: report afile: a file, not a folder; give a folder for the page\n"
    assert result.output == expected


def queued(study: optuna.Study) -> list[dict]:
    """The parameters of the trials waiting in the queue (Optuna keeps them as fixed_params)."""
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    return [t.system_attrs["fixed_params"] for t in waiting]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _two_workers_training(tmp_path: Path) -> tuple[subprocess.Popen, list[str]]:
    """A `dnas search --workers 2` in its own session, once both workers are training."""
    args = [sys.executable, "-m", "dnas_cli.main", "search", *SMALL, "--train-subset", "3000",
            "--epochs", "3", "--trials", "20", "--space", "densenet", "--workers", "2",
            "--study", "t"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, start_new_session=True, **pipes)
    root, deadline = tmp_path / "studies" / "t", time.time() + 120
    while time.time() < deadline and len(list(root.glob("trial-*/config.json"))) < 2:
        time.sleep(0.5)  # both workers are training
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    workers = [
        pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(workers) == 2  # (the other child, multiprocessing's resource tracker, ends later)
    return proc, workers


@pytest.mark.slow
def test_workers_stop_when_their_parent_is_killed_outright(tmp_path):
    """`kill -9` of the parent sends the workers nothing: they must notice and stop (they used
    to train on, orphaned, starting new trials), their trials marked interrupted."""
    proc, workers = _two_workers_training(tmp_path)
    proc.kill()
    proc.wait()
    deadline = time.time() + 20  # they check every second; a trial here takes longer than this
    while time.time() < deadline and [pid for pid in workers if _alive(int(pid))]:
        time.sleep(0.5)
    try:
        assert not [pid for pid in workers if _alive(int(pid))]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the session
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/studies/t.db")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]


@pytest.mark.slow
def test_a_worker_killed_outright_has_its_trial_queued_again_at_once(tmp_path):
    """`kill -9` of one worker: the parent fails its trial as soon as the worker's pipe ends, so
    the other worker may go on with it in this search. It stayed RUNNING for Optuna's 30 s grace,
    counted as a trial still training, until the next trial of a surviving worker."""
    proc, workers = _two_workers_training(tmp_path)
    storage = f"sqlite:///{tmp_path}/studies/t.db"
    try:
        study = optuna.load_study(study_name="t", storage=storage)
        mine = [t.number for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
                if t.user_attrs.get("worker", "").endswith(f":{workers[0]}")]  # fmt: skip
        assert len(mine) == 1
        os.kill(int(workers[0]), signal.SIGKILL)
        deadline, state = time.time() + 15, optuna.trial.TrialState.RUNNING
        while time.time() < deadline and state == optuna.trial.TrialState.RUNNING:
            time.sleep(0.5)
            state = optuna.load_study(study_name="t", storage=storage).trials[mine[0]].state
        trials = optuna.load_study(study_name="t", storage=storage).trials
        assert proc.poll() is None  # the search goes on with the other worker
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert state == optuna.trial.TrialState.FAIL
    assert records.read(trials[mine[0]]).state == records.LOST
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == mine[0]]
    assert len(retries) == 1 and not retries[0].state.is_finished()


def _drop_a_signal(signum: int) -> list:
    """Run this process's handler for ``signum`` inside a weakref callback, as when the signal
    lands while SQLAlchemy's callbacks run: Python prints what it raises and drops it."""
    dropped = []

    class Box:
        pass

    box = Box()
    handler = signal.getsignal(signum)
    ref = weakref.ref(box, lambda _: handler(signum, None))  # noqa: F841 - kept until del box
    hook, sys.unraisablehook = sys.unraisablehook, lambda u: dropped.append(u.exc_type)
    try:
        del box
    finally:
        sys.unraisablehook = hook
    return dropped


@pytest.mark.parametrize("signum, kind", [(signal.SIGTERM, Terminated),
                                          (signal.SIGINT, KeyboardInterrupt)])  # fmt: skip
def test_a_signal_python_dropped_is_raised_again_at_the_next_check(monkeypatch, signum, kind):
    monkeypatch.setattr(errors, "_received", None)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored in a background job
    try:
        errors.stop_on_sigterm()
        check_stop()  # nothing received: nothing raised
        assert _drop_a_signal(signum) == [kind]
        with pytest.raises(kind) as raised:
            check_stop()
        assert type(raised.value) is kind
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_sighup_stops_as_sigterm_and_a_dropped_signal_is_not_printed(monkeypatch, capsys):
    # A closed terminal (SIGHUP) left the search's trial RUNNING and exited 129 with no line;
    # a signal Python dropped printed "Exception ignored in ... Terminated" and a traceback.
    monkeypatch.setattr(errors, "_received", None)
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        errors.stop_on_sigterm()
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(1)  # the handler runs at once; never reached
        sys.unraisablehook(type("U", (), {"exc_value": Terminated(), "object": None})())
        assert capsys.readouterr().err == ""  # check_stop raises it again instead
        with pytest.raises(Terminated):
            check_stop()
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_a_worker_whose_parent_is_gone_stops_as_on_sigterm_not_failing_its_trial(monkeypatch):
    # `kill -9` of a search's parent: a worker's next progress message met a broken pipe, and
    # its trial was failed with "BrokenPipeError" instead of interrupted and queued again.
    import multiprocessing as mp

    from dnas.local_workers import _to_parent

    monkeypatch.setattr(errors, "_received", None)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    receive, send = mp.Pipe(duplex=False)
    receive.close()
    try:
        errors.stop_on_sigterm()
        with pytest.raises(Terminated):
            _to_parent(send, 1)
    finally:
        send.close()
        for s, handler in before.items():
            signal.signal(s, handler)


def test_a_command_that_finished_after_a_dropped_ctrl_c_exits_130(tmp_path, monkeypatch):
    import dnas.space

    monkeypatch.setattr(errors, "_received", None)
    enumerate_space = dnas.space.search_space

    def enumerate_then_drop(*args, **kwargs):  # noqa: ANN202
        found = enumerate_space(*args, **kwargs)
        assert _drop_a_signal(signal.SIGINT) == [KeyboardInterrupt]
        return found

    monkeypatch.setattr(dnas.space, "search_space", enumerate_then_drop)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored in a background job
    try:
        result = run_cli(tmp_path, monkeypatch, "space", "wrn", "-b", "100k-params")
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    assert result.exit_code == 130 and result.output.endswith("Interrupted.\n")


def test_a_search_stops_on_a_sigterm_that_python_dropped(tmp_path, monkeypatch):
    # `kill PID` landing in SQLAlchemy's weakref callback ("Exception ignored ... Terminated")
    # was lost: the search trained all its trials and exited 0.
    monkeypatch.setattr(errors, "_received", None)
    record = records.record_result

    def record_then_drop(*args, **kwargs):  # noqa: ANN202
        record(*args, **kwargs)
        assert _drop_a_signal(signal.SIGTERM) == [Terminated]

    monkeypatch.setattr(records, "record_result", record_then_drop)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = run_cli(tmp_path, monkeypatch, "search", *SMALL, "--trials", "4",
                         "--initial-design", "0", "--study", "s")  # fmt: skip
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    assert result.exit_code == 143, result.output
    assert "Error: terminated: 1 trained trials are kept" in result.output
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/studies/s.db")
    assert len([t for t in study.trials if records.started(t)]) == 1
    # stopped between trials, not inside the next one (which was left "lost", wrongly noted)
    assert [records.read(t).state for t in study.trials if t.state.is_finished()] == ["trained"]


@pytest.mark.slow
def test_sigterm_stops_the_workers_too_and_keeps_what_finished(tmp_path):
    """`kill PID` reaches the parent alone: it must stop its worker processes (they used to go
    on training, orphaned), say what is kept in one line, and exit 143."""
    proc, workers = _two_workers_training(tmp_path)
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: terminated:") and "rerun the same command" in last
    assert not [pid for pid in workers if _alive(int(pid))]
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/studies/t.db")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    cut = [t for t in study.trials if records.read(t).note.startswith("interrupted")]
    assert cut and all(t.params in queued(study) for t in cut)


def test_a_storage_failure_is_found_behind_the_errors_optuna_raised_meanwhile():
    import sqlite3

    import sqlalchemy.exc

    full = sqlite3.OperationalError("database or disk is full")
    try:
        try:
            try:
                raise sqlalchemy.exc.OperationalError("INSERT ...", {}, full)
            except sqlalchemy.exc.OperationalError as e:
                raise optuna.exceptions.StorageInternalError("An exception is raised") from e
        except optuna.exceptions.StorageInternalError:
            raise AssertionError("Should not reach.")  # what Optuna's _run_trial raised then
    except AssertionError as e:
        assert records.storage_failure(e) == "database or disk is full"
    failure = records.storage_failure
    assert failure(ValueError("x")) is None and failure(None) is None


def test_interruption_is_found_behind_the_error_it_caused():
    cut = Terminated()
    try:
        try:
            raise cut
        finally:
            raise UnboundLocalError("cleanup cut short")  # what Optuna's finally raises then
    except UnboundLocalError as e:
        assert interruption(e) is cut
    assert interruption(ValueError("x")) is None and interruption(None) is None
    ctrl_c = KeyboardInterrupt()
    assert interruption(ctrl_c) is ctrl_c


def test_an_interruption_while_optuna_records_a_trial_leaves_nothing_running(
    tmp_path, monkeypatch
):
    """SIGTERM between the end of training and Optuna's record of it: Optuna's own cleanup then
    fails (an UnboundLocalError); the worker still stops as interrupted, and the trial is failed
    and queued again, not left running."""
    import optuna.study._optimize as optimize

    def cut_short(**kwargs):
        raise Terminated()

    monkeypatch.setattr(optimize, "_tell_with_warning", cut_short)
    cfg = make_config({"budgets": ("20k-params",), "dataset": "fashion-mnist", "trials": 1,
                       "train_subset": 300, "val_size": 200, "epochs": 1, "space": "densenet",
                       "studies_dir": str(tmp_path / "studies"),
                       "reports_dir": str(tmp_path / "reports")})  # fmt: skip
    with pytest.raises(Terminated):
        run_worker(cfg)
    study = optuna.load_study(study_name=cfg.study_name, storage=cfg.storage_url)
    (done,) = [t for t in study.trials if t.state != optuna.trial.TrialState.WAITING]
    assert done.state == optuna.trial.TrialState.FAIL
    assert records.read(done).note == "interrupted while training; queued again"
    assert done.params in queued(study)


LONG = "d" * 300  # a folder or file name over the 255 bytes Linux allows


@pytest.mark.parametrize(
    "args",
    [
        ("search", *SMALL, "--trials", "1", "--study", "s", "--studies-dir", LONG),
        ("search", *SMALL, "--trials", "1", "--study", "s", "--reports-dir", LONG),
        ("train", LONG),
        ("train", "wrn-10-1", "--dataset", f"imagefolder:{LONG}"),
        ("reuse", LONG),
        ("space", "all", "--proxy", "snip", "--dataset", "fashion-mnist", "--data-dir", LONG),
    ],
)
def test_a_name_too_long_for_the_system_is_one_line(tmp_path, monkeypatch, args):
    result = run_cli(tmp_path, monkeypatch, *args)
    assert result.exit_code == 2, result.output
    assert re.fullmatch(
        r"Error: a file or folder name too long for this system \(300 characters, 'd{40}'\.\.\.\):"
        r" at most 255 bytes each; give a shorter one\n",
        result.output,
    )
    assert files_under(tmp_path) == set()


def test_a_path_too_long_for_the_system_is_one_line(tmp_path, monkeypatch):
    deep = "/".join(["e" * 250] * 20)  # every name fits in 255 bytes, the path not in 4,096
    result = run_cli(tmp_path, monkeypatch, "train", deep)
    assert result.exit_code == 2
    assert (
        result.output
        == "Error: a path too long for this system (5,019 bytes); give a shorter one\n"
    )
    multibyte = "é" * 200  # 200 characters, 400 bytes
    result = run_cli(tmp_path, monkeypatch, "train", multibyte)
    assert result.output.startswith("Error: a file or folder name too long for this system (200")


def test_a_report_dnas_could_not_write_is_found_before_the_trials(tmp_path, monkeypatch):
    # A foreign index.html in the study's report folder was found only after every trial.
    study = "pagecheck"
    page = tmp_path / "reports" / study / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html>mine</html>")
    result = run_cli(tmp_path, monkeypatch, "search", *SMALL, "--trials", "1", "--study", study)
    assert result.exit_code == 2
    assert "index.html: the file exists and dnas did not write it" in result.output
    assert files_under(tmp_path) == {"reports", f"reports/{study}", f"reports/{study}/index.html"}
    # `dnas report S --out reports/S/index.html` said ".../index.html/index.html: cannot write it"
    with pytest.raises(DnasError, match=r"^report .*/index.html: a file, not a folder; give a"):
        check_report(page)


def test_a_link_is_written_through_or_refused_never_renamed_over(tmp_path, monkeypatch):
    # As root, `--csv /dev/stdout` once renamed a regular file over /dev/stdout (a link to
    # /proc/self/fd/1) for the whole machine. A stream follows the link; an atomic write refuses.
    target = tmp_path / "real.csv"
    target.write_text("")
    (tmp_path / "out.csv").symlink_to(target)
    args = ("space", "wrn", "-b", "100k-params", "--csv", "out.csv")
    assert run_cli(tmp_path, monkeypatch, *args).exit_code == 0
    assert (tmp_path / "out.csv").is_symlink() and target.read_text().startswith("name,family,")
    with pytest.raises(DnasError, match=r"out.csv: not a plain file \(a folder, link or device\)"):
        write_atomic(tmp_path / "out.csv", b"x", "report")
    assert (tmp_path / "out.csv").is_symlink() and target.read_text().startswith("name,family,")


def test_csv_to_stdout_redirected_to_a_file_is_the_whole_output(tmp_path):
    # `dnas space --csv /dev/stdout > rows.csv` opened the file again from its start, and the
    # table printed after it overwrote the CSV's first lines; `>> log` lost what the log held.
    log = tmp_path / "log.txt"
    log.write_text("kept\n")
    for name, mode in (("rows.csv", "w"), ("log.txt", "a")):
        with open(tmp_path / name, mode) as stdout:
            subprocess.run(
                [sys.executable, "-m", "dnas_cli.main", "space", "wrn", "-b", "100k-params",
                 "--csv", "/dev/stdout"],
                stdout=stdout, stderr=subprocess.PIPE, cwd=tmp_path, check=True,
            )  # fmt: skip
    rows = (tmp_path / "rows.csv").read_text().splitlines()
    assert rows[0].startswith("name,family,") and len(rows) > 2
    assert all(line.count(",") == rows[0].count(",") for line in rows)  # only CSV lines
    assert log.read_bytes() == b"kept\n" + (tmp_path / "rows.csv").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "rows.csv"]


def test_report_never_turns_a_file_into_a_database_and_a_damaged_one_is_one_line(
    tmp_path, monkeypatch
):
    # `dnas report zz --storage sqlite:///notes.txt` made the empty notes.txt a 114 KB database;
    # garbage inside a study's database was a traceback (StorageInternalError: malformed).
    for content in (b"", b"my notes\n"):
        (tmp_path / "notes.txt").write_bytes(content)
        result = run_cli(tmp_path, monkeypatch, "report", "zz", "--storage",
                         f"sqlite:///{tmp_path}/notes.txt")  # fmt: skip
        assert result.exit_code == 2 and "not a study database" in result.output
        assert (tmp_path / "notes.txt").read_bytes() == content
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=url)
    study.optimize(lambda t: t.set_user_attr("note", "x" * 300) or t.suggest_float("x", 0, 1), 100)
    db = tmp_path / "s.db"
    clean = db.read_bytes()
    for share in (0.3, 0.4, 0.7, 0.8, 0.9):  # a page of the trials', not the schema's
        page = int(len(clean) * share) // 4096 * 4096
        db.write_bytes(clean[:page] + bytes(range(256)) * 16 + clean[page + 4096 :])
        try:
            optuna.load_study(study_name="s", storage=url).get_trials()
        except optuna.exceptions.StorageInternalError:
            break  # opens, fails while read
        except Exception:  # noqa: S112 - fails when opened: another page
            continue
    else:
        pytest.fail("no page found whose damage shows only when the trials are read")
    damaged = db.read_bytes()
    result = run_cli(tmp_path, monkeypatch, "report", "s", "--storage", url)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: {db}: the study's database is damaged (")
    assert line.endswith("restore it from a copy, or start afresh under another study name")
    # A search refused it only after Optuna had written a new study's rows into it.
    result = run_cli(tmp_path, monkeypatch, "search", *SMALL, "--study", "new", "--storage", url)
    assert result.exit_code == 2 and "the study's database is damaged" in result.output
    assert db.read_bytes() == damaged


def test_a_database_that_cannot_be_read_now_is_not_called_damaged(tmp_path):
    # The read-only quick_check took "database is locked" (a search writing) and "attempt to
    # write a readonly database" (the journal of a writer killed mid-transaction, which only a
    # writable connection rolls back) for damage, and refused the study; Optuna opens both.
    import sqlite3

    db = tmp_path / "s.db"
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute("create table t(x)")
        c.executemany("insert into t values (?)", [(i,) for i in range(1000)])
        c.commit()
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    records.check_intact(db, wait_s=0.1)  # locked: left to Optuna, which waits longer
    writer.execute("ROLLBACK")
    writer.close()
    killed = (
        "import os, sqlite3\n"
        f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
        "c.execute('PRAGMA cache_size=1')\nc.execute('BEGIN')\n"
        "c.executemany('insert into t values (?)', [(i,) for i in range(100000)])\n"
        "os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", killed], check=False)
    assert (tmp_path / "s.db-journal").exists()  # a hot journal
    records.check_intact(db)
    with contextlib.closing(sqlite3.connect(db)) as c:  # a writable connection rolls it back
        assert c.execute("select count(*) from t").fetchone() == (1000,)
    (tmp_path / "s.db-journal").unlink(missing_ok=True)
    db.write_bytes(db.read_bytes()[:4096] + b"\xff" * (db.stat().st_size - 4096))
    with pytest.raises(DnasError, match="the study's database is damaged"):
        records.check_intact(db)  # damage is still damage


def test_a_retried_trials_inherited_constraint_is_kept_without_a_warning(tmp_path):
    # After `kill -9` and a rerun, the retried trial (holding its original's system attributes)
    # set its budget constraint again, and Optuna's UserWarning leaked onto stderr.
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    trial = study.ask()
    records.record_constraint(trial, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records.record_constraint(trial, 0.5)
    assert study.trials[0].system_attrs["constraints:budget"] == 0.5
    with pytest.warns(UserWarning, match="already set"):  # Optuna's own call still warns
        trial.set_constraint("budget", 0.5)
