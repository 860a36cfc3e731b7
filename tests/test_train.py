from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dnas.checkpoint import RunDir, load_checkpoint, load_model, spec_from_dict
from dnas.data import DataSplits
from dnas.datasets import DatasetInfo
from dnas.errors import DnasError
from dnas.models import build
from dnas.names import parse_name
from dnas.recipes import paper_recipe, resolve_recipe
from dnas.train import TrainConfig, train


def tiny_data(
    n: int = 96, augment: bool = True, classes: int = 4, size: int = 12, channels: int = 3
) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n + 32 + 32) % classes
    x = torch.randint(0, 128, (len(y), channels, size, size), generator=g, dtype=torch.uint8)
    x[:, :, 3:9, 3:9] += (y * 30).to(torch.uint8).view(-1, 1, 1, 1)  # learnable signal
    info = DatasetInfo("synthetic", channels, size, size, classes)
    return DataSplits(
        info,
        x[:n],
        y[:n],
        x[n : n + 32],
        y[n : n + 32],
        x[n + 32 :],
        y[n + 32 :],
        (0.3,) * channels,
        (0.2,) * channels,
        augment,
        "memory",
    )


def tiny(name: str = "densenet-bc-10-k4", **head: int) -> object:
    return parse_name(name, head.get("classes", 4), head.get("channels", 3))


FAST = TrainConfig(epochs=2, batch_size=16, seed=1)


# ---- recipes -----------------------------------------------------------------------------------


def test_paper_densenet_schedule() -> None:
    r = paper_recipe("densenet", "cifar10", augment=True)
    assert (r.epochs, r.batch_size, r.weight_decay, r.nesterov, r.dropout) == (
        300,
        64,
        1e-4,
        True,
        0.0,
    )
    lr = {e: r.lr_at(e * 10, 10) for e in (0, 149, 150, 224, 225, 299)}
    assert lr == pytest.approx({0: 0.1, 149: 0.1, 150: 0.01, 224: 0.01, 225: 0.001, 299: 0.001})
    assert paper_recipe("densenet", "svhn", augment=False).epochs == 40
    assert paper_recipe("densenet", "svhn", augment=False).dropout == 0.2


def test_paper_wrn_schedule() -> None:
    r = paper_recipe("wrn", "cifar10", augment=True)
    assert (r.epochs, r.batch_size, r.weight_decay, r.dropout) == (200, 128, 5e-4, 0.3)
    lr = {e: r.lr_at(e * 7, 7) for e in (59, 60, 119, 120, 159, 160, 199)}
    assert lr == pytest.approx(
        {59: 0.1, 60: 0.02, 119: 0.02, 120: 0.004, 159: 0.004, 160: 0.0008, 199: 0.0008}
    )


def test_fast_schedule_warms_up_then_decays_to_zero() -> None:
    r = resolve_recipe("fast", "densenet", "cifar10", True, epochs=5)
    lrs = [r.lr_at(s, 10) for s in range(50)]
    assert lrs[9] == pytest.approx(r.lr) and lrs[0] == pytest.approx(r.lr / 10)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.01 * r.lr


def test_recipe_overrides_and_dropout_precedence() -> None:
    assert (
        resolve_recipe("paper", "densenet", "cifar10", True, epochs=3, lr=0.05).lr_at(0, 1) == 0.05
    )
    assert resolve_recipe("paper", "wrn", "cifar10", True, spec_dropout=0.1).dropout == 0.1
    assert (
        resolve_recipe("paper", "wrn", "cifar10", True, spec_dropout=0.1, dropout=0.0).dropout
        == 0.0
    )
    with pytest.raises(DnasError, match="unknown recipe"):
        resolve_recipe("slow", "wrn", "cifar10", True)
    with pytest.raises(DnasError, match="epochs"):
        resolve_recipe("fast", "wrn", "cifar10", True, epochs=0)


# ---- memory-efficient DenseNet ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["densenet-bc-16-k4", "densenet-13-k4"])
def test_memory_efficient_outputs_and_gradients_equal_standard(name: str) -> None:
    spec = tiny(name)
    torch.manual_seed(0)
    standard = build(spec)
    efficient = build(spec, memory_efficient=True)
    efficient.load_state_dict(standard.state_dict())
    x = torch.randn(4, 3, 12, 12)
    y = torch.tensor([0, 1, 2, 3])
    grads = []
    for model in (standard, efficient):
        model.train()
        xi = x.clone().requires_grad_()
        out = model(xi)
        torch.nn.functional.cross_entropy(out, y).backward()
        grads.append((out.detach(), xi.grad, [p.grad for p in model.parameters()]))
    (o1, gx1, gp1), (o2, gx2, gp2) = grads
    assert torch.allclose(o1, o2, atol=1e-6) and torch.allclose(gx1, gx2, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(gp1, gp2))


