"""Storage load: many separate `dnas search` processes share one study, PostgreSQL or SQLite.

Users outgrow one machine by pointing many `dnas search` processes at one study on a database
server. This starts N separate `dnas search` processes (as N machines would: each its own
``--seed``, all the same ``--study`` and ``--storage``) with a tiny model and one short epoch
per trial, lets them run until their ``--timeout``, then reads the study back and checks that
no trial was lost or duplicated, none was left RUNNING and no worker died, and measures the
storage's throughput: trained trials and proposals (all trials) per minute.

``--storage postgres`` starts a throwaway PostgreSQL server on 127.0.0.1 (a free port, a fresh
data directory, stopped and deleted at the end; initdb/pg_ctl from /usr/lib/postgresql/*/bin).
``--storage sqlite`` uses ``sqlite:///TMP/bench.db``, the embedded default; give several worker
counts to see where it stops scaling and what the error then is.

Throughput is over the search window: from the first worker's launch to the last trial's end
(the workers' own summaries and reports afterwards are not counted; the wall time including
them is printed too). With more workers than CPU cores the CPU, not the storage, bounds the
trained trials per minute; proposals per minute (over-budget ones are only counted, never
built) load the storage hardest.

Usage:
    python benchmarks/bench_storage.py --storage postgres --workers 16 --minutes 4
    python benchmarks/bench_storage.py --storage sqlite --workers 2 4 8 16 --minutes 4
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from dnas import study as records

REPO = Path(__file__).resolve().parent.parent
STUDY = "bench-storage"
FIDELITY = (
    "-b 20k-params -b 3M-flops --dataset fashion-mnist --space densenet --epochs 1"
    " --train-subset 256 --val-size 128 --batch-size 64 --device cpu"
).split()
TRIALS = 1_000_000  # far more than fit: the timeout is what ends every worker
GRACE_MIN = 3.0  # a worker still running this long after its --timeout is killed
NO_TRAINED = "no trained trial in study"  # dnas's exit-1 message when the study trained nothing


def _pg_version(p: Path) -> tuple[int, str]:
    name = p.parent.name
    return (int(name) if name.isdigit() else -1, name)


PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_pg_version)


def _dnas() -> Path:
    """The `dnas` command of this interpreter's environment, else the repository's venv."""
    for cand in (Path(sys.executable).with_name("dnas"), REPO / ".venv" / "bin" / "dnas"):
        if cand.is_file():
            return cand
    found = shutil.which("dnas")
    if found is None:
        raise SystemExit("no `dnas` command: pip install -e . in the venv first")
    return Path(found)


# ---- a throwaway PostgreSQL server ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    host: str
    port: int
    log: Path


@contextlib.contextmanager
def postgres_server() -> Iterator[Server]:
    """A PostgreSQL server on 127.0.0.1 (trust auth, loopback only) with an empty database
    ``dnas``; always stopped, and its data directory deleted, on leaving."""
    if not PG_BIN:
        raise SystemExit(
            "PostgreSQL is not installed (Debian package postgresql; scripts/setup.sh --test)"
        )
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        raise SystemExit("no psycopg2: pip install 'dnas[postgres]'") from None
    # Outside /root-only places: the postgres user must be able to reach the data directory.
    root = Path(tempfile.mkdtemp(prefix="dnas-bench-pg-"))
    bin_dir, data, port = PG_BIN[-1], root / "data", _free_port()
    as_user: list[str] = []
    started = False

    def run(*a: str) -> None:
        subprocess.run([*as_user, *a], check=True, capture_output=True, text=True, timeout=120)

    try:
        data.mkdir()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            root.chmod(0o755)
            shutil.chown(data, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        run(str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres")
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
        started = True  # from here on, a half-started server is stopped too
        run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-t",
            "60",
            "-l",
            str(data / "log"),
            "-o",
            options,
            "start",
        )
        run(
            str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "dnas"
        )
        yield Server(
            f"postgresql+psycopg2://postgres@127.0.0.1:{port}/dnas",
            "127.0.0.1",
            port,
            data / "log",
        )
    finally:
        if started:
            stop = [str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-t", "60"]
            try:
                run(*stop, "-m", "fast", "stop")
            except (subprocess.SubprocessError, OSError):
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    run(*stop, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


class ConnectionSampler:
    """The peak number of client connections to the database, sampled every 2 s."""

    def __init__(self, server: Server) -> None:
        import psycopg2

        self.conn = psycopg2.connect(
            host=server.host, port=server.port, user="postgres", dbname="dnas"
        )
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute("SHOW max_connections")
            self.max_connections = int(cur.fetchone()[0])
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(2.0):
            try:
                with self.conn.cursor() as cur:
                    cur.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'dnas'"
                        " AND pid <> pg_backend_pid()"
                    )
                    self.peak = max(self.peak, int(cur.fetchone()[0]))
            except Exception:  # the server going away ends the sampling, nothing else
                return

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self.conn.close()


def server_errors(log: Path) -> Counter:
    """ERROR/FATAL/PANIC lines of the server's log, timestamps and pids stripped."""
    found: Counter = Counter()
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        m = re.search(r"\b(ERROR|FATAL|PANIC):\s+(.*)", line)
        if m:
            found[f"{m.group(1)}: {m.group(2)[:200]}"] += 1
    return found


