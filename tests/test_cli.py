from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from dnas_cli.main import app
from typer.testing import CliRunner

from dnas import __version__

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_version_and_help():
    assert run("--version").output.strip() == f"dnas {__version__}"
    result = run("space", "--help")
    assert result.exit_code == 0 and "B(3,1,3)" in result.output
    bare = run()  # no command: the help, not an error line
    assert "Usage: dnas" in bare.output and "profile" in bare.output and "Error" not in bare.output


def test_help_does_not_import_torch():
    code = "import sys; from dnas_cli.main import app; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
        == "False"
    )


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_an_output_that_cannot_be_written_is_one_line_not_a_traceback():
    # `dnas space wrn > /dev/full` printed a traceback ending in OSError; `>&-` (stdout closed)
    # failed at import with AttributeError: 'NoneType' object has no attribute 'isatty'.
    command = [sys.executable, "-m", "dnas_cli.main", "space", "wrn", "--limit", "3"]
    with open("/dev/full", "w") as full:
        done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 1
    assert done.stderr == "Error: cannot write the output: No space left on device\n"
    closed = " ".join(command) + " >&-"
    done = subprocess.run(closed, shell=True, stderr=subprocess.PIPE, text=True)
    assert (done.returncode, done.stderr) == (0, "")  # written nowhere, as Python's print does