def test_memory_efficient_running_stats_equal_standard() -> None:
    # torchvision's memory_efficient DenseNet updates them twice (once more in the recomputation).
    spec = tiny("densenet-bc-10-k4")
    torch.manual_seed(0)
    standard, efficient = build(spec), build(spec, memory_efficient=True)
    efficient.load_state_dict(standard.state_dict())
    x = torch.randn(4, 3, 12, 12)
    for model in (standard, efficient):
        model(x.clone().requires_grad_()).sum().backward()
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        name = f"denseblock1.denselayer1.norm1.{key}"
        assert torch.allclose(standard.state_dict()[name], efficient.state_dict()[name])


# ---- the training loop -----------------------------------------------------------------------


def test_train_writes_a_run_directory(tmp_path: Path) -> None:
    data = tiny_data()
    seen = []
    r = train(
        tiny(),
        data,
        replace(FAST, eval_test=True),
        tmp_path / "run",
        on_epoch=lambda e, m: seen.append(e),
    )
    assert seen == [1, 2] and len(r.metrics) == 2 and not r.diverged and r.reason is None
    assert r.test_acc is not None and 0 <= r.best_val_acc <= 1 and r.images_per_s > 0
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert set(lines[0]) >= {
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "lr",
        "time_s",
        "images_per_s",
    }
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert spec_from_dict(config["spec"]) == r.spec and config["config"]["seed"] == 1
    assert {"torch", "torchvision", "dnas", "git_commit"} <= set(config["versions"])
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["spec"]["family"] == "densenet"
    spec, model = load_model(tmp_path / "run")
    assert spec == r.spec and not model.training
    assert json.loads((tmp_path / "run" / "result.json").read_text())["test_acc"] == r.test_acc


def test_training_learns() -> None:
    r = train(tiny(), tiny_data(256, augment=False), TrainConfig(epochs=4, batch_size=32, lr=0.1))
    assert r.metrics[-1]["train_loss"] < r.metrics[0]["train_loss"]
    assert r.best_val_acc > 0.5


def test_wrn_with_reflect_padding_trains() -> None:
    r = train(tiny("wrn-10-1"), tiny_data(), FAST)
    assert len(r.metrics) == 2 and math.isfinite(r.metrics[-1]["train_loss"])


def test_same_seed_same_weights_different_seed_different() -> None:
    data = tiny_data()
    runs = [train(tiny(), data, replace(FAST, seed=s)) for s in (1, 1, 2)]
    assert runs[0].metrics[-1]["train_loss"] == runs[1].metrics[-1]["train_loss"]
    assert runs[0].metrics[-1]["train_loss"] != runs[2].metrics[-1]["train_loss"]


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path: Path) -> None:
    data = tiny_data(augment=True)
    spec = tiny("densenet-bc-10-k4-drop0.2")  # dropout and augmentation both draw random numbers
    config = replace(FAST, epochs=3)
    full = train(spec, data, config, tmp_path / "full")

    def interrupt(epoch: int, metrics: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(spec, data, config, tmp_path / "cut", on_epoch=interrupt)
    assert load_checkpoint(tmp_path / "cut")["epoch"] == 1
    resumed = train(spec, data, config, tmp_path / "cut", resume=True)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [m["train_loss"] for m in resumed.metrics] == [m["train_loss"] for m in full.metrics]
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 3
    # The run's wall time covers its epochs before the resume too; resuming a finished run
    # (nothing left to train) once wrote this call's milliseconds as the run's time.
    epochs_s = [m["time_s"] for m in resumed.metrics]
    assert resumed.wall_time_s >= sum(epochs_s) > epochs_s[0] > 0
    again = train(spec, data, config, tmp_path / "cut", resume=True)
    assert again.metrics == resumed.metrics and again.wall_time_s >= sum(epochs_s)


class Prune(Exception):
    pass


def test_exception_from_on_epoch_propagates_after_the_epoch_is_saved(tmp_path: Path) -> None:
    def prune(epoch: int, metrics: dict) -> None:
        raise Prune(f"pruned at {epoch}")

    with pytest.raises(Prune, match="pruned at 1"):
        train(tiny(), tiny_data(), FAST, tmp_path / "run", on_epoch=prune)
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_should_stop_ends_early_with_a_reason() -> None:
    r = train(tiny(), tiny_data(), replace(FAST, epochs=5), should_stop=lambda: True)
    assert len(r.metrics) == 1 and "should_stop" in r.reason and not r.diverged


def test_divergence_stops_cleanly(tmp_path: Path) -> None:
    r = train(
        tiny(), tiny_data(), replace(FAST, lr=1e30, epochs=3, eval_test=True), tmp_path / "run"
    )
    assert r.diverged and r.reason.startswith("diverged") and r.test_acc is None
    assert json.loads((tmp_path / "run" / "result.json").read_text())["diverged"]


def test_non_finite_weights_after_the_last_step_count_as_divergence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The training loss is checked before each step, so an update that leaves the weights
    # non-finite in an epoch's last step shows only in the validation loss.
    import dnas.train

    monkeypatch.setattr(dnas.train, "evaluate", lambda *a, **k: (math.nan, 0.1))
    r = train(tiny(), tiny_data(), replace(FAST, epochs=2), tmp_path / "run")
    assert r.diverged and r.reason == "diverged: validation loss nan after epoch 1"
    assert r.metrics == [] and r.final_val_acc is None


def _snapshot(d: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.iterdir())}