# ---- the workers -------------------------------------------------------------------------------


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen
    stderr: Path
    started: float
    rc: int | None = None
    killed: bool = False  # still running at the hard deadline
    tracebacks: list[str] = field(default_factory=list)  # each traceback's exception line
    error: str | None = None  # dnas's one-line "Error: ..." message
    finished: list[int] = field(default_factory=list)  # trial numbers it reported finished
    trained: list[int] = field(default_factory=list)  # ... and those it reported trained

    @property
    def status(self) -> str:
        if self.killed:
            return "dead: killed at the hard deadline"
        if self.rc == 0:
            return "ok" + (" (but a Traceback on stderr)" if self.tracebacks else "")
        if self.rc == 1 and self.error and self.error.startswith(NO_TRAINED):
            return "trained nothing (exit 1)"
        why = self.error or (self.tracebacks[-1] if self.tracebacks else "no message")
        return f"dead: exit {self.rc}: {why}"

    @property
    def dead(self) -> bool:
        return self.status.startswith("dead")


_TRIAL_LINE = re.compile(r"^\[\d+/\S+ trained\] trial (\d+): (.*)$")


def read_stderr(w: Worker) -> None:
    """What the worker said: its finished trials, its error line, its tracebacks."""
    try:
        lines = w.stderr.read_text(errors="replace").splitlines()
    except OSError:
        return
    for i, line in enumerate(lines):
        if m := _TRIAL_LINE.match(line):
            w.finished.append(int(m.group(1)))
            if re.search(r" params\): val acc ", m.group(2)):
                w.trained.append(int(m.group(1)))
        elif line.startswith("Error: "):
            w.error = line.removeprefix("Error: ").strip()
        elif line.startswith("Traceback (most recent call last)"):
            # The exception line: the first unindented line after the frames.
            for later in lines[i + 1 :]:
                if later.strip() and not later.startswith((" ", "\t")):
                    w.tracebacks.append(later.strip()[:300])
                    break


