"""Feature reuse: how much each layer reads what earlier layers wrote.

DenseNet (Huang et al., CVPR 2017, §5 and Figure 5): for each conv layer ℓ of a dense block and
each source s (s = 0 the block's input, then layers 1..ℓ-1), the pixel (s, ℓ) is the average
absolute weight of layer ℓ's first convolution (the 1x1 bottleneck conv for -B/-BC networks)
over the input channels that came from s::

    reuse[s, ℓ] = mean |W_ℓ[o, c, i, j]| over all filters o, kernel positions (i, j), c in C_s
                = (1 / |C_s|) · Σ_{c ∈ C_s} mean_{o,i,j} |W_ℓ[o, c, i, j]|

where C_s are layer ℓ's input channels that came from s: the block input's c_in channels for
s = 0, and the k channels layer s added for s >= 1. Two extra columns read the whole block's
output the same way: the transition layer's 1x1 conv after every block but the last, and the
classifier's linear layer after the last (the paper's figure has both).

WRN (Zagoruyko & Komodakis, BMVC 2016, §1 "diminishing feature reuse"): for each residual block
x -> h(x) + F(x), on a batch of validation images x_1..x_N (eval mode)::

    ratio = (1/N) Σ_n ||F(x_n)||_2 / ||h(x_n)||_2

with F the residual branch, h the shortcut (the identity, or the 1x1 projection where the width
changes) and the norms over all channels and pixels of one image. A ratio near 0 means the block
adds little to what passes through it.

Each result is plain data (``DenseNetReuse``, ``WRNReuse``); ``dnas.report.reuse`` draws it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from dnas.errors import DnasError

DENSENET_DEFINITION = (
    "Pixel (s, ℓ): the average absolute weight of layer ℓ's first convolution (the 1×1 bottleneck "
    "conv in -B/-BC networks) over the input channels that came from source s (s = 0: the block's "
    "input; s ≥ 1: the k channels layer s added), i.e. the sum of |w| over those channels divided "
    "by their number (and by the filters and kernel positions). The transition column reads the "
    "block's whole output through the transition's 1×1 conv, the classifier column through the "
    "linear layer, sliced by the same sources (Huang et al. 2017, §5, Figure 5). Blank: s ≥ ℓ, "
    "no connection."
)
WRN_DEFINITION = (
    "For each residual block x ↦ h(x) + F(x), on a batch of N validation images in eval mode: "
    "ratio = (1/N) Σₙ ‖F(xₙ)‖₂ / ‖h(xₙ)‖₂, the norms over all channels and pixels of one image; F "
    "is the residual branch, h the shortcut (identity, or the 1×1 projection where the width "
    "changes). Near 0: the block adds little to what flows past it, the 'diminishing feature "
    "reuse' of Zagoruyko & Komodakis 2016, §1."
)


@dataclass
class BlockReuse:
    """One dense block: ``matrix[s][j]`` for source s = 0..L and column j = target layer j + 1
    (0..L-1), then the transition or the classifier (column L); None where s >= ℓ."""

    block: int
    in_channels: int
    growth_rate: int
    extra: str  # "transition" or "classifier"
    matrix: list[list[float | None]]

    @property
    def layers(self) -> int:
        return len(self.matrix) - 1


@dataclass
class DenseNetReuse:
    name: str
    blocks: list[BlockReuse]
    definition: str = DENSENET_DEFINITION
    family: str = "densenet"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class WRNReuse:
    """``ratios[g][b]``: block b + 1 of group g + 1."""

    name: str
    ratios: list[list[float]]
    images: int
    dataset: str
    definition: str = WRN_DEFINITION
    family: str = "wrn"

    def to_dict(self) -> dict:
        return asdict(self)


def source_slices(in_channels: int, growth_rate: int, sources: int) -> list[tuple[int, int]]:
    """[start, stop) channel ranges of the sources of a concatenation in a dense block: the block
    input (``in_channels`` wide), then ``sources - 1`` layers of ``growth_rate`` channels each."""
    out = [(0, in_channels)]
    for s in range(1, sources):
        start = in_channels + (s - 1) * growth_rate
        out.append((start, start + growth_rate))
    return out


def _sliced_mean_abs(weight, slices: list[tuple[int, int]]) -> list[float]:  # noqa: ANN001
    """Mean |w| over dim 1 ranges of a (out, in, ...) weight, everything else averaged too."""
    a = weight.detach().abs().float()
    a = a.reshape(a.shape[0], a.shape[1], -1).mean(dim=(0, 2))  # per input channel
    return [a[lo:hi].mean().item() for lo, hi in slices]


def densenet_reuse(model) -> DenseNetReuse:  # noqa: ANN001 - a dnas DenseNet
    """The Figure-5 matrices of a DenseNet's weights (no data needed)."""
    spec = model.spec
    k = spec.growth_rate
    blocks = []
    channels = spec.block_channels()
    for b, ((c_in, c_out), n) in enumerate(zip(channels, spec.block_layers), start=1):
        block = getattr(model, f"denseblock{b}")
        matrix: list[list[float | None]] = [[None] * (n + 1) for _ in range(n + 1)]
        for layer in range(1, n + 1):
            conv = block[f"denselayer{layer}"].conv1
            for s, v in enumerate(_sliced_mean_abs(conv.weight, source_slices(c_in, k, layer))):
                matrix[s][layer - 1] = v
        last = b == len(channels)
        extra = model.head.fc.weight if last else getattr(model, f"transition{b}").conv.weight
        if extra.shape[1] != c_out:
            raise DnasError(
                f"{spec.name}: block {b} writes {c_out} channels"
                f" but its reader takes {extra.shape[1]}"
            )
        for s, v in enumerate(_sliced_mean_abs(extra, source_slices(c_in, k, n + 1))):
            matrix[s][n] = v
        blocks.append(BlockReuse(b, c_in, k, "classifier" if last else "transition", matrix))
    return DenseNetReuse(spec.name, blocks)


