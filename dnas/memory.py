"""Peak training memory of one SGD step, predicted from the spec before any model is built.

The prediction replays what PyTorch allocates and frees in one training step, op by op, from the
spec's shapes alone (no torch): the forward pass, in which each op allocates its output and keeps
what its backward needs; the backward pass in reverse order (PyTorch's engine runs the nodes of
a single-device graph newest first), in which each node allocates its input gradients and its
parameters' gradients, then frees its output gradient and what it kept; then the optimizer
step. The peak is the highest number of live bytes at any point, the weights included.

Assumptions (each one what PyTorch 2.x does; a test and ``benchmarks/bench_memory_model.py``
check the total against the allocator):

- fp32 everywhere (no autocast), NCHW, a batch already in memory (it is not counted), the first
  step of a run (``.grad`` is None, so each parameter's gradient is the tensor its node
  allocated; later steps have the same peak or lower).
- What each op keeps for its backward (``derivatives.yaml``): a convolution its input; a batch
  norm its input and two per-channel statistics; a ReLU its output (in place when the module
  says so, then sharing the input's memory); average pooling its input; max pooling its input
  and int64 indices; dropout its noise (on CPU a float tensor it multiplies by, on CUDA a bool
  mask); concatenation and the residual add nothing. The cross-entropy keeps its log-softmax.
- Backward: a convolution allocates the gradient of its input (not for the network's input) and
  of its weight; batch norm and ReLU allocate one gradient the size of their input; a
  concatenation hands out views of its output gradient, which keep that memory alive until each
  is consumed; the residual add hands the same gradient to both branches. Two gradients that
  reach one tensor are summed: in place into the first when nothing else shares its memory,
  else into a new tensor (``InputBuffer::accumulate``).
- Memory-efficient DenseNet (``torch.utils.checkpoint``, non-reentrant): the concatenation, the
  first BN-ReLU and its convolution keep nothing in the forward pass; their inputs (the earlier
  features) stay alive until the step ends; the backward pass recomputes the concatenation and
  BN-ReLU output of one layer at a time, just before that layer's first convolution needs them.
- Optimizer: SGD with momentum, Nesterov and weight decay. On CPU PyTorch updates one parameter
  at a time (each update allocates the weight-decayed gradient and its Nesterov sum; the first
  step also allocates the momentum buffer); on CUDA its default ``foreach`` path allocates the
  weight-decayed gradients of all parameters at once, then every momentum buffer.
- On the CPU, each convolution's copies to and from oneDNN's blocked layouts (sizes in
  ``_Replay.conv``), channels padded to a whole block: 8, or 16 where oneDNN runs its AVX-512
  kernels (``cpu_channel_block``). So the CPU prediction depends on the processor: one step of
  densenet-c-7-k4-drop0.2 (4 to 16 channels), batch 8, peaks 6% higher with AVX-512 kernels.
- Small per-op buffers inside kernels (oneDNN scratchpads, reductions) are not modelled; the
  CPU allocator's measured peak includes them, which is why the prediction runs slightly low.

On a GPU the same prediction is checked against ``torch.cuda.max_memory_allocated()`` after
``torch.cuda.reset_peak_memory_stats()`` around one step (the caching allocator rounds each
block up to 512 bytes, a fraction of a percent here); on CPU against the allocator's events
recorded by ``torch.profiler`` (``dnas.profile.cpu_peak_bytes``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from dnas.spec import DenseNetSpec, Spec, WRNSpec

FLOAT = 4  # bytes per fp32 element


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step; ``peak`` is what the step needs at its highest point."""

    weights: int
    gradients: int  # one per parameter, held from the backward pass on
    optimizer: int  # SGD momentum buffers, allocated by the first step
    activations: int  # kept for the backward pass, at the end of the forward pass
    peak: int  # weights + the highest live total during the step
    phase: str  # where the peak falls: forward, backward or optimizer


