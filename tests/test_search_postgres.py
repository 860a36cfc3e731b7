"""Three `dnas search` worker processes share one study on a real PostgreSQL server (loopback)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from dnas import study as records

PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    if not PG_BIN:
        pytest.skip(
            "PostgreSQL is not installed"
            " (Debian package postgresql; scripts/setup.sh --test installs it)"
        )
    pytest.importorskip("psycopg2")
    # Outside pytest's tmp_path: the postgres user must be able to reach the data directory.
    root = Path(tempfile.mkdtemp(prefix="dnas-pg-"))
    bin_dir, data, port = PG_BIN[-1], root / "data", _free_port()
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        root.chmod(0o755)
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    run = lambda *a: subprocess.run([*as_user, *a], check=True, capture_output=True, text=True)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres")
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-w",
        "-l",
        str(data / "log"),
        "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
        "start",
    )
    try:
        run(
            str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "dnas"
        )
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/dnas"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_three_workers_one_study(postgres, tmp_path):
    trials = 6
    args = [
        sys.executable,
        "-m",
        "dnas_cli.main",
        "search",
        "-b",
        "20k-params",
        "-b",
        "3M-flops",
        "--space",
        "densenet",
        "--dataset",
        "fashion-mnist",
        "--epochs",
        "2",  # multi-fidelity on: rungs of 1 and 2 epochs
        "--min-epochs",
        "1",
        "--train-subset",
        "200",
        "--val-size",
        "100",
        "--batch-size",
        "50",
        "--trials",
        str(trials),
        "--study",
        "pg",
        "--storage",
        postgres,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = []
    for i in range(3):
        procs.append(
            subprocess.Popen(
                [*args, "--seed", str(i)],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        time.sleep(0.5)
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="pg", storage=postgres)
    trained = [t for t in study.trials if records.started(t)]
    S = optuna.trial.TrialState
    # Nothing lost, failed or left running. A worker that finds the study full after drawing a
    # proposal leaves it pruned and untrained ("skipped"). Initial-design candidates the study
    # did not need before reaching `trials` stay queued, untouched (waiting).
    for t in study.trials:
        if t.state == S.WAITING:
            assert not t.user_attrs and t.datetime_start is None, t
            continue
        assert t.state == S.COMPLETE or (t.state == S.PRUNED and t.user_attrs.get("skipped")), t
        assert not (t.user_attrs.get("skipped") and records.started(t))
    # Each worker stops once the study has `trials` trained; racing workers may add up to two more.
    assert trials <= len(trained) <= trials + 2
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) == len({t._trial_id for t in study.trials})
    assert len({t.user_attrs["run_dir"] for t in trained}) == len(
        trained
    )  # no trial trained twice
    # Rung decisions were taken on the shared storage: a stopped candidate stopped at rung 1.
    recs = [records.read(t) for t in study.trials]
    assert all(set(r.rungs) == {1} for r in recs if r.state == records.STOPPED)
    assert all(set(r.rungs) == {1, 2} for r in recs if r.state == records.TRAINED)
    names = {r.number: r.name for r in recs}
    assert all(names[r.reused_from] == r.name for r in recs if r.state == records.REUSED)