def start_worker(index: int, url: str, minutes: float, work: Path, shared: bool) -> Worker:
    folder = work if shared else work / f"worker-{index:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(_dnas()),
        "search",
        *FIDELITY,
        "--trials",
        str(TRIALS),
        "--timeout",
        f"{max(1, round(minutes * 60))}s",
        "--study",
        STUDY,
        "--storage",
        url,
        "--seed",
        str(index),
        "--studies-dir",
        str(folder / "studies"),
        "--reports-dir",
        str(folder / "reports"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    err = work / f"worker-{index:02d}.stderr"
    with open(work / f"worker-{index:02d}.stdout", "w") as out_f, open(err, "w") as err_f:
        proc = subprocess.Popen(
            cmd,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_f,
            stderr=err_f,
            start_new_session=True,
        )
    return Worker(index, proc, err, time.monotonic())


def _kill(w: Worker) -> None:
    """Kill one worker we started (its own process group: start_new_session)."""
    if w.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(w.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            w.proc.wait(timeout=30)


def run_workers(
    n: int, url: str, minutes: float, work: Path, shared: bool, stagger: float
) -> tuple[list[Worker], float, float]:
    """Start N workers and wait for all; returns them, the launch time (epoch seconds) and the
    wall time until the last one exited."""
    workers: list[Worker] = []
    hard = (minutes + GRACE_MIN) * 60
    launched, t0 = time.time(), time.monotonic()
    try:
        for i in range(n):
            workers.append(start_worker(i, url, minutes, work, shared))
            if stagger:
                time.sleep(stagger)
        last_note = t0
        while any(w.proc.poll() is None for w in workers):
            now = time.monotonic()
            for w in workers:
                if w.proc.poll() is None and now - w.started > hard:
                    w.killed = True
                    _kill(w)
            if now - last_note >= 60:
                alive = sum(w.proc.poll() is None for w in workers)
                print(f"  {now - t0:5.0f} s: {alive}/{n} workers running", flush=True)
                last_note = now
            time.sleep(1.0)
    finally:  # Ctrl-C or a bug here: never leave a worker behind
        for w in workers:
            _kill(w)
    wall = time.monotonic() - t0
    for w in workers:
        w.rc = w.proc.returncode
        read_stderr(w)
    return workers, launched, wall


# ---- reading the study back ---------------------------------------------------------------------


@dataclass
class Result:
    storage: str
    workers: int
    minutes: float
    wall_s: float
    window_s: float  # first launch -> last trial finished
    states: Counter
    kinds: Counter  # dnas's view: trained, over budget, skipped, failed, pruned, running, ...
    proposals: int
    trained: int
    started: int
    running_left: int
    waiting_left: int
    heartbeat_failed: int  # FAIL with no reason of its own: its worker stopped heartbeating
    dup_numbers: int
    dup_ids: int
    dup_run_dirs: int
    reported_twice: int  # trial numbers that two workers both reported finishing
    lost: list[int]  # reported trained by a worker, not COMPLETE and trained in the study
    worker_list: list[Worker]
    errors: Counter  # first line of each distinct error -> how many times
    server_errors: Counter = field(default_factory=Counter)
    peak_connections: str = ""
    quarters: list[tuple[int, int]] = field(default_factory=list)  # (proposals, trained) each
    study_error: str | None = None

    @property
    def duplicates(self) -> int:
        return self.dup_numbers + self.dup_ids + self.dup_run_dirs + self.reported_twice

    @property
    def dead(self) -> int:
        return sum(w.dead for w in self.worker_list)

    @property
    def idle(self) -> int:
        return sum(not w.trained for w in self.worker_list)

    def per_min(self, n: int) -> float:
        return n / (self.window_s / 60) if self.window_s > 0 else 0.0


def _error_key(text: str) -> str:
    return re.sub(r"\d+", "#", text.strip().splitlines()[0] if text.strip() else "?")[:160]


def analyse(
    storage: str, url: str, workers: list[Worker], minutes: float, launched: float, wall: float
) -> Result:
    errors: Counter = Counter()
    examples: dict[str, str] = {}

    def note(text: str, source: str) -> None:
        key = f"{source}: {_error_key(text)}"
        errors[key] += 1
        examples.setdefault(key, f"{source}: {text.strip().splitlines()[0][:200]}")

    for w in workers:
        if w.error and not w.error.startswith(NO_TRAINED):
            note(w.error, "worker")
        for tb in w.tracebacks:
            note(tb, "traceback")
        if w.killed:
            note("killed at the hard deadline", "worker")
    reported = Counter(n for w in workers for n in w.finished)
    reported_trained = {n for w in workers for n in w.trained}
    S = optuna.trial.TrialState
    try:
        trials = optuna.load_study(study_name=STUDY, storage=url).get_trials(deepcopy=False)
        study_error = None
    except Exception as e:  # no study (every worker failed before creating it), a dead server
        trials, study_error = [], f"{type(e).__name__}: {e}".splitlines()[0][:200]
        note(study_error, "reading the study")
    recs = [records.read(t) for t in trials]
    for t, r in zip(trials, recs):
        if r.state == records.FAILED:
            note(r.note, "trial failure")
    ends = [t.datetime_complete.timestamp() for t in trials if t.datetime_complete]
    window = (max(ends) - launched) if ends else wall
    numbers = Counter(t.number for t in trials)
    ids = Counter(t._trial_id for t in trials)
    run_dirs = Counter(
        t.user_attrs["run_dir"]
        for t in trials
        if records.started(t) and isinstance(t.user_attrs.get("run_dir"), str)
    )
    trained_numbers = {r.number for r in recs if r.state == records.TRAINED}
    # Does it hold over time? Trials finished in each quarter of the window (the first includes
    # the workers' start-up: imports, data, schema).
    quarters = [[0, 0] for _ in range(4)]
    for t, r in zip(trials, recs):
        if t.datetime_complete is not None and window > 0:
            q = min(3, max(0, int(4 * (t.datetime_complete.timestamp() - launched) / window)))
            quarters[q][0] += 1
            quarters[q][1] += r.state == records.TRAINED
    result = Result(
        storage=storage,
        workers=len(workers),
        minutes=minutes,
        wall_s=wall,
        window_s=window,
        states=Counter(t.state.name for t in trials),
        kinds=Counter(r.state for r in recs),
        proposals=len(trials),
        trained=len(trained_numbers),
        started=sum(r.started for r in recs),
        running_left=sum(t.state == S.RUNNING for t in trials),
        waiting_left=sum(t.state == S.WAITING for t in trials),
        heartbeat_failed=sum(t.state == S.FAIL and "failure" not in t.user_attrs for t in trials),
        dup_numbers=sum(c - 1 for c in numbers.values()),
        dup_ids=sum(c - 1 for c in ids.values()),
        dup_run_dirs=sum(c - 1 for c in run_dirs.values()),
        reported_twice=sum(c - 1 for c in reported.values()),
        lost=sorted(reported_trained - trained_numbers),
        worker_list=workers,
        errors=Counter({examples[k]: c for k, c in errors.items()}),
        study_error=study_error,
        quarters=[(p, t) for p, t in quarters],
    )
    return result


# ---- printing ----------------------------------------------------------------------------------


def _counts(c: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])) or "none"


