"""Several workers of one search on this machine: a process each (one per GPU when several are
visible, the CPU's threads split otherwise), all stopping at one deadline. The parent reports the
epochs and trials they send, reads the study for trials a dead worker left, and says why a worker
that failed or was killed stopped the search.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

import msgspec
import optuna

from dnas import study as records
from dnas.config import SearchConfig
from dnas.device import Device, visible_gpu, worker_gpu
from dnas.errors import DnasError, Terminated, check_stop, stop_on_sigterm, stop_with_parent
from dnas.trial import EpochCallback
from dnas.worker import TrialCallback, run_worker, trained_count, trial_events

POLL_S = 5.0  # the study is read this often for trials a dead worker left


def worker_capacity(device: str) -> int:
    """How many workers this machine can run: one per visible GPU, or per CPU core."""
    if device == "cuda":
        import torch

        return max(1, torch.cuda.device_count())
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def _worker_entry(config: SearchConfig, index: int, threads: int, parent: int,
                  events: Connection, deadline: float | None) -> None:  # fmt: skip
    import torch

    stop_on_sigterm()  # the parent forwards its SIGTERM here
    stop_with_parent(parent)  # and one killed outright sends nothing
    torch.set_num_threads(threads)
    try:  # the parent prints each epoch, and reads each finished trial from the study at once
        reason = run_worker(
            msgspec.structs.replace(config, workers=1),
            on_trial=lambda e: _to_parent(events, e.record.number),
            on_epoch=lambda e: _to_parent(events, e),
            worker=index,
            deadline=deadline,
        )
    except KeyboardInterrupt as e:  # Ctrl-C reaches every process; the parent says what is kept
        os._exit(143 if isinstance(e, Terminated) else 130)
    except DnasError as e:  # one line, as the parent's own (a full disk under the storage)
        print(f"Error: worker {index}: {e}", file=sys.stderr, flush=True)
        os._exit(e.exit_code)
    os._exit(3 if reason else 0)


def _to_parent(pipe: Connection, item: object) -> None:
    """Send ``item`` to the parent. A parent gone (killed outright) stops this worker as the
    SIGTERM of ``stop_with_parent`` would, a second later: its trial is interrupted and queued
    again, where the broken pipe would have failed it."""
    try:
        pipe.send(item)
    except OSError:  # BrokenPipeError, ConnectionResetError: nobody reads the other end
        os.kill(os.getpid(), signal.SIGTERM)  # raises Terminated here, in the main thread
        check_stop()  # should the handler not have run yet


def run_local_workers(
    config: SearchConfig,
    study: optuna.Study,
    on_trial: TrialCallback,
    on_epoch: EpochCallback = lambda e: None,
    deadline: float | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> str | None:
    """N local workers: one per GPU when several are visible, CPU threads split otherwise, all
    stopping at one ``deadline`` (``time.monotonic()``). This process reports each epoch the
    workers send and each trial they finish (from the study, as soon as a worker says so, and
    every few seconds for trials a dead worker left). A worker that ends otherwise than done has
    its running trial failed at once, and so queued again for the others to go on with
    (``records.fail_dead_trials``). Returns why to stop when a worker failed or was killed
    (``_workers_failed``); once the study has its ``--trials``, a worker killed or stopped on
    the way is only logged: the others trained them."""
    import multiprocessing as mp

    import torch

    ctx = mp.get_context("spawn")
    ngpu = torch.cuda.device_count() if config.device is Device.cuda else 0
    threads = max(1, worker_capacity("cpu") // config.workers)
    procs, pipes = [], {}  # a pipe of its own per worker: one killed mid-send blocks no other
    reported = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def relay(timeout: float) -> bool:
        """Report what the workers sent within ``timeout`` (an EpochEvent, or the number of a
        trial that finished); whether anything came."""
        if not pipes:
            time.sleep(timeout)
            return False
        ready = wait(list(pipes), timeout)
        for pipe in ready:
            try:
                item = pipe.recv()
            except (EOFError, OSError, pickle.UnpicklingError):  # the worker has ended
                _ended(pipes.pop(pipe), study)
                pipe.close()
                continue
            if isinstance(item, int):
                _report_new(study, config, reported, on_trial)
            else:
                on_epoch(item)
        return bool(ready)

    try:
        for i in range(config.workers):
            receive, send = ctx.Pipe(duplex=False)
            args = (config, i, threads, os.getpid(), send, deadline)
            p = ctx.Process(target=_worker_entry, args=args)
            with visible_gpu(worker_gpu(i, ngpu) if ngpu > 1 else None):
                p.start()  # the worker's environment is this process's, now
            send.close()  # the worker's end: the pipe reads as ended once the worker is gone
            procs.append(p)
            pipes[receive] = p
        while any(p.is_alive() for p in procs):
            poll = time.monotonic() + POLL_S
            while time.monotonic() < poll and any(p.is_alive() for p in procs):
                check_stop()
                relay(0.5)
            _report_new(study, config, reported, on_trial)
        while relay(0):  # what the last workers sent before they ended
            pass
        _report_new(study, config, reported, on_trial)
        check_stop()  # the workers stopped on the same Ctrl-C: not their failure
        codes = [p.exitcode for p in procs]
        target = config.trials
        if target is not None and trained_count(study, None, config.training_key) >= target:
            outside = [c if _stopped_from_outside(c) else 0 for c in codes]
            if gone := _workers_failed(outside, then="the others trained the trials"):
                log(gone)  # not a failure: the study has its trials
            codes = [0 if _stopped_from_outside(c) else c for c in codes]
        return _workers_failed(codes)
    except Terminated:  # sent to this process alone (Ctrl-C reaches the whole process group)
        for p in procs:
            p.terminate()
        raise
    finally:  # wait for the workers, never leave one behind
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
        for pipe in pipes:
            pipe.close()


def _ended(worker: BaseProcess, study: optuna.Study) -> None:
    """A worker's pipe has ended: once its process is gone (reaped, so that its process id reads
    as free), fail the trial it was training unless it finished its work. A survivor takes up the
    trial queued again in this search, where Optuna's heartbeat would wait 30 s to fail it."""
    worker.join(timeout=5)
    if worker.exitcode not in (None, 0):
        try:
            records.fail_dead_trials(study)
        except Exception:  # noqa: BLE001 - the storage failing too: the heartbeat fails it later
            pass


