from __future__ import annotations

import time
from dataclasses import replace

import pytest
import torch

from dnas import profile as profile_module
from dnas.datasets import dataset_info
from dnas.names import parse_name
from dnas.profile import (
    BUSY_ELSEWHERE,
    DRIFT_WARN,
    MAX_REPEATS,
    MIN_REPEATS,
    PATIENCE,
    STATISTIC,
    BusyElsewhere,
    Reference,
    Spread,
    default_batch_size,
    machine_drift,
    profile,
    time_runs,
)

CPU = torch.device("cpu")


def test_runs_take_turns_in_alternating_order_after_an_untimed_warm_up() -> None:
    log: list[str] = []
    times = time_runs([lambda: log.append("a"), lambda: log.append("b")], CPU, repeats=3)
    assert "".join(log) == "ab" + "ab" + "ba" + "ab"
    assert [len(t) for t in times] == [3, 3]
    log.clear()
    assert time_runs([lambda: log.append("a")], CPU, repeats=2)[0][0] >= 0
    assert log == ["a"] * 3
    log.clear()
    fns = [lambda: log.append("a"), lambda: log.append("b")]
    times = time_runs(fns, CPU, repeats=2, reference=lambda: log.append("r"))
    assert "".join(log) == "abr" + "abr" + "bar" and [len(t) for t in times] == [2, 2, 2]
    log.clear()
    before = [lambda: log.append("("), lambda: log.append("[")]
    times = time_runs(fns, CPU, repeats=2, reference=lambda: log.append("r"), before=before)
    assert "".join(log) == "(a[br" + "(a[br" + "[b(ar"


def test_what_runs_before_a_run_is_not_timed(monkeypatch) -> None:
    clock = Clock([0.5] * 4)
    monkeypatch.setattr(profile_module, "time", clock)

    def before() -> None:
        clock.now += 7.0

    assert time_runs([clock.step], CPU, repeats=3, before=[before]) == [[0.5] * 3]
    with pytest.raises(ValueError, match="2 functions before 1 to time"):
        time_runs([clock.step], CPU, repeats=3, before=[before, before])


def test_each_variant_trains_in_train_mode_and_runs_forward_in_eval_mode(monkeypatch) -> None:
    """Each measured function gets its own times, in its mode, as its variant's step or forward."""
    seen: list[tuple[str, bool]] = []

    def runs(fns, device, repeats, timed_s, reference, before):
        for fn, mode in zip(fns, before):
            mode()
            model = fn.__self__.model
            seen.append((fn.__name__, model.training))
        # 1, 2, 3 and 4 ms: standard step, standard forward, memory-efficient step and forward
        return *([(i + 1) / 1e3] * 3 for i in range(len(fns))), [1e-3] * 3

    monkeypatch.setattr(profile_module, "time_runs", runs)
    info = dataset_info("fashion-mnist")
    spec = parse_name("densenet-bc-10-k4", info.num_classes, info.channels)
    r = profile(spec, info, 2, "cpu")
    assert seen == [("train_step", True), ("forward", False)] * 2
    standard, efficient = r.speed
    assert not standard.memory_efficient and efficient.memory_efficient
    assert (standard.train_step_ms, standard.forward_ms) == pytest.approx((1.0, 2.0))
    assert (efficient.train_step_ms, efficient.forward_ms) == pytest.approx((3.0, 4.0))


def test_spread() -> None:
    s = Spread.of([0.013, 0.010, 0.012, 0.030, 0.011])
    assert (s.min_ms, s.q1_ms, s.median_ms, s.q3_ms, s.max_ms, s.repeats) == pytest.approx(
        (10, 11, 12, 13, 30, 5)
    )
    assert Spread.of([0.005]) == Spread(5.0, 5.0, 5.0, 5.0, 5.0, 1)


def test_runs_are_steady_when_the_median_is_pinned_within_two_percent() -> None:
    # The median's standard error from the quartiles: sqrt(pi/2) / 1.349 * IQR / sqrt(n).
    s = Spread.of([0.013, 0.010, 0.012, 0.030, 0.011])
    assert s.median_error == pytest.approx(0.929 * (13 - 11) / 5**0.5 / 12)
    assert not s.steady  # 6.9%: one slow run does not move it, but five runs are few
    # Twenty-five runs spread by 4% between the quartiles: 0.929 * 0.04 / 5 = 0.74%.
    assert Spread.of([1.0] * 6 + [1.02] * 13 + [1.04] * 6).steady
    # A lucky fastest run and a slow tail do not matter; a wide middle does.
    assert Spread.of([0.5] + [1.0] * 23 + [9.0]).steady
    assert not Spread.of([1.0, 1.2] * 12).steady
    assert Spread.of([2.0]).steady