def test_space_json_and_csv(tmp_path):
    path = tmp_path / "rows.csv"
    result = run(
        "space", "all", "--budget", "1M-params", "--json", "--limit", "5", "--csv", str(path)
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total"] >= 10_000 and len(data["rows"]) == 5
    assert all(r["params"] <= 1_000_000 for r in data["rows"])
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == data["matching"]


def test_space_memory_budget_and_column():
    result = run("space", "wrn", "-b", "1M-params", "-b", "64M-memory", "--batch-size", "32",
                 "--sort", "memory", "--reverse", "--json", "--limit", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["budgets"] == ["1M-params", "64M-memory"] and data["rows"]
    assert all(r["memory"] <= 64 * 2**20 and r["params"] <= 10**6 for r in data["rows"])
    memories = [r["memory"] for r in data["rows"]]
    assert memories == sorted(memories, reverse=True)
    table = run("space", "densenet-bc", "--batch-size", "16", "--limit", "2")
    assert table.exit_code == 0 and "train memory, batch 16 (cpu)" in table.output
    assert "MiB" in table.output


def test_space_proxy_column(tmp_path):
    path = tmp_path / "rows.csv"
    result = run("space", "wrn", "--proxy", "synflow", "--json", "--limit=2", "--csv", f"{path}")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert len(rows) == 2 and all(r["synflow"] > 0 for r in rows)
    written = list(csv.DictReader(path.open()))
    assert float(written[0]["synflow"]) == pytest.approx(rows[0]["synflow"])
    assert written[-1]["synflow"] == ""  # scored: the rows shown, not every matching one


def test_space_table():
    result = run("space", "wrn", "-b", "3M-params", "--sort", "flops", "--reverse", "--limit", "3")
    assert result.exit_code == 0
    assert "candidates in wrn on cifar10" in result.output and "wrn-" in result.output


def test_profile_real_tiny_model_json():
    result = run(
        "profile",
        "wrn-10-1",
        "--dataset",
        "fashion-mnist",
        "--batch-size",
        "4",
        "--repeats",
        "1",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["params"] == data["params_closed_form"]
    assert data["flops_fvcore"] == data["flops_closed_form"]
    assert data["input_shape"] == [1, 28, 28]
    assert (
        data["speed"][0]["train_images_per_s"] > 0
        and data["speed"][0]["peak_train_memory_bytes"] > 0
    )
    assert "aten::add" in data["uncounted_ops"]
    speed = data["speed"][0]  # the prediction from the spec alone, beside the measured peak
    assert speed["predicted_train_memory_bytes"] > 0
    assert abs(speed["predicted_memory_error"]) < 0.10


@pytest.mark.parametrize(
    "args, message",
    [
        (["wrn-100000000-10"], "wrn-100000000-10 has 161,"),  # hours of building, then no memory
        (["wrn-16-2", "--batch-size", "99999999999"], "at batch 99,999,999,999 needs"),
        (["wrn-16-2", "--repeats", "99999999999"], "--repeats 99999999999: give 1 to 200 timed"),
    ],
)
def test_profile_refuses_what_cannot_fit_in_one_line_before_building(args, message, monkeypatch):
    monkeypatch.setattr("dnas.profile.build", lambda *a: pytest.fail("built it"))
    result = run("profile", *args)
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and line.startswith("Error: ") and message in line


def test_profile_densenet_table_has_memory_efficient_row():
    result = run("profile", "densenet-bc-10-k4", "--batch-size", "4", "--repeats", "1")
    assert result.exit_code == 0, result.output
    assert (
        "memory-efficient" in result.output
        and "denseblock3" in result.output
        and "(equal)" in result.output
    )


def test_profile_table_shows_the_fastest_run_then_the_median_and_slowest(monkeypatch):
    def runs(fns, *_):  # 30, 10 and 20 ms for every measurement; a steady reference
        return *([0.030, 0.010, 0.020] for _ in fns), [0.001] * 3

    monkeypatch.setattr("dnas.profile.time_runs", runs)
    result = run("profile", "densenet-bc-10-k4", "--dataset", "fashion-mnist", "--batch-size", "2",
                 "--no-memory-efficient")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "the fastest (median, slowest) of 3 forward" in result.output
    assert result.output.count("10.0 (20.0, 30.0)") == 2  # forward and training step
    assert "200.0" in result.output  # images per second at the fastest: 2 / 10 ms


def test_profile_says_how_far_the_machine_itself_moved(monkeypatch):
    args = ("profile", "densenet-bc-10-k4", "--dataset", "fashion-mnist", "--batch-size", "2")
    monkeypatch.setattr("dnas.profile.machine_drift", lambda s: 0.0 if len(s) == 5 else None)
    steady = " ".join(run(*args, "--repeats", "5").output.split())
    assert "speed moved 0.0% while timing" in steady and "uncertainty" not in steady
    monkeypatch.setattr("dnas.profile.machine_drift", lambda s: 0.123)
    moved = " ".join(run(*args, "--repeats", "5").output.split())
    assert "speed moved 12.3% while timing" in moved and "about that much uncertainty" in moved
    result = run(*args, "--repeats", "5", "--json")
    assert json.loads(result.stdout)["machine_drift"] == 0.123


def test_profile_paper_model_shows_published_numbers():
    result = run(
        "profile", "densenet-40", "--batch-size", "2", "--repeats", "1", "--no-memory-efficient"
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "published (Huang et al. 2017, Table 2): params 1.0M" in text and "C10+ 5.24%" in text
    assert "exact 1,019,722 (computed: the built model, counted" in text and "ours equal" in text


def test_profile_json_labels_each_reference_figure_with_its_source():
    result = run("profile", "densenet-bc-100", "--batch-size", "2", "--repeats", "1",
                 "--no-memory-efficient", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    paper = json.loads(result.stdout)["paper"]
    assert paper["params_printed"] == "0.8M" and paper["source"] == "Huang et al. 2017, Table 2"
    assert paper["params_exact"] == 769_162 and paper["params_exact_source"].startswith("computed")


BAD_INPUTS = [
    (("profile", "densenet-41"), "densenet-40"),
    (("space", "--sort", "memory"), "--sort memory needs a memory column"),
    (("space", "-b", "1M-memory"), "of training memory at batch 128"),
    (("space", "-b", "0.1-memory"), "at least 1"),
    (("space", "--proxy", "zen"), "'zen' is not one of"),
    (("space", "--proxy", "synflow", "--limit", "0"), "--proxy scores at most 500 rows"),
    (("space", "--batch-size", "0"), "batch-size"),
    (("profile", "resnet50"), "not a DenseNet or WRN name"),
    (("profile", "wrn-28-10-b77"), "unknown WRN block type"),
    (("profile", "densenet121", "--dataset", "fashion-mnist"), "too small"),
    (("profile", "wrn-16-4", "--dataset", "nope"), "nope"),
    (("profile", "wrn-16-4", "--batch-size", "0"), "batch-size"),
    (("space", "all", "--budget", "1M"), "e.g. 1M-params"),
    (("space", "all", "--budget", "lots-params"), "e.g. 1M-params"),
    (("space", "wrn", "--budget", "1k-params"), "the smallest costs"),
    (("space", "resnet"), "resnet"),
    (("space", "all", "--limit", "-1"), "limit"),
    (("space", "all", "--sort", "speed"), "speed"),
    # Typer's own checks (option types and ranges, choices, arguments, command names)
    (("train", "wrn-10-1", "--epochs", "0"), "'--epochs'"),
    (("search", "-b", "1M-params", "--sampler", "foo"), "'foo' is not one of"),
    (("profile",), "Missing argument 'name'"),
    (("space", "--limit", "many"), "'--limit'"),
    # ... with the value they refused: Typer's wording ("Input should be greater than or equal
    # to 1") did not say it
    (("train", "wrn-10-1", "--epochs", "-7"), "-7"),
    (("space", "--limit", "many"), "'many'"),
    (("profile", "wrn-16-4", "--batch-size=-3"), "-3"),
    (("profile", "wrn-16-4", "--repeats", "1", "--repeats", "x2"), "'x2'"),
    (("nosuch",), "No such command 'nosuch'"),
    (("--nope",), "No such option: --nope"),
]


@pytest.mark.parametrize("args, fragment", BAD_INPUTS)
def test_bad_input_is_one_clear_line(args, fragment):
    result = run(*args)
    assert result.exit_code == 2
    assert fragment in result.output
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1, (
        result.output
    )


def test_cuda_requested_without_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    result = run("profile", "wrn-10-1", "--device", "cuda")
    assert result.exit_code == 2 and "--device cpu" in result.output


def test_help_shows_every_default_that_an_option_describes():
    # Typer's help is Rich markup: an unescaped "[default: ...]" is taken for a style and vanishes.
    import typer

    command = typer.main.get_command(app)
    checked = 0
    for name, sub in command.commands.items():
        result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "1000"})
        shown = " ".join(result.output.replace("│", " ").split())
        for param in sub.params:
            text = (getattr(param, "help", None) or "").replace("\\[", "[")
            if "[default:" in text:
                default = text[text.index("[default:") :].split("]")[0] + "]"
                assert " ".join(default.split()) in shown, (name, param.name)
                checked += 1
    assert checked >= 20