def print_result(r: Result) -> None:
    print(f"\n== {r.storage}, {r.workers} workers, --timeout {r.minutes:g} min ==")
    print(
        f"wall {r.wall_s:.0f} s (launch to last exit); search window {r.window_s:.0f} s"
        f" (launch to last trial finished){r.peak_connections}"
    )
    if r.study_error:
        print(f"could not read the study: {r.study_error}")
    print(f"trials by state: {_counts(r.states)}")
    print(f"dnas records: {_counts(r.kinds)}")
    print(f"started training: {r.started}; trained: {r.trained}; proposals: {r.proposals}")
    print(
        f"throughput: {r.per_min(r.trained):.1f} trained/min, "
        f"{r.per_min(r.proposals):.1f} proposals/min"
    )
    if r.quarters and r.window_s > 0:
        per = r.window_s / 4 / 60
        print(
            "per minute in each quarter of the window: proposals "
            + ", ".join(f"{p / per:.0f}" for p, _ in r.quarters)
            + "; trained "
            + ", ".join(f"{t / per:.0f}" for _, t in r.quarters)
        )
    print(
        f"left RUNNING: {r.running_left}; left WAITING (a heartbeat retry not yet run):"
        f" {r.waiting_left}; failed by the heartbeat: {r.heartbeat_failed}"
    )
    print(
        f"duplicates: {r.duplicates} (same number {r.dup_numbers}, same trial id {r.dup_ids},"
        f" same run folder {r.dup_run_dirs}, reported finished by two workers"
        f" {r.reported_twice})"
    )
    print(
        f"lost (reported trained by a worker, not trained in the study): {len(r.lost)}"
        + (f" {r.lost[:20]}" if r.lost else "")
    )
    print(f"{'worker':>6} {'exit':>5} {'trials':>6} {'trained':>7} {'traceback':>9}  status")
    for w in r.worker_list:
        rc = "kill" if w.killed else str(w.rc)
        print(
            f"{w.index:>6} {rc:>5} {len(w.finished):>6} {len(w.trained):>7}"
            f" {'yes' if w.tracebacks else 'no':>9}  {w.status}"
        )
    print(f"dead workers: {r.dead}; workers that trained nothing themselves: {r.idle}")
    if r.errors:
        print("distinct errors (first line, how many):")
        for text, n in r.errors.most_common():
            print(f"  {n:>4} x {text}")
    if r.server_errors:
        print("PostgreSQL server log (ERROR/FATAL lines, how many):")
        for text, n in r.server_errors.most_common(10):
            print(f"  {n:>4} x {text}")