def _stopped_from_outside(code: int | None) -> bool:
    """Whether a worker's exit code says it was killed, or stopped by a signal sent to it."""
    return code is not None and (code < 0 or code in (130, 143))


def _workers_failed(
    exit_codes: list[int | None], then: str = "rerun the same command to resume"
) -> str | None:
    """Why the search stops for its workers' exit codes, None when none failed. 0: done; 3:
    stopped on repeated failures (the study says which); 130/143: a Ctrl-C or SIGTERM sent to
    the worker alone; negative: killed by that signal (kill -9, the out-of-memory killer); both
    print nothing, and are followed by what to do ``then``. Any other: the worker's own error,
    printed on stderr."""

    why: list[str] = []
    for i, code in enumerate(exit_codes):
        if code in (None, 0, 3):
            continue
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:  # a real-time signal has no name
                name = f"signal {-code}"
            how = " (kill -9, or the out-of-memory killer)" if name == "SIGKILL" else ""
            why.append(f"worker {i} was killed by {name}{how}; {then}")
        elif code in (130, 143):
            why.append(f"worker {i} was stopped by {'SIGTERM' if code == 143 else 'Ctrl-C'}"
                       f" sent to it alone; {then}")  # fmt: skip
        else:
            why.append(f"worker {i} (exit {code}) failed; its error is printed above")
    return "; ".join(why) or None


def _report_new(study: optuna.Study, config: SearchConfig, reported: set[int],
                on_trial: TrialCallback) -> None:  # fmt: skip
    """Call ``on_trial`` for every finished trial not reported yet, in the order they finished."""
    trials = study.get_trials(deepcopy=False)
    fresh = [t.number for t in trials if t.state.is_finished() and t.number not in reported]
    for event in trial_events(trials, fresh, config):
        reported.add(event.record.number)
        on_trial(event)