def wrn_reuse(model, images, dataset: str = "") -> WRNReuse:  # noqa: ANN001 - WRN, float batch
    """Residual-branch / shortcut norm ratios of every block on ``images`` (normalised,
    N×C×H×W)."""
    import torch

    model.eval()
    ratios = []
    with torch.no_grad():
        x = model.stem(images)
        for g in range(1, len(model.spec.widths) + 1):
            row = []
            for block in getattr(model, f"group{g}"):
                branch, shortcut = block.residual(x)
                r = branch.flatten(1).norm(dim=1) / shortcut.flatten(1).norm(dim=1).clamp_min(
                    1e-12
                )
                row.append(r.mean().item())
                x = branch + shortcut
            ratios.append(row)
    return WRNReuse(model.spec.name, ratios, len(images), dataset)


# ---- from a run directory or checkpoint -----------------------------------------------------


def validation_batch(  # noqa: ANN201 - a normalised image batch and the dataset's name
    ckpt: dict, dataset: str | None, data_dir: str | None, n: int
):
    """``n`` validation images of the run's dataset (or ``dataset``), normalised with the run's
    training statistics; the split is the run's (its seed and validation size)."""
    from dnas.data import load_data, normalize
    from dnas.datasets import DATASETS, image_folder

    data_info = ckpt.get("data", {})
    config = ckpt.get("config", {})
    name = data_info.get("name") if dataset is None else dataset
    if dataset is None and not name:
        raise DnasError("the checkpoint does not say its dataset; give --dataset")
    if dataset is None and name not in DATASETS and image_folder(name) is None:
        name = f"imagefolder:{data_info.get('source', name)}"  # an image folder's run names it
    if name not in DATASETS and image_folder(name) is None:
        folder = "imagefolder:PATH (a folder with one subfolder per class)"
        raise DnasError(
            f"--dataset {name!r}: unknown dataset; choose one of {', '.join(DATASETS)} or {folder}"
        )
    data = load_data(name, data_dir, "cpu", config.get("val_size"), None, config.get("seed", 0))
    x = data.val_x if len(data.val_y) else data.test_x
    mean = tuple(data_info.get("mean") or data.mean)
    std = tuple(data_info.get("std") or data.std)
    return normalize(x[:n], mean, std), data.info.name


def reuse_from_checkpoint(
    path: str | Path, dataset: str | None = None, data_dir: str | None = None, images: int = 256
) -> DenseNetReuse | WRNReuse:
    """Feature reuse of the network in a run directory or checkpoint file."""
    from dnas.checkpoint import CHECKPOINT, load_checkpoint, load_model

    file = Path(path) / CHECKPOINT if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise DnasError(
            f"no checkpoint at {file}; give a run directory holding {CHECKPOINT} or the file"
            " (`dnas search` keeps only the Pareto front's checkpoints)"
        )
    spec, model = load_model(file)
    if spec.family == "densenet":
        return densenet_reuse(model)
    x, name = validation_batch(load_checkpoint(file), dataset, data_dir, images)
    return wrn_reuse(model, x, name)