def print_summary(results: list[Result]) -> None:
    head = (
        f"{'storage':<9}{'workers':>8}{'min':>5}{'trained':>8}{'proposals':>10}"
        f"{'trained/min':>12}{'prop/min':>9}{'RUNNING':>8}{'lost':>5}{'dups':>5}"
        f"{'dead':>5}{'idle':>5}{'errors':>7}"
    )
    print("\n" + "=" * len(head))
    print("summary (per minute of the search window; idle = workers that trained nothing)")
    print(head)
    for r in results:
        print(
            f"{r.storage:<9}{r.workers:>8}{r.minutes:>5g}{r.trained:>8}{r.proposals:>10}"
            f"{r.per_min(r.trained):>12.1f}{r.per_min(r.proposals):>9.1f}{r.running_left:>8}"
            f"{len(r.lost):>5}{r.duplicates:>5}{r.dead:>5}{r.idle:>5}{len(r.errors):>7}"
        )
    for r in results:
        if r.errors:
            print(f"{r.storage} x {r.workers}:")
            for text, n in r.errors.most_common():
                print(f"  {n:>4} x {text}")


# ---- main --------------------------------------------------------------------------------------


def bench(storage: str, n: int, args: argparse.Namespace) -> Result:
    work = Path(tempfile.mkdtemp(prefix=f"dnas-bench-{storage}-{n}-"))
    try:
        print(
            f"\n{storage}: {n} `dnas search` workers for {args.minutes:g} min in {work}",
            flush=True,
        )
        if storage == "sqlite":
            url = f"sqlite:///{work / 'bench.db'}"
            workers, launched, wall = run_workers(
                n, url, args.minutes, work, not args.separate_dirs, args.stagger
            )
            return analyse(storage, url, workers, args.minutes, launched, wall)
        with postgres_server() as server, ConnectionSampler(server) as sampler:
            workers, launched, wall = run_workers(
                n, server.url, args.minutes, work, not args.separate_dirs, args.stagger
            )
            result = analyse(storage, server.url, workers, args.minutes, launched, wall)
            result.server_errors = server_errors(server.log)
            result.peak_connections = (
                f"; peak connections {sampler.peak} (max_connections {sampler.max_connections})"
            )
            return result
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", choices=["postgres", "sqlite"], default="postgres")
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[16],
        help="separate `dnas search` processes; several counts run one after another",
    )
    p.add_argument("--minutes", type=float, default=4.0, help="each worker's --timeout")
    p.add_argument(
        "--stagger",
        type=float,
        default=0.0,
        help="seconds between worker launches (0: all at once)",
    )
    p.add_argument(
        "--separate-dirs",
        action="store_true",
        help="a --studies-dir per worker, as on separate machines (default: one"
        " shared folder, as separate processes on one machine)",
    )
    p.add_argument("--keep", action="store_true", help="keep the workers' folders and logs")
    args = p.parse_args()
    if any(n < 1 for n in args.workers) or args.minutes <= 0:
        p.error("--workers must be >= 1 and --minutes > 0")
    print(
        f"worker command: {_dnas()} search {' '.join(FIDELITY)} --trials {TRIALS}"
        f" --timeout {max(1, round(args.minutes * 60))}s --study {STUDY} --storage URL"
        f" --seed I (OMP_NUM_THREADS=1 MKL_NUM_THREADS=1); {os.cpu_count()} CPUs"
    )
    # A kill (SIGTERM, SIGHUP) unwinds like Ctrl-C: workers killed, server stopped, folders gone.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    results = []
    try:
        for n in args.workers:
            r = bench(args.storage, n, args)
            print_result(r)
            results.append(r)
    finally:
        if results:
            print_summary(results)


if __name__ == "__main__":
    main()
