from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dnas_cli.main import app
from typer.testing import CliRunner

from dnas.data import DataSplits
from dnas.datasets import dataset_info
from dnas.errors import DnasError
from dnas.models import build
from dnas.report import write_reuse_page
from dnas.reuse import densenet_reuse, reuse_from_checkpoint, source_slices, wrn_reuse
from dnas.spec import DenseNetSpec, WRNSpec


def fake_data(name: str = "cifar10", n: int = 16) -> DataSplits:
    info = dataset_info(name)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(
        0, 256, (n, info.channels, info.height, info.width), generator=g, dtype=torch.uint8
    )
    y = torch.arange(n) % info.num_classes
    return DataSplits(
        info,
        x,
        y,
        x[:8],
        y[:8],
        x[:8],
        y[:8],
        (0.5,) * info.channels,
        (0.25,) * info.channels,
        False,
        "synthetic",
    )


def train_tiny(spec, run_dir: Path, data: DataSplits | None = None) -> Path:  # noqa: ANN001
    """A real dnas run directory (config.json, checkpoint.pt) from one tiny epoch."""
    from dnas.train import TrainConfig, train

    train(spec, data or fake_data(), TrainConfig(epochs=1, batch_size=8), run_dir=run_dir)
    return run_dir


def test_source_slices():
    assert source_slices(4, 2, 3) == [(0, 4), (4, 6), (6, 8)]
    assert source_slices(24, 12, 1) == [(0, 24)]


def test_densenet_matrix_matches_hand_set_weights():
    # densenet-c-10-k2-s4: three blocks of n = 2 layers (L = 3n+4 = 10), k = 2, stem 4, θ = 0.5.
    spec = DenseNetSpec(10, growth_rate=2, compression=0.5, stem_width=4)
    model = build(spec)
    assert spec.block_channels() == [(4, 8), (4, 8), (4, 8)]

    def fill(weight: torch.Tensor, base: float) -> None:
        # Input channel c gets |w| = base + c everywhere; signs alternate so only |w| counts.
        with torch.no_grad():
            for c in range(weight.shape[1]):
                weight[:, c] = base + c
            weight[::2] *= -1

    for b in (1, 2, 3):
        for layer in (1, 2):
            fill(getattr(model, f"denseblock{b}")[f"denselayer{layer}"].conv1.weight, 100 * layer)
    fill(model.transition1.conv.weight, 300)
    fill(model.transition2.conv.weight, 300)
    fill(model.head.fc.weight, 1)
    result = densenet_reuse(model)
    # Sources of layer 2: block input = channels 0-3, layer 1 = channels 4-5. The transition and
    # the classifier read 0-3 (input), 4-5 (layer 1), 6-7 (layer 2).
    first = [
        [101.5, 201.5, 301.5],
        [None, 204.5, 304.5],
        [None, None, 306.5],
    ]
    assert [b.extra for b in result.blocks] == ["transition", "transition", "classifier"]
    assert result.blocks[0].matrix == first
    assert result.blocks[1].matrix == first
    assert result.blocks[2].matrix == [[101.5, 201.5, 2.5], [None, 204.5, 5.5], [None, None, 7.5]]


