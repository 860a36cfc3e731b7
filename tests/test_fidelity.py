"""Pareto multi-fidelity (dnas.fidelity) on hand-worked examples, exact continuation from a
rung's checkpoint, and a real multi-fidelity search on a Fashion-MNIST subset."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dnas import pareto
from dnas import study as records
from dnas.config import DATA_SEED, make_config
from dnas.data import load_data
from dnas.fidelity import decide, rungs
from dnas.names import parse_name
from dnas.summary import summarize
from dnas.train import TrainConfig, train
from dnas.worker import open_study, run_worker


def test_rungs_grow_by_the_reduction_factor_up_to_the_full_training():
    assert rungs(1, 9, 3) == (1, 3, 9)
    assert rungs(1, 10, 3) == (1, 3, 9, 10)
    assert rungs(2, 8, 2) == (2, 4, 8)
    assert rungs(3, 3, 3) == (3,)  # first rung = full training: no multi-fidelity
    assert make_config({"epochs": 9, "min_epochs": 1}).rungs == (1, 3, 9)
    assert make_config({"epochs": 9}).rungs == (9,)  # the default: every candidate trains fully


def test_crowding_distance_by_hand():
    # One front (cost up, accuracy up): the ends are infinite; the middle point's neighbours
    # span 3 of the 3 cost units and 0.2 of the 0.2 accuracy: 1 + 1.
    pts = [(1, 0.5), (2, 0.6), (4, 0.7), (3, 0.55)]  # the last is dominated by (2, 0.6)
    d = pareto.crowding(pts)
    assert d[0] == d[2] == math.inf and d[1] == pytest.approx(2.0)
    assert d[3] == math.inf  # alone on rank 2
    assert pareto.order(pts) == [0, 2, 1, 3]


def test_successive_halving_keeps_the_best_third_by_pareto_rank_then_crowding():
    # Six candidates at a rung, reduction factor 3: two continue. Rank 1 is {0, 1, 2} (cost,
    # accuracy): 0 and 2 are its ends (infinite crowding), 1 lies between them.
    points = {0: (1.0, 0.50), 1: (2.0, 0.60), 2: (4.0, 0.80), 3: (3.0, 0.55), 4: (5.0, 0.7),
              5: (2.5, 0.40)}  # fmt: skip
    verdicts = {i: decide(i, points, 3) for i in points}
    assert [i for i, v in verdicts.items() if v.promote] == [0, 2]
    assert verdicts[1].place == 3 and verdicts[1].keep == 2 and verdicts[1].competitors == 6
    # The first candidates at a rung (fewer than the factor) keep the best one going.
    assert decide(7, {7: (1.0, 0.1)}, 3).promote
    assert not decide(8, {7: (1.0, 0.9), 8: (2.0, 0.5)}, 3).promote


def tiny_data():
    return load_data("fashion-mnist", None, "cpu", 200, 300, DATA_SEED)


def test_training_through_rungs_gives_the_weights_of_training_directly(tmp_path: Path):
    """Rungs 1 and 2 stop and resume from the checkpoint; the schedule is over the top rung
    (3 epochs), so the weights after epoch 3 are bit for bit those of one uninterrupted run."""
    spec, data = parse_name("densenet-bc-10-k4", 10, 1), tiny_data()
    config = TrainConfig(epochs=3, batch_size=32, seed=5)
    direct = train(spec, data, config, tmp_path / "direct")
    done = [0]

    def on_epoch(epoch: int, metrics: dict) -> None:
        done[0] = epoch

    for i, rung in enumerate((1, 2, 3)):
        r = train(spec, data, config, tmp_path / "rungs", resume=i > 0, on_epoch=on_epoch,
                  should_stop=lambda r=rung: done[0] >= r)  # fmt: skip
        assert len(r.metrics) == rung
    a = torch.load(tmp_path / "direct" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "rungs" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [m["val_acc"] for m in r.metrics] == [m["val_acc"] for m in direct.metrics]
    assert [m["lr"] for m in r.metrics] == [m["lr"] for m in direct.metrics]


def test_a_multi_fidelity_search_stops_candidates_at_rungs_and_never_retrains(tmp_path: Path):
    cfg = make_config({
        "budgets": ("20k-params", "3M-flops"), "dataset": "fashion-mnist", "space": "densenet",
        "epochs": 3, "min_epochs": 1, "train_subset": 300, "val_size": 200, "batch_size": 64,
        "trials": 7, "studies_dir": str(tmp_path / "studies"),
    })  # fmt: skip
    data = tiny_data()
    assert run_worker(cfg, data) is None
    study = open_study(cfg)
    recs = records.read_all(study)
    trained = [r for r in recs if r.state == records.TRAINED]
    stopped = [r for r in recs if r.state == records.STOPPED]
    assert len(trained) + len(stopped) == 7 and stopped and trained
    assert all(set(r.rungs) == {1, 3} and len(r.metrics) == 3 for r in trained)
    assert all(set(r.rungs) == {1} and len(r.metrics) == 1 for r in stopped)
    assert all("stopped: place" in r.note for r in stopped)
    for r in trained + stopped:  # what the sampler was told is the accuracy where it stopped
        assert r.val_acc == r.rungs[max(r.rungs)] == r.metrics[-1]["val_acc"]
    # Trial 0 reached the top through rung 1; its weights are those of a direct 3-epoch run.
    first = min(trained, key=lambda r: r.number)
    assert first.number == 0
    spec = parse_name(first.name, 10, 1)
    direct = TrainConfig(epochs=3, batch_size=64, seed=cfg.seed, train_subset=300, val_size=200)
    train(spec, data, direct, tmp_path / "d")
    a = torch.load(Path(first.run_dir) / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "d" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Duplicates were answered from the study, never trained twice.
    summary = summarize(study, cfg, 0.0)
    assert summary.retrained_duplicates == 0 and summary.rejected_over_budget == 0
    names = {r.number: r.name for r in recs}
    for r in recs:
        if r.state == records.REUSED:
            assert names[r.reused_from] == r.name and not r.started
    assert {m.number for m in summary.front} <= {r.number for r in trained}
    assert summary.complete == len(trained) and summary.stopped == len(stopped)


def test_a_duplicate_gets_the_earlier_result_and_is_marked_reused(tmp_path: Path):
    cfg = make_config({
        "budgets": ("20k-params",), "dataset": "fashion-mnist", "space": "densenet-bc",
        "epochs": 1, "train_subset": 300, "val_size": 200, "trials": 1,
        "studies_dir": str(tmp_path / "studies"),
    })  # fmt: skip
    data = tiny_data()
    run_worker(cfg, data)
    study = open_study(cfg)
    (first,) = study.trials
    study.enqueue_trial(first.params)  # the sampler proposes the same candidate again
    run_worker(make_config({**_fields(cfg), "trials": 2}), data, study)
    again = records.read(study.trials[1])
    assert again.state == records.REUSED and again.reused_from == 0 and not again.started
    assert study.trials[1].values == first.values
    assert not (Path(cfg.trial_root) / "trial-00001").exists()


def _fields(cfg) -> dict:  # noqa: ANN001
    return {f: getattr(cfg, f) for f in cfg.__struct_fields__}
