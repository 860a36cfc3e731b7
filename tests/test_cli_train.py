from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from dnas_cli.main import app
from typer.testing import CliRunner

from dnas.data import DEBIAN_FASHION_MNIST
from tests.test_data import offline, write_idx_dataset  # noqa: F401 - offline is a fixture

runner = CliRunner()
TINY = [
    "densenet-bc-10-k4",
    "--dataset",
    "fashion-mnist",
    "--val-size",
    "50",
    "--batch-size",
    "32",
    "--seed",
    "3",
]


@pytest.fixture
def idx(tmp_path: Path) -> Path:
    return write_idx_dataset(tmp_path / "fmnist", n_train=250, n_test=40)


def test_train_runs_for_real(tmp_path: Path, idx: Path) -> None:
    out = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "train",
            *TINY,
            "--epochs",
            "2",
            "--data-dir",
            str(idx),
            "--out",
            str(out),
            "--eval-test",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "test acc" in r.stdout and "epoch 2" in r.output
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "metrics.jsonl",
        "checkpoint.pt",
        "result.json",
    }
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    config = json.loads((out / "config.json").read_text())
    assert config["name"] == "densenet-bc-10-k4" and config["data"]["train"] == 200
    assert torch.load(out / "checkpoint.pt", weights_only=True)["spec"]["in_channels"] == 1