class Clock:
    """Stands in for ``time`` in dnas.profile: each run of ``step`` lasts the next duration."""

    def __init__(self, durations: list[float]) -> None:
        self.now, self.durations = 0.0, iter(durations)

    def perf_counter(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += next(self.durations)


@pytest.mark.parametrize(
    "durations, busy_elsewhere, timed",
    [
        # warm-up, then quiet runs: timed_s (2 s) and MIN_REPEATS of them
        ([9.0] + [0.5] * 9, 0.0, [0.5] * 5),
        # a scattered start: on past timed_s until the quartiles (and so the median) agree
        ([0.1, 0.5, 1.0, 1.0] + [0.5] * 6 + [9.0], 0.0, [0.5, 1.0, 1.0] + [0.5] * 6),
        # busy throughout: on until PATIENCE * timed_s
        ([0.1, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 9.0], 0.0, [1.0, 1.5, 2.0, 2.5, 3.0]),
        # steady, but another process kept a core busy: maybe all alike slowed, so on as well
        ([0.1] + [0.5] * 20, 1.0, [0.5] * 16),
    ],
)
def test_auto_repeats_go_on_while_a_busy_machine_leaves_no_run_undisturbed(
    monkeypatch, durations: list[float], busy_elsewhere: float, timed: list[float]
) -> None:
    clock = Clock(durations)
    monkeypatch.setattr(profile_module, "time", clock)
    monkeypatch.setattr(
        profile_module, "_cpu_seconds_elsewhere", lambda: busy_elsewhere * clock.now
    )
    assert PATIENCE * 2.0 == 8.0 and MIN_REPEATS == 5
    assert time_runs([clock.step], CPU, timed_s=2.0) == [pytest.approx(timed)]  # warm-up untimed


def test_a_scattered_reference_does_not_keep_the_runs_going(monkeypatch) -> None:
    clock = Clock([0.5] * 6)
    monkeypatch.setattr(profile_module, "time", clock)
    monkeypatch.setattr(profile_module, "_cpu_seconds_elsewhere", lambda: 0.0)
    scatter = iter([0.01, 0.0] + [0.001, 0.1] * 3)  # reference durations: warm-up, then wide

    def reference() -> None:
        clock.now += next(scatter)

    steps, ref = time_runs([clock.step], CPU, timed_s=2.0, reference=reference)
    assert steps == [pytest.approx(0.5)] * 5 and len(ref) == 5  # stopped at timed_s


def test_busy_elsewhere_is_the_other_processes_cpu_time_over_the_wall_time(monkeypatch) -> None:
    clock, seconds = Clock([2.0]), iter([10.0, 13.0])
    monkeypatch.setattr(profile_module, "time", clock)
    monkeypatch.setattr(profile_module, "_cpu_seconds_elsewhere", lambda: next(seconds))
    with BusyElsewhere() as busy:
        clock.step()
    assert busy.cores == pytest.approx(1.5)
    monkeypatch.setattr(profile_module, "_cpu_seconds_elsewhere", lambda: None)  # no /proc/stat
    with BusyElsewhere() as busy:
        clock.now += 1.0
    assert busy.cores is None


def test_auto_repeats_reach_the_minimum_and_the_time() -> None:
    t0 = time.perf_counter()
    times = time_runs([lambda: time.sleep(0.002)], CPU, timed_s=0.03)
    assert len(times[0]) >= MIN_REPEATS and time.perf_counter() - t0 >= 0.03
    assert len(time_runs([lambda: None], CPU, timed_s=60)[0]) == MAX_REPEATS


@pytest.mark.parametrize(
    ("seconds", "drift"),
    [
        ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.2], 0.2),  # slower in the last third
        ([1.0, 1.5, 1.0, 2.0, 2.0, 9.0, 1.2, 1.1, 1.0], 1.0),  # medians 1.0, 2.0, 1.1
        ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 5.0], 0.0),  # the tenth is left out
        ([1.0] * 8, None),  # fewer than three a third
    ],
)
def test_machine_drift_is_how_far_the_thirds_medians_lie_apart(seconds, drift) -> None:
    assert machine_drift(seconds) == (drift if drift is None else pytest.approx(drift))


def test_the_reference_is_a_fixed_product_on_the_device() -> None:
    a, b = Reference(CPU), Reference(CPU, products=1)
    assert a.a.shape == (256, 256) and torch.equal(a.a, b.a) and torch.equal(a.b, b.b)
    b()
    torch.testing.assert_close(b.out, a.a @ a.b)


def test_default_batch_size() -> None:
    assert (default_batch_size("cpu"), default_batch_size("cuda")) == (16, 64)


def test_profile_a_tiny_densenet_with_both_variants() -> None:
    info = dataset_info("fashion-mnist")
    spec = parse_name("densenet-bc-10-k4", info.num_classes, info.channels)
    steps: list[str] = []
    r = profile(spec, info, 2, "auto", repeats=2, on_step=steps.append)
    assert r.device in ("cpu", "cuda") and r.batch_size == 2
    assert [s.memory_efficient for s in r.speed] == [False, True]
    for s in r.speed:
        assert s.train_step_spread.repeats == s.forward_spread.repeats == 2
        assert s.train_step_ms == s.train_step_spread.min_ms  # the headline is the fastest
        assert s.forward_ms == s.forward_spread.min_ms
        assert s.train_images_per_s == pytest.approx(2e3 / s.train_step_ms)
    assert r.statistic == STATISTIC and r.to_dict()["statistic"].startswith("min: the fastest")
    assert r.cpu_busy_elsewhere is None or r.cpu_busy_elsewhere >= 0
    assert replace(r, cpu_busy_elsewhere=BUSY_ELSEWHERE).shared
    assert not replace(r, cpu_busy_elsewhere=None).shared
    assert r.machine_drift is None  # a reference run in 2 turns: too few for thirds
    assert r.reference_ms is not None and r.reference_ms > 0
    assert replace(r, machine_drift=DRIFT_WARN).unsteady and not r.unsteady
    assert "timing training steps and forward passes in turns" in steps
    assert r.to_dict()["speed"][1]["train_step_spread"]["repeats"] == 2
