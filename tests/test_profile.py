from __future__ import annotations

import time

import pytest
import torch

from dnas.datasets import dataset_info
from dnas.names import parse_name
from dnas.profile import MAX_REPEATS, MIN_REPEATS, Spread, default_batch_size, profile, time_runs

CPU = torch.device("cpu")


def test_runs_take_turns_in_alternating_order_after_an_untimed_warm_up() -> None:
    log: list[str] = []
    times = time_runs([lambda: log.append("a"), lambda: log.append("b")], CPU, repeats=3)
    assert "".join(log) == "ab" + "ab" + "ba" + "ab"
    assert [len(t) for t in times] == [3, 3]
    log.clear()
    time_runs([lambda: log.append("a")], CPU, repeats=2, warm_up=False)
    assert log == ["a", "a"]


def test_auto_repeats_reach_the_minimum_and_the_time() -> None:
    t0 = time.perf_counter()
    times = time_runs([lambda: time.sleep(0.002)], CPU, timed_s=0.03)
    assert len(times[0]) >= MIN_REPEATS and time.perf_counter() - t0 >= 0.03
    assert len(time_runs([lambda: None], CPU, timed_s=60)[0]) == MAX_REPEATS


def test_spread() -> None:
    s = Spread.of([0.010, 0.012, 0.011, 0.013, 0.030])
    assert (s.min_ms, s.q1_ms, s.q3_ms, s.max_ms, s.repeats) == pytest.approx((10, 11, 13, 30, 5))
    assert not s.steady and Spread.of([0.1, 0.101, 0.102, 0.1]).steady
    assert Spread.of([0.005]) == Spread(5.0, 5.0, 5.0, 5.0, 1)


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
        assert s.train_step_spread.min_ms <= s.train_step_ms <= s.train_step_spread.max_ms
        assert s.forward_spread.min_ms <= s.forward_ms <= s.forward_spread.max_ms
    assert "timing the train step in turns" in steps
    assert r.to_dict()["speed"][1]["train_step_spread"]["repeats"] == 2