@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_train_on_the_real_debian_fashion_mnist(
    tmp_path: Path,
    offline: None,  # noqa: F811
) -> None:
    r = runner.invoke(
        app,
        [
            "train",
            "densenet-bc-10-k4",
            "--dataset",
            "fashion-mnist",
            "--train-subset",
            "256",
            "--val-size",
            "200",
            "--epochs",
            "1",
            "--data-dir",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["metrics"][0]["val_acc"] > 0.1 and not result["diverged"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["source"] == str(
        DEBIAN_FASHION_MNIST
    )


def test_a_diverged_run_exits_1_with_json_too(tmp_path: Path, idx: Path) -> None:
    args = ["train", *TINY, "--epochs", "1", "--data-dir", str(idx), "--lr", "1e30"]
    for extra in ([], ["--json"]):
        r = runner.invoke(app, [*args, "--out", str(tmp_path / f"run{len(extra)}"), *extra])
        assert r.exit_code == 1, r.output
    assert json.loads(r.stdout)["diverged"] is True


def test_missing_dataset_is_one_line(tmp_path: Path, offline: None) -> None:  # noqa: F811
    r = runner.invoke(
        app, ["train", "wrn-10-1", "--dataset", "cifar10", "--data-dir", str(tmp_path)]
    )
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("Error: dataset cifar10")
        and "--data-dir" in lines[0]
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["densenet-bc-11"], "did you mean"),
        (["wrn-10-1", "--dataset", "cifar11"], "unknown dataset"),
        (["wrn-10-1", "--dataset", "imagefolder:/no/such/dir"], "no such directory"),
        (["wrn-10-1", "--resume"], "--resume needs --out"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    r = runner.invoke(app, ["train", *args])
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1, (
        r.output
    )


def test_resume_from_a_corrupt_checkpoint(tmp_path: Path, idx: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"definitely not a checkpoint")
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = runner.invoke(app, ["train", *TINY, "--data-dir", str(idx), "--out", str(out), "--resume"])
    assert r.exit_code == 2 and "is not a dnas checkpoint (not a PyTorch file)" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_spec_file(tmp_path: Path, idx: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"family": "wrn", "depth": 10, "widen": 1, "block": [3, 3]}))
    r = runner.invoke(
        app,
        [
            "train",
            str(spec),
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(idx),
            "--val-size",
            "50",
            "--train-subset",
            "64",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "wrn-10-1" in r.stdout


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path: Path, idx: Path) -> None:
    args = [*TINY, "--epochs", "12", "--data-dir", str(idx)]
    assert runner.invoke(app, ["train", *args, "--out", str(tmp_path / "full")]).exit_code == 0
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from dnas_cli.main import app; app()",
            "train",
            *args,
            "--out",
            str(cut),
        ],
        cwd=Path(__file__).parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},  # same sums
    )
    deadline = time.time() + 120
    while not (cut / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len((cut / "metrics.jsonl").read_text().splitlines())
    assert done >= 1 and done < 12, "the run finished before it could be killed"
    r = runner.invoke(app, ["train", *args, "--out", str(cut), "--resume"])
    assert r.exit_code == 0, r.output
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(cut / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_batch_that_cannot_fit_is_one_line_before_anything_is_written(
    tmp_path: Path, idx: Path
) -> None:
    out = tmp_path / "run"
    args = ["train", "densenet-bc-10-k4", "--dataset", "fashion-mnist", "--batch-size"]
    args += ["99999999999", "--val-size", "50", "--data-dir", str(idx), "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    error = r.output.strip().splitlines()[-1]
    assert error.startswith("Error: a training step of densenet-bc-10-k4 at batch 99,999,999,999")
    assert "use a batch of at most about" in error and not out.exists()


def test_without_out_the_run_goes_under_studies(
    tmp_path: Path, idx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    r = runner.invoke(app, ["train", *TINY, "--epochs", "1", "--data-dir", str(idx)])
    assert r.exit_code == 0, r.output
    assert [p.name for p in work.iterdir()] == ["studies"]  # nothing beside it
    (run,) = (work / "studies" / "runs").iterdir()
    assert run.name.startswith("densenet-bc-10-k4-fashion-mnist-s3-")
    assert (run / "checkpoint.pt").is_file() and (run / "result.json").is_file()


def test_a_bad_override_is_refused_before_the_data_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without Typer's ranges, `--lr -1` on a fresh machine downloaded CIFAR-10 before refusing.
    import dnas.data

    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(dnas.data, "load_data", no_data)
    for option, message in [
        (["--lr", "-1"], "lr must be a finite number > 0, got -1.0"),
        (["--weight-decay", "nan"], "weight_decay must be a finite number >= 0, got nan"),
        (["--dropout", "1"], "dropout must be in [0, 1), got 1.0"),
        (["--batch-size", "0"], "Invalid value for '--batch-size'"),  # Typer's own range
        # trained an epoch, then a traceback: the epoch's validation loss was None
        (["--val-size", "0"], "val_size must be >= 1 (a run is judged and selected on its"),
    ]:
        r = runner.invoke(app, ["train", *TINY, *option, "--out", str(tmp_path / "run")])
        assert r.exit_code == 2 and message in r.output.strip().splitlines()[-1], r.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "option, message",
    [
        (["--lr", "inf"], "lr must be a finite number > 0, got inf"),
        # nan and negatives were Typer's "Input should be greater than or equal to 0"
        (["--lr", "nan"], "lr must be a finite number > 0, got nan"),
        (["--lr", "-1"], "lr must be a finite number > 0, got -1.0"),
        (["--weight-decay", "nan"], "weight_decay must be a finite number >= 0, got nan"),
        (["--warmup-epochs", "-0.5"], "warmup_epochs must be a finite number >= 0, got -0.5"),
        (["--weight-decay", "inf"], "weight_decay must be a finite number >= 0, got inf"),
        (["--warmup-epochs", "inf"], "warmup_epochs must be a finite number >= 0, got inf"),
        (["--warmup-epochs", "11"], "warmup_epochs must be at most the run's 10 epochs, got 11.0"),
        (["--lr", "1e308"], "lr must be at most 3.403e+38, got 1e+308"),
        (["--weight-decay", "1e39"], "weight_decay must be at most 3.403e+38, got 1e+39"),
        (["--epochs", "10001"], "epochs must be at most 10,000, got 10,001"),
    ],
)
def test_non_finite_hyperparameters_are_refused_before_anything_is_written(
    tmp_path: Path, idx: Path, option: list[str], message: str
) -> None:
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", *TINY, *option, "--data-dir", str(idx), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines()[-1] == f"Error: {message}" and not out.exists()


def test_ctrl_c_says_what_is_kept_and_how_to_resume(
    tmp_path: Path, idx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `dnas train` printed only "Interrupted." (search says how to resume; train did not)
    import dnas_cli.train

    def stop(self, epoch: int, metrics: dict) -> None:  # noqa: ANN001
        raise KeyboardInterrupt

    monkeypatch.setattr(dnas_cli.train._Progress, "epoch", stop)
    out = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "2", "--data-dir", str(idx), "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 130
    assert r.output.strip().splitlines()[-1] == (
        f"Interrupted: the completed epochs are kept in {out}; continue with the same command"
        f" and --resume --out {out}"
    )
    monkeypatch.undo()
    r = runner.invoke(app, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