@pytest.mark.parametrize("content", ["garbage", "foreign-dict", "foreign-pickle", "truncated"])
def test_resume_from_a_bad_checkpoint_is_a_clear_error_and_touches_nothing(
    tmp_path: Path, content: str
) -> None:
    run = tmp_path / "run"
    train(tiny(), tiny_data(), replace(FAST, epochs=1), run)
    ckpt = run / "checkpoint.pt"
    if content == "garbage":
        ckpt.write_bytes(b"\x00not a checkpoint" * 10)
    elif content == "foreign-dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, ckpt)
    elif content == "foreign-pickle":
        torch.save(torch.nn.Linear(2, 2), ckpt)
    else:
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    before = _snapshot(run)
    with pytest.raises(DnasError) as e:
        train(tiny(), tiny_data(), replace(FAST, epochs=2), run, resume=True)
    assert "checkpoint" in str(e.value) and "\n" not in str(e.value)
    assert _snapshot(run) == before


def test_resume_with_other_options_or_model_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny(), tiny_data(), replace(FAST, epochs=1), run)
    before = _snapshot(run)
    with pytest.raises(DnasError, match="seed=1"):
        train(tiny(), tiny_data(), replace(FAST, epochs=1, seed=2), run, resume=True)
    with pytest.raises(DnasError, match="densenet-bc-10-k4"):
        train(tiny("wrn-10-1"), tiny_data(), replace(FAST, epochs=1), run, resume=True)
    with pytest.raises(DnasError, match="already holds a run"):
        train(tiny(), tiny_data(), FAST, run)
    with pytest.raises(DnasError, match="nothing to resume"):
        train(tiny(), tiny_data(), FAST, tmp_path / "empty", resume=True)
    assert _snapshot(run) == before


def test_a_run_stopped_before_its_first_epoch_is_started_again(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    ours = '{"spec": {}, "versions": {"dnas": "0.1.0"}, "argv": ["dnas", "train"]}'
    (run / "config.json").write_text(ours)  # what `kill` during the first epoch leaves
    (run / "metrics.jsonl").write_text("")
    result = train(tiny(), tiny_data(), replace(FAST, epochs=1), run)
    assert len(result.metrics) == 1 and (run / "checkpoint.pt").is_file()
    assert json.loads((run / "config.json").read_text())["spec"]  # the new run's


def test_hidden_files_do_not_make_a_folder_foreign(tmp_path: Path) -> None:
    from dnas.checkpoint import RunDir

    for name in (".DS_Store", ".nfs0001", ".checkpoint.pt.42.tmp", "reuse.html"):
        (tmp_path / name).write_text("x")
    (tmp_path / "config.json").write_text('{"versions": {"dnas": "0.1.0"}, "argv": []}')
    assert RunDir(tmp_path).others() == []
    (tmp_path / "notes.txt").write_text("x")
    assert RunDir(tmp_path).others() == ["notes.txt"]


def test_a_folder_of_other_files_is_not_a_run_folder(tmp_path: Path) -> None:
    (tmp_path / "HEAD").write_text("ref: refs/heads/main")  # say, --out .git
    before = _snapshot(tmp_path)
    for resume in (False, True):
        with pytest.raises(DnasError, match=r"holds files that are not a run's \(HEAD\)"):
            train(tiny(), tiny_data(), FAST, tmp_path, resume=resume)
    assert _snapshot(tmp_path) == before


def test_a_users_config_json_is_never_replaced(tmp_path: Path) -> None:
    # A folder holding only config.json counts as a run stopped before its first epoch, which a
    # new run replaces: a user's own config.json was replaced with it.
    (tmp_path / "config.json").write_text('{"mine": true}\n')
    before = _snapshot(tmp_path)
    with pytest.raises(DnasError, match=r"holds files that are not a run's \(config.json\)"):
        train(tiny(), tiny_data(), FAST, tmp_path)
    assert _snapshot(tmp_path) == before
    run = tmp_path / "run"  # dnas's own config.json, left by a run stopped early, is replaced
    with pytest.raises(KeyboardInterrupt):
        train(tiny(), tiny_data(), FAST, run, on_progress=_interrupt)
    assert RunDir(run).others() == [] and not RunDir(run).holds_run()
    assert train(tiny(), tiny_data(), FAST, run).metrics


def _interrupt(*args: object) -> None:
    raise KeyboardInterrupt


def test_mismatched_classes_are_refused() -> None:
    with pytest.raises(DnasError, match="classes"):
        train(tiny(classes=10), tiny_data(), FAST)


def test_eval_test_without_test_images_is_refused_before_the_run_folder(tmp_path: Path) -> None:
    # An image folder without test/ once trained, exited 0 and reported test_acc null.
    data = tiny_data()
    data = replace(data, test_x=data.test_x[:0], test_y=data.test_y[:0])
    with pytest.raises(DnasError, match="--eval-test: synthetic has no test images; give its"):
        train(tiny(), data, replace(FAST, eval_test=True), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert train(tiny(), data, replace(FAST, epochs=1)).test_acc is None  # without: fine