def test_bottleneck_uses_the_1x1_conv():
    spec = DenseNetSpec(16, growth_rate=4, bottleneck=True, compression=0.5)  # BC: n = 2, stem 8
    model = build(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.denseblock1.denselayer2.conv1.weight[:, 8:12] = -3.0  # layer 1's 4 channels
        model.denseblock1.denselayer2.conv2.weight.fill_(99.0)  # the 3x3 conv is not read
    m = densenet_reuse(model).blocks[0].matrix
    assert m[0][1] == 0.0 and m[1][1] == 3.0 and m[0][0] == 0.0


def test_wrn_ratio_scales_with_the_branch():
    torch.manual_seed(0)
    model = build(WRNSpec(10, 1)).eval()
    x = torch.randn(4, 3, 32, 32)
    base = wrn_reuse(model, x).ratios
    assert [len(r) for r in base] == [1, 1, 1] and all(r > 0 for row in base for r in row)
    with torch.no_grad():
        model.group1.block1.conv2.weight *= 2  # the branch is linear in its last conv
    doubled = wrn_reuse(model, x).ratios
    assert doubled[0][0] == pytest.approx(2 * base[0][0], rel=1e-5)
    with torch.no_grad():
        model.group1.block1.conv2.weight.zero_()
    assert wrn_reuse(model, x).ratios[0][0] == 0.0


def test_reuse_from_run_dir_and_cli(tmp_path):
    run = train_tiny(DenseNetSpec(10, growth_rate=2), tmp_path / "run")
    result = reuse_from_checkpoint(run)
    assert [b.layers for b in result.blocks] == [2, 2, 2]
    page = write_reuse_page(result, tmp_path / "r.html")
    text = page.read_text()
    assert "average absolute weight" in text and (tmp_path / "plotly.min.js").exists()
    assert "cdn." not in text
    out = CliRunner().invoke(app, ["reuse", str(run / "checkpoint.pt"), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["family"] == "densenet" and len(data["blocks"][0]["matrix"]) == 3
    assert (run / "reuse.html").exists()


def test_a_page_never_replaces_a_file_dnas_did_not_write(tmp_path):
    run = train_tiny(DenseNetSpec(10, growth_rate=2), tmp_path / "run")
    notes = tmp_path / "notes.md"
    notes.write_text("mine")
    for target in (notes, tmp_path):  # a user's file; a folder
        out = CliRunner().invoke(app, ["reuse", str(run), "--out", str(target)])
        assert out.exit_code == 2 and out.output.startswith(
            f"Error: reuse --out {target}"
        )  # it once said "report"
        assert len(out.output.strip().splitlines()) == 1
    assert notes.read_text() == "mine" and not (tmp_path / "plotly.min.js").exists()
    page = tmp_path / "page.html"
    for _ in range(2):  # its own page, and plotly.js beside it, it rewrites
        assert CliRunner().invoke(app, ["reuse", str(run), "--out", str(page)]).exit_code == 0
    (tmp_path / "plotly.min.js").write_text("mine")
    out = CliRunner().invoke(app, ["reuse", str(run), "--out", str(page)])
    assert out.exit_code == 2 and "dnas did not write it" in out.output


def test_wrn_reuse_needs_data(tmp_path):
    run = train_tiny(WRNSpec(10, 1), tmp_path / "wrn")
    with pytest.raises(DnasError):
        reuse_from_checkpoint(run, dataset="imagefolder:/nonexistent/dir")
    out = CliRunner().invoke(app, ["reuse", str(run), "--dataset", "imagefolder:/nonexistent/dir"])
    assert (
        out.exit_code == 2
        and "Traceback" not in out.output
        and len(out.output.strip().splitlines()) == 1
    )


@pytest.mark.parametrize("name", ["bogus", "FASHION-MNIST", ""])
def test_an_unknown_dataset_is_named_as_given(tmp_path, name):
    # `dnas reuse RUN --dataset bogus` said "imagefolder:/usr/share/datasets/fashion-mnist: no
    # subfolders" (any unknown name became an image folder at the run's data); '' was the run's.
    run = train_tiny(WRNSpec(10, 1), tmp_path / "wrn")
    out = CliRunner().invoke(app, ["reuse", str(run), "--dataset", name])
    assert out.exit_code == 2 and out.stdout == "", out.output
    assert out.stderr == (
        f"Error: --dataset {name!r}: unknown dataset; choose one of cifar10, cifar100, svhn,"
        " fashion-mnist, mnist, imagenet or imagefolder:PATH (a folder with one subfolder per"
        " class)\n"
    )


def test_wrn_reuse_on_fashion_mnist(tmp_path):
    from dnas.data import DEBIAN_FASHION_MNIST

    if not Path(DEBIAN_FASHION_MNIST).exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    run = train_tiny(WRNSpec(10, 1, in_channels=1), tmp_path / "wrn", fake_data("fashion-mnist"))
    out = CliRunner().invoke(app, ["reuse", str(run), "--json", "--images", "32"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["family"] == "wrn" and data["images"] == 32 and data["dataset"] == "fashion-mnist"
    assert [len(r) for r in data["ratios"]] == [1, 1, 1]


def test_missing_checkpoint_is_one_line(tmp_path):
    out = CliRunner().invoke(app, ["reuse", str(tmp_path)])
    assert out.exit_code == 2 and out.output.startswith("Error: no checkpoint at")
    assert len(out.output.strip().splitlines()) == 1