class _Buf:
    """One block of memory; ``refs`` counts Python references and saved-for-backward holds."""

    __slots__ = ("nbytes", "refs")

    def __init__(self, nbytes: int) -> None:
        self.nbytes, self.refs = nbytes, 1


class _T:
    """A tensor of the replay: its shape (C, H, W) per image, and the buffer it lives in."""

    __slots__ = ("shape", "buf", "grad", "needs_grad")

    def __init__(self, shape: tuple[int, int, int], buf: _Buf | None, needs_grad: bool) -> None:
        self.shape, self.buf, self.needs_grad, self.grad = shape, buf, needs_grad, None


class _Node:
    """A backward node: the tensors it reads gradients from and writes them to, what it keeps,
    the parameter gradients it allocates, and how it hands gradients to its inputs."""

    __slots__ = ("outs", "ins", "saved", "params", "kind", "scratch", "recompute")

    def __init__(self, outs, ins, saved, params, kind, scratch=0) -> None:  # noqa: ANN001
        self.outs, self.ins, self.saved, self.params = outs, ins, saved, params
        self.kind = kind  # "alloc": new gradients; "views": slices of its own; "same": shared
        self.scratch = scratch  # bytes its backward allocates and frees before it returns
        self.recompute = None  # a checkpointed region: the tensors to recompute first


