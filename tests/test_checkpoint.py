"""The run folder and checkpoint trust: every file that is not a dnas checkpoint, and every
checkpoint whose weights do not fit its spec, is one line saying which."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
import torch
from dnas_cli.main import app
from typer.testing import CliRunner

from dnas.checkpoint import (
    CHECKPOINT_FORMAT,
    RunDir,
    checkpoint_state,
    default_run_dir,
    load_checkpoint,
    load_model,
    load_spec,
    spec_from_dict,
    spec_to_dict,
)
from dnas.errors import DnasError
from dnas.models import build
from dnas.names import parse_name


def tiny(name: str = "densenet-bc-10-k4") -> object:
    return parse_name(name, 4, 3)


def genuine(folder: Path, name: str = "densenet-bc-10-k4") -> Path:
    """A real dnas checkpoint of an untrained network, written as ``train`` writes one."""
    spec = tiny(name)
    torch.manual_seed(0)
    model = build(spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    run = RunDir(folder)
    run.start([])
    run.save(checkpoint_state(spec, {}, {}, {}, model, optimizer, torch.Generator(), [{"e": 1}]))
    return run.checkpoint_file


def forge(file: Path, **changes: object) -> Path:
    ckpt = torch.load(file, weights_only=True)
    torch.save({**ckpt, **changes}, file)
    return file


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# ---- specs as data ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["densenet-bc-100", "densenet-40", "densenet121", "wrn-28-10", "wrn-40-2-b313-drop0.3"]
)
def test_spec_dict_round_trips(name: str) -> None:
    spec = parse_name(name)
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec


@pytest.mark.parametrize(
    "d, message",
    [
        ({"family": "resnet", "depth": 50}, "family 'resnet'"),
        ({"depth": 40}, "family None"),
        ({"family": "wrn", "depth": 10, "widen": 1, "colour": "red"}, "unknown keys colour"),
        ({"family": "wrn", "depth": "10"}, "depth = '10' is not int"),
        ({"family": "wrn", "depth": 10, "block": "33"}, "block = '33'"),
        ({"family": "densenet", "depth": 40, "bottleneck": 1}, "bottleneck = 1 is not bool"),
        ({"family": "densenet", "depth": True}, "depth = True is not int"),
        ({"family": "densenet", "depth": 41}, "3n+4"),
        (["wrn", 10], "expected an object"),
    ],
)
def test_spec_from_dict_refuses_what_is_not_a_spec(d: object, message: str) -> None:
    with pytest.raises(DnasError) as e:
        spec_from_dict(d)
    assert message in one_line(e)


def test_load_spec_from_name_and_json(tmp_path: Path) -> None:
    spec = parse_name("wrn-16-2-b313", 4, 3)
    (tmp_path / "s.json").write_text(json.dumps(spec_to_dict(spec)))
    assert load_spec(tmp_path / "s.json", 4, 3) == spec
    (tmp_path / "n.json").write_text(json.dumps({"name": "wrn-16-2-b313"}))
    assert load_spec(str(tmp_path / "n.json"), 4, 3) == spec
    assert load_spec("wrn-16-2-b313", 4, 3) == spec
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DnasError, match=r"bad.json: not JSON \(Expecting"):
        load_spec(tmp_path / "bad.json")
    with pytest.raises(DnasError, match=r"missing.json: no such file; give a JSON spec"):
        load_spec(tmp_path / "missing.json")
    (tmp_path / "odd.json").write_text(json.dumps({"family": "wrn", "depth": 10, "k": 2}))
    with pytest.raises(DnasError, match=r"odd.json: not a valid wrn spec: unknown keys k"):
        load_spec(tmp_path / "odd.json")
    # A name is an architecture's, never another file (a file naming itself recursed for ever).
    (tmp_path / "self.json").write_text(json.dumps({"name": str(tmp_path / "self.json")}))
    with pytest.raises(DnasError, match=r"self.json: .* is not a DenseNet or WRN name"):
        load_spec(tmp_path / "self.json")


# ---- files that are not dnas checkpoints ------------------------------------------------------


def _random_bytes(f: Path) -> None:
    f.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                  .to(torch.uint8).numpy().tobytes())  # fmt: skip


def _zip_archive(f: Path) -> None:
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("weights.txt", "1 2 3")


NOT_CHECKPOINTS = {
    "random bytes": (_random_bytes, "is not a dnas checkpoint (not a PyTorch file)"),
    "text": (lambda f: f.write_text("definitely not a checkpoint"), "(not a PyTorch file)"),
    "zip archive": (_zip_archive, "(a zip archive, not a PyTorch file)"),
    "pickled module": (
        lambda f: torch.save(torch.nn.Linear(2, 2), f),
        "(a PyTorch file holding pickled Python objects, not only tensors and plain data)",
    ),
    "legacy pickled module": (
        lambda f: torch.save(torch.nn.Linear(2, 2), f, _use_new_zipfile_serialization=False),
        "(a PyTorch file holding pickled Python objects",
    ),
    "foreign state dict": (
        lambda f: torch.save({"state_dict": {"w": torch.zeros(2)}}, f),
        f"is not a dnas checkpoint (no {CHECKPOINT_FORMAT!r} marker)",
    ),
    "plain list": (lambda f: torch.save([1, 2], f), f"(no {CHECKPOINT_FORMAT!r} marker)"),
}


@pytest.mark.parametrize("kind", NOT_CHECKPOINTS)
def test_a_file_that_is_not_a_checkpoint_says_what_it_is(tmp_path: Path, kind: str) -> None:
    write, message = NOT_CHECKPOINTS[kind]
    write(tmp_path / "x.pt")
    for load in (load_checkpoint, load_model):
        with pytest.raises(DnasError) as e:
            load(tmp_path / "x.pt")
        assert one_line(e) == f"{tmp_path / 'x.pt'} {message}" or message in str(e.value)
        assert str(e.value).startswith(str(tmp_path / "x.pt"))


def test_a_truncated_checkpoint_is_damaged(tmp_path: Path) -> None:
    file = genuine(tmp_path / "run")
    file.write_bytes(file.read_bytes()[:1000])
    with pytest.raises(DnasError) as e:
        load_checkpoint(tmp_path / "run")
    assert "not a dnas checkpoint (a damaged PyTorch file" in one_line(e)


def test_a_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(DnasError, match="no checkpoint at"):
        load_checkpoint(tmp_path)


def test_dnas_reuse_on_random_bytes_is_one_line(tmp_path: Path) -> None:
    _random_bytes(tmp_path / "x.pt")
    r = CliRunner().invoke(app, ["reuse", str(tmp_path / "x.pt")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "is not a dnas checkpoint (not a PyTorch file)" in r.output


# ---- checkpoints whose weights do not fit their spec ------------------------------------------


def test_a_genuine_checkpoint_loads(tmp_path: Path) -> None:
    genuine(tmp_path / "run")
    spec, model = load_model(tmp_path / "run")
    assert spec == tiny() and not model.training
    assert load_checkpoint(tmp_path / "run")["epoch"] == 1


def test_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    file = forge(genuine(tmp_path / "run"), spec=spec_to_dict(tiny("wrn-10-1")))
    with pytest.raises(DnasError) as e:
        load_model(file)
    text = one_line(e)
    assert text.startswith(f"{file}: its weights do not fit its spec wrn-10-1 (")
    assert "missing" in text and "unexpected" in text


def test_a_spec_of_another_width_is_refused(tmp_path: Path) -> None:
    file = forge(genuine(tmp_path / "run"), spec=spec_to_dict(tiny("densenet-bc-10-k6")))
    with pytest.raises(DnasError) as e:
        load_model(file)
    assert "do not fit its spec densenet-bc-10-k6 (" in one_line(e)
    assert "of another shape, e.g. " in str(e.value)


def test_a_tensor_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    file = genuine(tmp_path / "run")
    weights = torch.load(file, weights_only=True)["model"]
    weights["head.fc.weight"] = torch.zeros(3, 3)
    forge(file, model=weights)
    with pytest.raises(DnasError) as e:
        load_model(file)
    assert "1 of another shape, e.g. head.fc.weight [3, 3] where the spec needs" in one_line(e)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"family": "densenet", "depth": "ten"}, "depth = 'ten' is not int"),
        ({"family": "densenet", "depth": 10, "growth_rate": 4, "evil": 1}, "unknown keys evil"),
        ({"family": "vit"}, "family 'vit'"),
        ("densenet-bc-10-k4", "expected an object"),
    ],
)
def test_a_stored_spec_that_is_not_a_spec_is_refused(
    tmp_path: Path, spec: object, message: str
) -> None:
    file = forge(genuine(tmp_path / "run"), spec=spec)
    with pytest.raises(DnasError) as e:
        load_model(file)
    text = one_line(e)
    assert text.startswith(f"{file}: its stored spec is unusable (") and message in text


def test_a_forged_spec_too_large_to_build_is_refused_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 161 trillion parameters: building it would take hours, then fail to allocate.
    huge = {"family": "wrn", "depth": 100_000_000, "widen": 10}
    file = forge(genuine(tmp_path / "run"), spec=huge)
    monkeypatch.setattr("dnas.checkpoint.build", lambda *a: pytest.fail("built it"))
    monkeypatch.setattr("dnas.checkpoint.available_memory", lambda device: 8 * 2**30)
    with pytest.raises(DnasError) as e:
        load_model(file)
    assert one_line(e).startswith(f"{file}: wrn-100000000-10 has 161,354,")
    assert "more than the 8.0 GiB of memory available on the cpu; choose a smaller" in str(e.value)


def test_weights_that_are_not_a_state_dict_are_refused(tmp_path: Path) -> None:
    file = forge(genuine(tmp_path / "run"), model=[1, 2, 3])
    with pytest.raises(DnasError, match="do not fit its spec densenet-bc-10-k4 \\(no state dict"):
        load_model(file)


# ---- the run folder ---------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = genuine(tmp_path / "run")
    before, state = file.read_bytes(), torch.load(file, weights_only=True)

    def full(self: Path, data: bytes) -> int:
        self.open("wb").write(data[:10])  # a part written, then the device is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(DnasError) as e:
        RunDir(tmp_path / "run").save(state)
    assert one_line(e) == (f"run folder {file}: cannot write it (No space left on device)")
    monkeypatch.undo()
    assert file.read_bytes() == before  # the resumable checkpoint is the previous one
    assert sorted(p.name for p in file.parent.iterdir()) == ["checkpoint.pt", "metrics.jsonl"]


def test_a_run_folder_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DnasError) as e:
        RunDir(tmp_path / "afile" / "run").start([])
    assert one_line(e).startswith(f"run folder {tmp_path / 'afile' / 'run'}: cannot write it (")


def test_run_folder_files_and_atomic_saves(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert not run.holds_run()
    run.start([{"epoch": 1}], info={"name": "x"})
    config = json.loads(run.config_file.read_text())
    assert config["name"] == "x" and {"versions", "argv"} <= set(config)
    assert {"torch", "torchvision", "dnas", "git_commit"} <= set(config["versions"])
    genuine(tmp_path / "run")  # rewrites metrics.jsonl (empty), then saves one epoch
    assert run.holds_run() and run.metrics_file.read_text() == '{"e": 1}\n'
    run.write_result({"ok": True})
    assert json.loads(run.result_file.read_text()) == {"ok": True}
    assert sorted(p.name for p in run.path.iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "metrics.jsonl",
        "result.json",
    ]  # no temporary file left behind


def test_resume_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DnasError, match="nothing to resume; start the run without --resume"):
        RunDir(tmp_path).resume()
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00junk")
    with pytest.raises(DnasError) as e:
        RunDir(tmp_path).resume()
    assert one_line(e).endswith("(not a PyTorch file); start a new run with another --out")


def test_default_run_dir() -> None:
    path = default_run_dir("wrn-16-4", "imagefolder:/data/pets", 3)
    assert re.fullmatch(
        r"studies/runs/wrn-16-4-imagefolder__data_pets-s3-\d{8}-\d{6}", path.as_posix()
    )


def test_a_checkpoint_removed_while_it_is_read_is_one_line(tmp_path, monkeypatch):
    """Another worker's pruning can remove a checkpoint between the check and the read."""
    from pathlib import Path

    from dnas.checkpoint import load_checkpoint
    from dnas.errors import DnasError

    gone = tmp_path / "trial-00001" / "checkpoint.pt"
    monkeypatch.setattr(Path, "is_file", lambda self: True)
    with pytest.raises(DnasError, match="no checkpoint at"):
        load_checkpoint(gone)