class _Replay:
    """Live bytes through one training step of a batch of ``n``."""

    def __init__(self, n: int, device: str, block: int = 8) -> None:
        self.n, self.device, self.block = n, device, block
        self.live = self.peak = 0
        self.phase = "forward"
        self.peak_phase = "forward"
        self.nodes: list[_Node] = []
        self.region: list[_T] | None = None  # tensors made inside a checkpointed region
        self.region_nodes: list[_Node] = []
        self.held: list[_Buf] = []  # checkpoint inputs, held until the backward pass ends

    # ---- memory

    def _bytes(self, shape: tuple[int, int, int], size: int = FLOAT) -> int:
        c, h, w = shape
        return self.n * c * h * w * size

    def _blocked(self, shape: tuple[int, int, int]) -> int:
        """Bytes of a oneDNN blocked-layout copy: channels padded to a whole block."""
        c, h, w = shape
        return self._bytes((-(-c // self.block) * self.block, h, w))

    def alloc(self, nbytes: int) -> _Buf:
        self.live += nbytes
        if self.live > self.peak:
            self.peak, self.peak_phase = self.live, self.phase
        return _Buf(nbytes)

    def release(self, buf: _Buf | None) -> None:
        if buf is None:
            return
        buf.refs -= 1
        if buf.refs == 0:
            self.live -= buf.nbytes

    def new(self, shape: tuple[int, int, int], size: int = FLOAT) -> _T:
        t = _T(shape, self.alloc(self._bytes(shape, size)), True)
        if self.region is not None:
            self.region.append(t)
        return t

    def drop(self, *ts: _T) -> None:
        """Python lets go of these tensors."""
        for t in ts:
            self.release(t.buf)

    def node(self, outs, ins, saved=(), params=0, kind="alloc", scratch=0) -> None:  # noqa: ANN001
        ins = [t for t in ins if t.needs_grad]
        if self.region is None:
            for t in saved:
                t.buf.refs += 1
        node = _Node(list(outs), ins, list(saved), params, kind, scratch)
        if self.region is not None:
            self.region_nodes.append(node)
        self.nodes.append(node)

    # ---- ops (each as PyTorch's CPU/CUDA kernels allocate and save)

    def input(self, shape: tuple[int, int, int]) -> _T:
        return _T(shape, None, False)

    def conv(self, x: _T, out_c: int, kernel: int, stride: int = 1) -> _T:
        c, h, w = x.shape
        pad = kernel // 2
        h2, w2 = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
        i, o = self._blocked(x.shape), self._blocked((out_c, h2, w2))
        cpu = self.device == "cpu"
        # oneDNN on CPU converts tensors to and from its own blocked layouts (channels in
        # blocks of 8, or 16 with AVX-512, the last block padded). Measured on single
        # convolutions with torch.profiler's memory events (torch 2.14, x86-64, AVX2 and
        # AVX-512; the whole networks are checked by benchmarks/bench_memory_model.py): the
        # forward pass holds one more buffer of the larger of input and output, the backward
        # pass copies of its input and output gradient (stride 1) or two input-sized buffers
        # (stride 2).
        scratch = self.alloc(max(i, o) if stride == 1 else i) if cpu else None
        y = self.new((out_c, h2, w2))
        self.release(scratch)
        back = (i + o if stride == 1 else 2 * i) if cpu else 0
        self.node([y], [x], [x] if x.buf else [], c * out_c * kernel * kernel, scratch=back)
        return y

    def bn(self, x: _T) -> _T:
        c = x.shape[0]
        y = self.new(x.shape)
        stats = _T((c, 1, 1), self.alloc(2 * c * FLOAT), False)  # save_mean, save_invstd
        self.node([y], [x], [x, stats], 2 * c)
        self.release(stats.buf)
        return y

    def relu(self, x: _T, inplace: bool) -> _T:
        y = _T(x.shape, x.buf, True) if inplace else self.new(x.shape)  # in place: x's memory
        self.node([y], [x], [y])
        return y

    def dropout(self, x: _T) -> _T:
        size = 1 if self.device == "cuda" else FLOAT  # CUDA: a bool mask; CPU: float noise
        noise = self.new(x.shape, size)
        y = self.new(x.shape)
        self.node([y], [x], [noise])
        self.drop(noise)
        return y

    def cat(self, xs: list[_T]) -> _T:
        y = self.new((sum(t.shape[0] for t in xs), *xs[0].shape[1:]))
        self.node([y], xs, (), 0, "views")
        return y

    def add(self, a: _T, b: _T) -> _T:
        y = self.new(a.shape)
        self.node([y], [a, b], (), 0, "same")
        return y

    def avgpool(self, x: _T) -> _T:
        c, h, w = x.shape
        y = self.new((c, h // 2, w // 2))
        self.node([y], [x], [x])
        return y

    def maxpool(self, x: _T) -> _T:  # 3x3, stride 2, padding 1
        c, h, w = x.shape
        shape = (c, (h - 1) // 2 + 1, (w - 1) // 2 + 1)
        y = self.new(shape)
        idx = _T(shape, self.alloc(self._bytes(shape, 8)), False)  # int64 indices
        self.node([y], [x], [x, idx])
        self.release(idx.buf)
        return y

    def head_and_loss(self, x: _T, classes: int) -> None:
        """BN-ReLU-global average pool-linear, then cross-entropy (log-softmax + NLL)."""
        c = x.shape[0]
        y = self.relu(self.bn(x), inplace=True)
        self.drop(x)
        pooled = self.new((c, 1, 1))
        self.node([pooled], [y], [y])
        self.drop(y)
        logits = self.new((classes, 1, 1))
        self.node([logits], [pooled], [pooled], c * classes + classes)
        self.drop(pooled)
        logp = self.new((classes, 1, 1))
        self.node([logp], [logits], [logp])
        self.drop(logits)
        loss = _T((1, 1, 1), self.alloc(FLOAT), True)
        self.node([loss], [logp], ())
        self.drop(logp)
        self.loss = loss

    # ---- checkpointed regions (memory-efficient DenseNet)

    def begin_region(self) -> None:
        self.region, self.region_nodes = [], []

    def end_region(self, inputs: list[_T], out: _T) -> None:
        """Forward of a checkpointed region is done: what its nodes saved is not kept (it is
        recomputed in backward), and its inputs are held until the step ends."""
        made, nodes = self.region, self.region_nodes
        self.region = None
        for t in inputs:
            t.buf.refs += 1
            self.held.append(t.buf)
        kept = [t for t in made if t is not out]
        for node in nodes:  # (the BN statistics, a few bytes per channel, are left out)
            node.saved = [t for t in node.saved if t in kept]
        nodes[-1].recompute = (kept, nodes)  # the region's newest node runs first in backward

    def _recompute(self, kept: list[_T], nodes: list[_Node]) -> None:
        for t in kept:
            holders = sum(t in n.saved for n in nodes)
            if holders:
                t.buf = self.alloc(t.buf.nbytes)
                t.buf.refs = holders

    # ---- backward and the optimizer

    def backward(self, params: list[int], cuda_foreach: bool) -> None:
        self.phase = "backward"
        self.loss.grad = self.alloc(FLOAT)
        for node in reversed(self.nodes):
            if node.recompute:
                self._recompute(*node.recompute)
            g = node.outs[0].grad
            if g is None:
                continue
            if node.params:
                self.alloc(node.params * FLOAT)  # kept as .grad
            if node.kind == "alloc":
                grads = [self.alloc(self._bytes(t.shape)) for t in node.ins]
            else:
                grads = []
                for _ in node.ins:
                    g.refs += 1
                    grads.append(g)
            if node.scratch:
                self.release(self.alloc(node.scratch))
            self.release(g)
            for t in node.saved:
                self.release(t.buf)
            node.saved = []
            for t, gi in zip(node.ins, grads):
                self._accumulate(t, gi)
        for buf in self.held:  # the graph, and the checkpoints' inputs, go with the loss
            self.release(buf)
        self.phase = "optimizer"
        self._optimizer(params, cuda_foreach)

    def _accumulate(self, t: _T, g: _Buf) -> None:
        if t.grad is None:
            t.grad = g
        elif t.grad.refs == 1 or g.refs == 1:  # in place into the unshared one
            keep, other = (t.grad, g) if t.grad.refs == 1 else (g, t.grad)
            t.grad = keep
            self.release(other)
        else:
            new = self.alloc(self._bytes(t.shape))
            self.release(t.grad)
            self.release(g)
            t.grad = new

    def _optimizer(self, params: list[int], foreach: bool) -> None:
        total = sum(params) * FLOAT
        if foreach:
            self.alloc(total)  # grad + weight_decay * param, for every parameter
            self.alloc(total)  # momentum buffers (the Nesterov sum is in place)
            return
        for p in params:
            b = p * FLOAT
            decayed = self.alloc(b)
            self.alloc(b)  # the momentum buffer, kept
            summed = self.alloc(b)  # grad + momentum * buf (Nesterov)
            self.release(decayed)
            self.release(summed)


def _densenet(r: _Replay, spec: DenseNetSpec, hw: tuple[int, int], memory_efficient: bool):
    x = r.input((spec.in_channels, *hw))
    if spec.stem == "cifar":
        f = r.conv(x, spec.stem_channels, 3)
    else:
        f = r.conv(x, spec.stem_channels, 7, 2)
        y = r.relu(r.bn(f), inplace=True)
        r.drop(f)
        f = r.maxpool(y)
        r.drop(y)
    blocks = spec.block_channels()
    for i, ((_, c_out), n) in enumerate(zip(blocks, spec.block_layers), start=1):
        features = [f]
        for _ in range(n):
            features.append(_dense_layer(r, spec, features, memory_efficient))
        f = r.cat(features)
        r.drop(*features)
        if i < len(blocks):
            y = r.relu(r.bn(f), inplace=True)
            r.drop(f)
            t = r.conv(y, spec.transition_out(c_out), 1)
            r.drop(y)
            if spec.dropout:
                t2 = r.dropout(t)
                r.drop(t)
                t = t2
            f = r.avgpool(t)
            r.drop(t)
    r.head_and_loss(f, spec.num_classes)


def _dense_layer(r: _Replay, spec: DenseNetSpec, features: list[_T], efficient: bool) -> _T:
    first_out = spec.bottleneck_width if spec.bottleneck else spec.growth_rate
    kernel = 1 if spec.bottleneck else 3
    if efficient:
        r.begin_region()
    x = r.cat(features)
    y = r.relu(r.bn(x), inplace=True)
    r.drop(x)
    out = r.conv(y, first_out, kernel)
    r.drop(y)
    if efficient:
        r.end_region(features, out)
    if spec.bottleneck:
        if spec.dropout:
            d = r.dropout(out)
            r.drop(out)
            out = d
        z = r.relu(r.bn(out), inplace=True)
        r.drop(out)
        out = r.conv(z, spec.growth_rate, 3)
        r.drop(z)
    if spec.dropout:
        d = r.dropout(out)
        r.drop(out)
        out = d
    return out


def _wrn(r: _Replay, spec: WRNSpec, hw: tuple[int, int]) -> None:
    x = r.input((spec.in_channels, *hw))
    x = r.conv(x, 16, 3)
    c = 16
    for width, stride in zip(spec.widths, (1, 2, 2)):
        for b in range(spec.blocks_per_group):
            s = stride if b == 0 else 1
            o = r.bn(x)
            out = r.relu(o, inplace=False)
            r.drop(o)
            if c != width:
                shortcut = r.conv(out, width, 1, s)
            else:
                shortcut = x
                x.buf.refs += 1
            y = out
            for j, kernel in enumerate(spec.block):
                if j > 0:
                    z = r.relu(r.bn(y), inplace=True)
                    r.drop(y)
                    if spec.dropout:
                        d = r.dropout(z)
                        r.drop(z)
                        z = d
                    y = z
                nxt = r.conv(y, width, kernel, s if j == spec.stride_conv else 1)
                r.drop(y)
                y = nxt
            out2 = r.add(y, shortcut)
            r.drop(y, shortcut, x)
            x, c = out2, width
    r.head_and_loss(x, spec.num_classes)


@functools.cache
def cpu_channel_block() -> int:
    """Channels per block of oneDNN's blocked layouts on this CPU: 16 where its AVX-512 kernels
    run (the CPU has AVX-512 and ``ONEDNN_MAX_CPU_ISA`` does not cap it lower), else 8."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL"
    if cap.upper() not in ("ALL", "DEFAULT") and not cap.upper().startswith(("AVX512", "AVX10")):
        return 8
    try:
        with open("/proc/cpuinfo") as f:  # Linux; elsewhere oneDNN's layouts are not modelled
            return 16 if any(ln.startswith("flags") and " avx512f" in ln for ln in f) else 8
    except OSError:
        return 8


def training_memory(
    spec: Spec,
    batch_size: int,
    input_size: tuple[int, int] = (32, 32),
    memory_efficient: bool = False,
    device: str = "cpu",
    cpu_block: int | None = None,
) -> MemoryEstimate:
    """Predicted peak memory of one fp32 training step (SGD, Nesterov momentum, weight decay).

    ``memory_efficient`` applies to DenseNets only (WRNs have one variant). ``device`` selects
    the kernels' and optimizer's behaviour: "cpu" or "cuda" (see the module docstring).
    ``cpu_block``: channels per block of oneDNN's layouts on the CPU [default: this machine's,
    ``cpu_channel_block()``].
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if cpu_block not in (None, 8, 16):
        raise ValueError(f"cpu_block must be 8 or 16, got {cpu_block!r}")
    r = _Replay(batch_size, device, cpu_block or cpu_channel_block())
    if isinstance(spec, DenseNetSpec):
        _densenet(r, spec, input_size, memory_efficient)
    else:
        _wrn(r, spec, input_size)
    params = [p for n in r.nodes for p in ([n.params] if n.params else [])]
    weights = sum(params) * FLOAT
    activations = r.live
    r.backward(params, device == "cuda")
    return MemoryEstimate(
        weights=weights,
        gradients=weights,
        optimizer=weights,
        activations=activations,
        peak=weights + r.peak,
        phase=r.peak_phase,
    )
