"""The model zoo: Tensat's benchmark models at Tensat's shapes, and real-world blocks.

Every model is built in plain ONNX (opset 17) with seeded random weights, scaled so that
activations stay finite and far from overflow (He initialisation for convolutions, batch-norm
statistics with positive variance, ``1/sqrt(fan_in)`` for matmuls), so comparing the outputs of
two versions of a model in onnxruntime is a meaningful check.

Tensat's models (see ``FIELD-NOTES.md``, "Tensat's benchmark models") follow Tensat's graphs
where Tensat has its own version (``bert``, ``nasrnn``, ``nasneta``) and the standard
architectures elsewhere, written the way PyTorch exports them in inference mode: Conv (no bias)
+ BatchNormalization + Relu where the standard model has batch norm, Gemm for a linear layer,
Clip for ReLU6. ``batch_norm=False`` gives Tensat's batch-norm-free form of a CNN.

The real-world blocks are written as torch exports them: MatMul + Add for linear layers,
Reshape/Transpose for attention heads, LayerNormalization, GELU in its Erf (BERT) or tanh
(GPT-2) form.

    model = build("resnet50")                          # Tensat's shape
    small = build("resnet50", image=32, width=0.25)    # size overrides
    for entry in list_models(): print(entry.name, entry.description)
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto

from eqsat_dnn.errors import InputError
from eqsat_dnn.models.builder import ModelBuilder, Shape

OPSET = 17



@dataclass(frozen=True)
class ZooModel:
    """One entry of the zoo."""

    name: str
    description: str
    family: str
    """``tensat`` (Tensat's benchmark suite) or ``real-world``."""
    builder: Callable[..., onnx.ModelProto]
    tensat_speedup: float | None = None
    """Tensat's published speedup as ``(orig - opt) / orig`` (2024 re-run, GPU cost model)."""
    tensat_seconds: float | None = None
    """Tensat's published optimizer time in seconds."""

    @property
    def overrides(self) -> dict[str, Any]:
        """The size overrides :func:`build` accepts for this model, with their defaults."""
        return {name: p.default for name, p in inspect.signature(self.builder).parameters.items()
                if name != "seed"}


# ---------------------------------------------------------------------------
# the builder


class _Builder(ModelBuilder):
    """The shared builder plus one method per op and layer the zoo writes."""

    def __init__(self, name: str, seed: int) -> None:
        super().__init__(name, seed, opset=OPSET, ir_version=8, producer="eqsat-dnn zoo")

    def op(self, op_type: str, inputs: Sequence[str], shape: Shape, out: str | None = None,
           dtype: int | None = None, **attrs: Any) -> str:
        name = self.fresh(out or op_type.lower())
        self.node(op_type, inputs, [name], name=f"/{name}/{op_type}", **attrs)
        self.shapes[name] = tuple(shape)
        self.dtypes[name] = self.dtypes[inputs[0]] if dtype is None else dtype
        return name

    def scalar(self, value: float, base: str = "c") -> str:
        """A float32 constant of shape [1]: the zoo's scalars have always had one dim (they went
        through ``np.ascontiguousarray``, which makes a 0-d array 1-d), and a zoo model is the same
        bytes for a seed from one version to the next."""
        return self.const(np.array([value], dtype=np.float32), base)

    # elementwise and shape ops ------------------------------------------------

    def binary(self, op_type: str, a: str, b: str, out: str | None = None) -> str:
        return self.op(op_type, [a, b], _broadcast(self.shapes[a], self.shapes[b]), out)

    def add(self, a: str, b: str, out: str | None = None) -> str:
        return self.binary("Add", a, b, out)

    def mul(self, a: str, b: str, out: str | None = None) -> str:
        return self.binary("Mul", a, b, out)

    def unary(self, op_type: str, x: str, out: str | None = None, **attrs: Any) -> str:
        return self.op(op_type, [x], self.shapes[x], out, **attrs)

    def relu6(self, x: str) -> str:
        return self.op("Clip", [x, self.scalar(0.0, "zero"), self.scalar(6.0, "six")], self.shapes[x], "relu6")

    def concat(self, xs: Sequence[str], axis: int, out: str | None = None) -> str:
        shape = list(self.shapes[xs[0]])
        axis %= len(shape)
        shape[axis] = sum(self.shapes[x][axis] for x in xs)
        return self.op("Concat", xs, tuple(shape), out, axis=axis)

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.op("Reshape", [x, self.ints(shape, "shape")], tuple(shape))

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self.op("Transpose", [x], tuple(self.shapes[x][p] for p in perm), perm=list(perm))

    def matmul(self, a: str, b: str, out: str | None = None) -> str:
        sa, sb = self.shapes[a], self.shapes[b]
        if sa[-1] != sb[-2]:
            raise ValueError(f"MatMul of {list(sa)} and {list(sb)}")
        batch = _broadcast(sa[:-2], sb[:-2]) if len(sa) > 2 or len(sb) > 2 else ()
        return self.op("MatMul", [a, b], (*batch, sa[-2], sb[-1]), out)

    # layers -------------------------------------------------------------------

    def linear(self, x: str, features: int, bias: bool = True, std: float | None = None,
               base: str = "linear") -> str:
        """``x @ W (+ b)`` as torch exports ``nn.Linear`` on a 3-D input: MatMul then Add."""
        fan_in = self.shapes[x][-1]
        w = self.weight((fan_in, features), std if std is not None else 1.0 / math.sqrt(fan_in), f"{base}.weight")
        y = self.matmul(x, w, base)
        return self.add(y, self.weight((features,), 0.02, f"{base}.bias"), f"{base}_bias") if bias else y

    def layer_norm(self, x: str, epsilon: float, base: str = "ln") -> str:
        hidden = self.shapes[x][-1]
        scale = self.uniform((hidden,), 0.8, 1.2, f"{base}.weight")
        bias = self.weight((hidden,), 0.02, f"{base}.bias")
        return self.op("LayerNormalization", [x, scale, bias], self.shapes[x], base, axis=-1, epsilon=epsilon)

    def conv(self, x: str, channels: int, kernel: int | tuple[int, int], stride: int = 1,
             pads: int | tuple[int, int] | None = None, groups: int = 1, bias: bool = False,
             batch_norm: bool = True, act: str | None = "relu", epsilon: float = 1e-5, base: str = "conv") -> str:
        """Conv (+ BatchNormalization) (+ Relu / Clip), as PyTorch exports a conv block in eval mode.

        ``pads`` is per spatial axis, symmetric; the default keeps ``ceil(size / stride)``."""
        n, c, h, w = self.shapes[x]
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        ph, pw = (kh // 2, kw // 2) if pads is None else ((pads, pads) if isinstance(pads, int) else pads)
        fan_in = c // groups * kh * kw
        # He initialisation keeps the second moment through a ReLU; without one, 1/fan_in keeps it
        gain = 2.0 if act else 1.0
        weight = self.weight((channels, c // groups, kh, kw), math.sqrt(gain / fan_in), f"{base}.weight")
        inputs = [x, weight] + ([self.weight((channels,), 0.02, f"{base}.bias")] if bias else [])
        shape = (n, channels, _out_size(h, kh, stride, ph, ph), _out_size(w, kw, stride, pw, pw))
        y = self.op("Conv", inputs, shape, base, group=groups, kernel_shape=[kh, kw], pads=[ph, pw, ph, pw],
                    strides=[stride, stride])
        if batch_norm:
            params = [self.uniform((channels,), 0.5, 1.5, f"{base}.bn.weight"),
                      self.weight((channels,), 0.1, f"{base}.bn.bias"),
                      self.weight((channels,), 0.1, f"{base}.bn.running_mean"),
                      self.uniform((channels,), 0.5, 1.5, f"{base}.bn.running_var")]
            y = self.op("BatchNormalization", [y, *params], shape, f"{base}_bn", epsilon=epsilon, momentum=0.9)
        if act == "relu":
            y = self.unary("Relu", y, f"{base}_relu")
        elif act == "relu6":
            y = self.relu6(y)
        return y

    def pool(self, op_type: str, x: str, kernel: int, stride: int, pad: int = 0, ceil: bool = False,
             **attrs: Any) -> str:
        n, c, h, w = self.shapes[x]
        shape = (n, c, _out_size(h, kernel, stride, pad, pad, ceil), _out_size(w, kernel, stride, pad, pad, ceil))
        return self.op(op_type, [x], shape, op_type.lower(), kernel_shape=[kernel, kernel],
                       strides=[stride, stride], pads=[pad] * 4, ceil_mode=int(ceil), **attrs)

    def max_pool(self, x: str, kernel: int, stride: int, pad: int = 0, ceil: bool = False) -> str:
        return self.pool("MaxPool", x, kernel, stride, pad, ceil)

    def avg_pool(self, x: str, kernel: int, stride: int, pad: int = 0, count_include_pad: bool = False) -> str:
        return self.pool("AveragePool", x, kernel, stride, pad, count_include_pad=int(count_include_pad))

    def classifier(self, x: str, classes: int) -> str:
        """Global average pool, flatten, and a linear layer (Gemm, as torch exports it)."""
        n, c = self.shapes[x][:2]
        pooled = self.op("GlobalAveragePool", [x], (n, c, 1, 1), "avgpool")
        flat = self.op("Flatten", [pooled], (n, c), "flatten", axis=1)
        weight = self.weight((classes, c), 1.0 / math.sqrt(c), "fc.weight")
        bias = self.weight((classes,), 0.02, "fc.bias")
        return self.op("Gemm", [flat, weight, bias], (n, classes), "fc", transB=1)


def _broadcast(a: Shape, b: Shape) -> Shape:
    return tuple(np.broadcast_shapes(tuple(a), tuple(b)))


def _out_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, ceil: bool = False) -> int:
    span = size + pad_begin + pad_end - kernel
    steps = -(-span // stride) if ceil else span // stride
    if ceil and steps * stride >= size + pad_begin:  # the last window must start inside the input
        steps -= 1
    return steps + 1


def _scaled(channels: int, width: float, multiple: int = 1) -> int:
    """``channels * width``, at least ``multiple``, rounded to a multiple of ``multiple``."""
    return max(multiple, int(round(channels * width / multiple)) * multiple)


# ---------------------------------------------------------------------------
# Tensat's models


def bert(seed: int = 0, seq: int = 64, hidden: int = 1024, heads: int = 16, layers: int = 8) -> onnx.ModelProto:
    """Tensat's BERT: ``layers`` attention blocks over ``x: [seq, hidden]``.

    As in Tensat's graph: the input goes through a Relu; each block computes ``q, k, v = x @ W``,
    reshapes them to ``[seq, heads, hidden/heads]``, transposes to heads first, and computes
    ``(q @ k) @ v`` (no softmax, scaling or normalization), back to ``[seq, hidden]``; the next
    block's input is ``x @ W_linear`` (of the block's input, as in Tensat), and the eight block
    outputs are concatenated along axis 0."""
    if hidden % heads or hidden // heads != seq:
        # Tensat multiplies q @ k with k heads-first but not transposed: square only if seq = head
        raise InputError(f"bert: hidden / heads ({hidden} / {heads}) must equal seq ({seq}), as in Tensat's graph")
    b = _Builder("bert", seed)
    head = hidden // heads
    x = b.unary("Relu", b.input("x", (seq, hidden)), "x_relu")
    # q and k are scaled down so that (q @ k) @ v, cubic in x, stays of order one
    qkv_std = (head * seq) ** (-1 / 6) / math.sqrt(hidden)
    outputs = []
    for layer in range(layers):
        heads_first = []
        for which in "qkv":
            y = b.matmul(x, b.weight((hidden, hidden), qkv_std, f"l{layer}.w_{which}"), f"l{layer}_{which}")
            heads_first.append(b.transpose(b.reshape(y, (seq, heads, head)), (1, 0, 2)))
        q, k, v = heads_first
        scores = b.matmul(q, k, f"l{layer}_logits")
        out = b.matmul(scores, v, f"l{layer}_out")
        outputs.append(b.reshape(b.transpose(out, (1, 0, 2)), (seq, hidden)))
        if layer + 1 < layers:
            x = b.matmul(x, b.weight((hidden, hidden), 1.0 / math.sqrt(hidden), f"l{layer}.w_linear"),
                         f"l{layer}_next")
    y = b.concat(outputs, 0, "y") if len(outputs) > 1 else outputs[0]
    return b.model([y], f"Tensat's BERT: {layers} attention blocks over [{seq}, {hidden}], {heads} heads")


def nasrnn(seed: int = 0, steps: int = 5, hidden: int = 512) -> onnx.ModelProto:
    """Tensat's NasRNN: ``steps`` NAS recurrent cells over inputs ``x_t: [1, hidden]``.

    Each cell computes eight ``x @ W1 + h @ W2`` terms and combines them with Relu, Sigmoid,
    Tanh, Add and Mul as in Tensat's graph; the initial state is a weight."""
    b = _Builder("nasrnn", seed)
    xs = [b.input(f"x{t}", (1, hidden)) for t in range(steps)]
    state = b.weight((1, hidden), 1.0, "h0")
    std = 1.0 / math.sqrt(2 * hidden)  # x @ W1 + h @ W2 of unit variance
    for t, x in enumerate(xs):
        terms = []
        for i in range(8):
            wx = b.matmul(x, b.weight((hidden, hidden), std, f"t{t}.w{i}_x"))
            wh = b.matmul(state, b.weight((hidden, hidden), std, f"t{t}.w{i}_h"))
            terms.append(b.add(wx, wh, f"t{t}_term{i}"))
        u = lambda op, v: b.unary(op, v)  # noqa: E731
        m0 = b.add(u("Relu", terms[0]), u("Sigmoid", terms[3]))
        m1 = b.add(u("Sigmoid", terms[1]), u("Tanh", terms[2]))
        m2 = b.mul(u("Sigmoid", terms[4]), u("Tanh", terms[5]))
        m3 = b.mul(u("Sigmoid", terms[6]), u("Relu", terms[7]))
        m4 = b.add(u("Sigmoid", m1), u("Tanh", m2))
        m5 = b.mul(u("Tanh", m0), u("Tanh", m3))
        m6 = b.mul(u("Tanh", m4), u("Tanh", m5))
        state = b.unary("Tanh", m6, f"h{t + 1}")
    return b.model([state], f"Tensat's NasRNN: {steps} steps, hidden {hidden}")


def _stem(b: _Builder, x: str, channels: int, batch_norm: bool) -> str:
    """7x7/2 convolution and 3x3/2 max pool."""
    y = b.conv(x, channels, 7, stride=2, batch_norm=batch_norm, base="stem")
    return b.max_pool(y, 3, 2, pad=1)


def _bottleneck(b: _Builder, x: str, width: int, out: int, stride: int, groups: int, batch_norm: bool,
                base: str) -> str:
    """1x1 -> (grouped) 3x3 (stride here, as torchvision) -> 1x1, a projection where the shape
    changes, add, relu."""
    y = b.conv(x, width, 1, batch_norm=batch_norm, base=f"{base}.conv1")
    y = b.conv(y, width, 3, stride=stride, groups=groups, batch_norm=batch_norm, base=f"{base}.conv2")
    y = b.conv(y, out, 1, batch_norm=batch_norm, act=None, base=f"{base}.conv3")
    if stride > 1 or b.shapes[x][1] != out:
        x = b.conv(x, out, 1, stride=stride, pads=0, batch_norm=batch_norm, act=None, base=f"{base}.downsample")
    return b.unary("Relu", b.add(x, y, f"{base}_add"), f"{base}_out")


def _resnet_stages(b: _Builder, x: str, widths: Sequence[int], expansion: int, groups: int,
                   batch_norm: bool, blocks: Sequence[int] = (3, 4, 6, 3)) -> str:
    for stage, (count, width) in enumerate(zip(blocks, widths)):
        for i in range(count):
            stride = 2 if i == 0 and stage > 0 else 1
            x = _bottleneck(b, x, width, width * expansion, stride, groups, batch_norm, f"layer{stage + 1}.{i}")
    return x


def resnet50(seed: int = 0, image: int = 56, width: float = 1.0, batch_norm: bool = True,
             head: bool = False) -> onnx.ModelProto:
    """ResNet-50 after its stem, as Tensat ran it: input ``[1, 64, image, image]``, bottleneck
    stages of (3, 4, 6, 3) blocks; ``head=True`` adds the pool and the 1000-way classifier."""
    b = _Builder("resnet50", seed)
    x = b.input("x", (1, _scaled(64, width), image, image))
    y = _resnet_stages(b, x, [_scaled(c, width) for c in (64, 128, 256, 512)], 4, 1, batch_norm)
    if head:
        y = b.classifier(y, 1000)
    return b.model([y], f"ResNet-50 after the stem, input [1, 64, {image}, {image}]")


def resnext50(seed: int = 0, image: int = 224, width: float = 1.0, batch_norm: bool = True,
              head: bool = True) -> onnx.ModelProto:
    """ResNeXt-50 32x4d: 7x7/2 stem, 3x3/2 max pool, stages of (3, 4, 6, 3) blocks of widths
    128/256/512/1024 with 32 groups, then the classifier (``head``)."""
    b = _Builder("resnext50", seed)
    groups = 32
    x = b.input("x", (1, 3, image, image))
    y = _stem(b, x, _scaled(64, width), batch_norm)
    y = _resnet_stages(b, y, [_scaled(c, width, groups) for c in (128, 256, 512, 1024)], 2, groups, batch_norm)
    if head:
        y = b.classifier(y, 1000)
    return b.model([y], f"ResNeXt-50 32x4d, input [1, 3, {image}, {image}]")


def _separable(b: _Builder, x: str, channels: int, kernel: int, stride: int, batch_norm: bool,
               base: str) -> str:
    """Tensat's separable convolution: a grouped (here depthwise) k x k conv, then a 1x1 conv."""
    groups = channels if b.shapes[x][1] % channels == 0 else 1
    y = b.conv(x, channels, kernel, stride=stride, groups=groups, batch_norm=False, act=None, base=f"{base}.dw")
    return b.conv(y, channels, 1, batch_norm=batch_norm, act=None, base=f"{base}.pw")


def _squeeze(b: _Builder, x: str, channels: int, batch_norm: bool, base: str) -> str:
    return b.conv(x, channels, 1, batch_norm=batch_norm, base=base)


def _fit(b: _Builder, current: str, x: str, batch_norm: bool, base: str) -> str:
    """Bring ``x`` to the channels (and, with a strided 3x3 conv, the size) of ``current``."""
    channels, size = b.shapes[current][1], b.shapes[current][2]
    if b.shapes[x][2] == size:
        return _squeeze(b, x, channels, batch_norm, base)
    return b.conv(x, channels, 3, stride=2, batch_norm=batch_norm, base=base)


def _normal_cell(b: _Builder, prev: str, cur: str, channels: int, batch_norm: bool, base: str) -> str:
    cur = _squeeze(b, cur, channels, batch_norm, f"{base}.squeeze")
    prev = _fit(b, cur, prev, batch_norm, f"{base}.fit")
    sep = lambda x, k, i: _separable(b, x, channels, k, 1, batch_norm, f"{base}.sep{i}")  # noqa: E731
    avg = lambda x: b.avg_pool(x, 3, 1, pad=1)  # noqa: E731
    pairs = [(sep(cur, 3, 0), cur), (sep(prev, 3, 1), sep(cur, 3, 2)), (avg(cur), prev),
             (avg(prev), avg(prev)), (sep(prev, 3, 3), sep(prev, 3, 4))]
    return b.concat([b.add(a, c) for a, c in pairs], 1, f"{base}_out")


def _reduction_cell(b: _Builder, prev: str, cur: str, channels: int, batch_norm: bool, base: str) -> str:
    cur = _squeeze(b, cur, channels, batch_norm, f"{base}.squeeze")
    prev = _fit(b, cur, prev, batch_norm, f"{base}.fit")
    sep = lambda x, k, s, i: _separable(b, x, channels, k, s, batch_norm, f"{base}.sep{i}")  # noqa: E731
    out0 = b.add(sep(prev, 7, 2, 0), sep(cur, 5, 2, 1))
    out1 = b.add(b.max_pool(cur, 3, 2, pad=1), sep(prev, 7, 2, 2))
    out2 = b.add(b.avg_pool(cur, 3, 2, pad=1), sep(prev, 5, 2, 3))
    out3 = b.add(b.max_pool(cur, 3, 2, pad=1), sep(out0, 3, 1, 4))
    out4 = b.add(b.avg_pool(out0, 3, 1, pad=1), out1)
    return b.concat([out0, out1, out2, out3, out4], 1, f"{base}_out")


def nasneta(seed: int = 0, image: int = 224, width: float = 1.0, cells: int = 5,
            batch_norm: bool = True) -> onnx.ModelProto:
    """Tensat's NasNet-A: 7x7/2 stem and 3x3/2 max pool, then 3 stages of ``cells`` normal cells
    and a reduction cell at 128, 256 and 512 channels; separable convs, 3x3 average pools,
    pairwise adds, a 5-way concat per cell (batch norm after each 1x1 conv unless
    ``batch_norm=False``)."""
    b = _Builder("nasneta", seed)
    x = b.input("x", (1, 3, image, image))
    y = _stem(b, x, _scaled(64, width), batch_norm)
    channels = _scaled(128, width)
    for stage in range(3):
        prev = cur = y
        for i in range(cells):
            prev, cur = cur, _normal_cell(b, prev, cur, channels, batch_norm, f"stage{stage}.normal{i}")
        channels *= 2
        y = _reduction_cell(b, prev, cur, channels, batch_norm, f"stage{stage}.reduction")
    return b.model([y], f"Tensat's NasNet-A, input [1, 3, {image}, {image}]")


def vgg19(seed: int = 0, image: int = 224, width: float = 1.0, batch_norm: bool = False,
          head: bool = False) -> onnx.ModelProto:
    """VGG-19: 16 3x3 convolutions (with bias) and ReLUs in 5 stages, each ending in a 2x2 max
    pool. ``head=True`` adds the three fully connected layers (123 M parameters, 490 MB)."""
    b = _Builder("vgg19", seed)
    y = b.input("x", (1, 3, image, image))
    for stage, (count, channels) in enumerate(zip((2, 2, 4, 4, 4), (64, 128, 256, 512, 512))):
        for i in range(count):
            y = b.conv(y, _scaled(channels, width), 3, bias=not batch_norm, batch_norm=batch_norm,
                       base=f"features.{stage}.{i}")
        y = b.max_pool(y, 2, 2)
    if head:
        n, c, h, w = b.shapes[y]
        y = b.op("Flatten", [y], (n, c * h * w), "flatten", axis=1)
        for i, features in enumerate((4096, 4096, 1000)):
            fan_in = b.shapes[y][1]
            weight = b.weight((features, fan_in), math.sqrt(2.0 / fan_in), f"classifier.{i}.weight")
            y = b.op("Gemm", [y, weight, b.weight((features,), 0.02, f"classifier.{i}.bias")], (n, features),
                     f"classifier{i}", transB=1)
            if i < 2:
                y = b.unary("Relu", y)
    return b.model([y], f"VGG-19, input [1, 3, {image}, {image}]")


def _fire(b: _Builder, x: str, squeeze: int, expand: int, base: str) -> str:
    s = b.conv(x, squeeze, 1, bias=True, batch_norm=False, base=f"{base}.squeeze")
    e1 = b.conv(s, expand, 1, bias=True, batch_norm=False, base=f"{base}.expand1x1")
    e3 = b.conv(s, expand, 3, bias=True, batch_norm=False, base=f"{base}.expand3x3")
    return b.concat([e1, e3], 1, f"{base}_out")


def squeezenet(seed: int = 0, image: int = 224, width: float = 1.0, head: bool = True) -> onnx.ModelProto:
    """SqueezeNet 1.1: 3x3/2 conv, eight Fire modules between ceil-mode max pools, and the
    convolutional classifier (1x1 conv to 1000, ReLU, global average pool, flatten)."""
    b = _Builder("squeezenet", seed)
    x = b.input("x", (1, 3, image, image))
    c = lambda n: _scaled(n, width)  # noqa: E731
    y = b.conv(x, c(64), 3, stride=2, pads=0, bias=True, batch_norm=False, base="features.0")
    fires = [[(16, 64), (16, 64)], [(32, 128), (32, 128)], [(48, 192), (48, 192), (64, 256), (64, 256)]]
    for stage, modules in enumerate(fires):
        y = b.max_pool(y, 3, 2, ceil=True)
        for i, (squeeze, expand) in enumerate(modules):
            y = _fire(b, y, c(squeeze), c(expand), f"fire{stage}.{i}")
    if head:
        y = b.conv(y, 1000, 1, pads=0, bias=True, batch_norm=False, base="classifier")
        n, k = b.shapes[y][:2]
        y = b.op("Flatten", [b.op("GlobalAveragePool", [y], (n, k, 1, 1), "avgpool")], (n, k), "logits", axis=1)
    return b.model([y], f"SqueezeNet 1.1, input [1, 3, {image}, {image}]")


def inception_v3(seed: int = 0, image: int = 299, width: float = 1.0, batch_norm: bool = True,
                 head: bool = True) -> onnx.ModelProto:
    """Inception-v3 (torchvision's, without the auxiliary classifier): the 5-conv stem, Mixed
    5b-5d (A), 6a (B), 6b-6e (C), 7a (D), 7b-7c (E), then the classifier."""
    b = _Builder("inception_v3", seed)
    c = lambda n: _scaled(n, width)  # noqa: E731

    def conv(x: str, channels: int, kernel: int | tuple[int, int], stride: int = 1,
             pads: int | tuple[int, int] = 0, base: str = "conv") -> str:
        return b.conv(x, c(channels), kernel, stride=stride, pads=pads, batch_norm=batch_norm, epsilon=1e-3,
                      base=base)

    def avg_branch(x: str, channels: int, base: str) -> str:
        return conv(b.avg_pool(x, 3, 1, pad=1, count_include_pad=True), channels, 1, base=base)

    def block_a(x: str, pool: int, base: str) -> str:
        b1 = conv(x, 64, 1, base=f"{base}.b1x1")
        b5 = conv(conv(x, 48, 1, base=f"{base}.b5x5_1"), 64, 5, pads=2, base=f"{base}.b5x5_2")
        b3 = conv(conv(conv(x, 64, 1, base=f"{base}.b3x3dbl_1"), 96, 3, pads=1, base=f"{base}.b3x3dbl_2"),
                  96, 3, pads=1, base=f"{base}.b3x3dbl_3")
        return b.concat([b1, b5, b3, avg_branch(x, pool, f"{base}.pool")], 1, f"{base}_out")

    def block_b(x: str, base: str) -> str:
        b3 = conv(x, 384, 3, stride=2, base=f"{base}.b3x3")
        d = conv(conv(conv(x, 64, 1, base=f"{base}.dbl_1"), 96, 3, pads=1, base=f"{base}.dbl_2"), 96, 3,
                 stride=2, base=f"{base}.dbl_3")
        return b.concat([b3, d, b.max_pool(x, 3, 2)], 1, f"{base}_out")

    def block_c(x: str, c7: int, base: str) -> str:
        b1 = conv(x, 192, 1, base=f"{base}.b1x1")
        y = conv(x, c7, 1, base=f"{base}.b7_1")
        y = conv(y, c7, (1, 7), pads=(0, 3), base=f"{base}.b7_2")
        b7 = conv(y, 192, (7, 1), pads=(3, 0), base=f"{base}.b7_3")
        y = conv(x, c7, 1, base=f"{base}.dbl_1")
        for i, (kernel, pads) in enumerate((((7, 1), (3, 0)), ((1, 7), (0, 3)), ((7, 1), (3, 0)))):
            y = conv(y, c7, kernel, pads=pads, base=f"{base}.dbl_{i + 2}")
        d = conv(y, 192, (1, 7), pads=(0, 3), base=f"{base}.dbl_5")
        return b.concat([b1, b7, d, avg_branch(x, 192, f"{base}.pool")], 1, f"{base}_out")

    def block_d(x: str, base: str) -> str:
        b3 = conv(conv(x, 192, 1, base=f"{base}.b3_1"), 320, 3, stride=2, base=f"{base}.b3_2")
        y = conv(x, 192, 1, base=f"{base}.b7_1")
        y = conv(y, 192, (1, 7), pads=(0, 3), base=f"{base}.b7_2")
        y = conv(y, 192, (7, 1), pads=(3, 0), base=f"{base}.b7_3")
        b7 = conv(y, 192, 3, stride=2, base=f"{base}.b7_4")
        return b.concat([b3, b7, b.max_pool(x, 3, 2)], 1, f"{base}_out")

    def block_e(x: str, base: str) -> str:
        b1 = conv(x, 320, 1, base=f"{base}.b1x1")
        y = conv(x, 384, 1, base=f"{base}.b3_1")
        b3 = b.concat([conv(y, 384, (1, 3), pads=(0, 1), base=f"{base}.b3_2a"),
                       conv(y, 384, (3, 1), pads=(1, 0), base=f"{base}.b3_2b")], 1)
        y = conv(conv(x, 448, 1, base=f"{base}.dbl_1"), 384, 3, pads=1, base=f"{base}.dbl_2")
        d = b.concat([conv(y, 384, (1, 3), pads=(0, 1), base=f"{base}.dbl_3a"),
                      conv(y, 384, (3, 1), pads=(1, 0), base=f"{base}.dbl_3b")], 1)
        return b.concat([b1, b3, d, avg_branch(x, 192, f"{base}.pool")], 1, f"{base}_out")

    x = b.input("x", (1, 3, image, image))
    y = conv(x, 32, 3, stride=2, base="Conv2d_1a")
    y = conv(y, 32, 3, base="Conv2d_2a")
    y = conv(y, 64, 3, pads=1, base="Conv2d_2b")
    y = b.max_pool(y, 3, 2)
    y = conv(y, 80, 1, base="Conv2d_3b")
    y = conv(y, 192, 3, base="Conv2d_4a")
    y = b.max_pool(y, 3, 2)
    for name, pool in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
        y = block_a(y, pool, name)
    y = block_b(y, "Mixed_6a")
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        y = block_c(y, c7, name)
    y = block_d(y, "Mixed_7a")
    y = block_e(block_e(y, "Mixed_7b"), "Mixed_7c")
    if head:
        y = b.classifier(y, 1000)
    return b.model([y], f"Inception-v3, input [1, 3, {image}, {image}]")


def mobilenet_v2(seed: int = 0, image: int = 224, width: float = 1.0, batch_norm: bool = True,
                 head: bool = True) -> onnx.ModelProto:
    """MobileNet-v2 (torchvision's): 3x3/2 stem, 17 inverted residual blocks (1x1 expand,
    depthwise 3x3, linear 1x1 project, residual where shapes allow), 1x1 conv to 1280 with
    ReLU6 (Clip), then the classifier."""
    b = _Builder("mobilenet_v2", seed)
    c = lambda n: _scaled(n, width, 8)  # noqa: E731
    x = b.input("x", (1, 3, image, image))
    y = b.conv(x, c(32), 3, stride=2, batch_norm=batch_norm, act="relu6", base="features.0")
    index = 1
    for t, channels, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                              (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            stride = s if i == 0 else 1
            base = f"features.{index}"
            inp = y
            hidden = b.shapes[inp][1] * t
            if t != 1:
                y = b.conv(y, hidden, 1, batch_norm=batch_norm, act="relu6", base=f"{base}.expand")
            y = b.conv(y, hidden, 3, stride=stride, groups=hidden, batch_norm=batch_norm, act="relu6",
                       base=f"{base}.dw")
            y = b.conv(y, c(channels), 1, batch_norm=batch_norm, act=None, base=f"{base}.project")
            if stride == 1 and b.shapes[inp][1] == c(channels):
                y = b.add(inp, y, f"{base}_out")
            index += 1
    y = b.conv(y, c(1280) if width > 1 else 1280, 1, batch_norm=batch_norm, act="relu6",
               base=f"features.{index}")
    if head:
        y = b.classifier(y, 1000)
    return b.model([y], f"MobileNet-v2, input [1, 3, {image}, {image}]")


# ---------------------------------------------------------------------------
# real-world blocks


def _attention_heads(b: _Builder, x: str, heads: int, transpose_last: bool = False) -> str:
    """``[batch, seq, hidden]`` -> ``[batch, heads, seq, head]`` (or ``[batch, heads, head, seq]``)."""
    batch, seq, hidden = b.shapes[x]
    y = b.reshape(x, (batch, seq, heads, hidden // heads))
    return b.transpose(y, (0, 2, 3, 1) if transpose_last else (0, 2, 1, 3))


def _merge_heads(b: _Builder, x: str) -> str:
    batch, heads, seq, head = b.shapes[x]
    return b.reshape(b.transpose(x, (0, 2, 1, 3)), (batch, seq, heads * head))


def _projection(b: _Builder, x: str, features: int, lora_rank: int, lora_scale: float, base: str) -> str:
    """``x @ W + b``, plus an unmerged LoRA adapter ``((x @ A) @ B) * scale`` when ``lora_rank``."""
    y = b.linear(x, features, base=base)
    if not lora_rank:
        return y
    fan_in = b.shapes[x][-1]
    a = b.matmul(x, b.weight((fan_in, lora_rank), 1.0 / math.sqrt(fan_in), f"{base}.lora_A"), f"{base}_lora_a")
    up = b.matmul(a, b.weight((lora_rank, features), 0.1 / math.sqrt(lora_rank), f"{base}.lora_B"),
                  f"{base}_lora_b")
    return b.add(y, b.mul(up, b.scalar(lora_scale, f"{base}.lora_scale")), f"{base}_lora")


def _gelu_erf(b: _Builder, x: str) -> str:
    """``x * 0.5 * (1 + erf(x / sqrt(2)))``, as torch's TorchScript exporter writes GELU."""
    erf = b.unary("Erf", b.binary("Div", x, b.scalar(math.sqrt(2.0), "sqrt2")))
    return b.mul(b.mul(x, b.add(erf, b.scalar(1.0, "one"))), b.scalar(0.5, "half"))


def _gelu_tanh(b: _Builder, x: str) -> str:
    """GPT-2's ``gelu_new``: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    cube = b.binary("Pow", x, b.scalar(3.0, "three"))
    inner = b.mul(b.add(x, b.mul(cube, b.scalar(0.044715, "gelu_c"))), b.scalar(math.sqrt(2 / math.pi), "gelu_k"))
    t = b.add(b.unary("Tanh", inner), b.scalar(1.0, "one"))
    return b.mul(b.mul(b.scalar(0.5, "half"), x), t)


def _bert_layer(name: str, seed: int, seq: int, hidden: int, heads: int, intermediate: int, lora_rank: int,
                lora_scale: float) -> onnx.ModelProto:
    if hidden % heads:
        raise InputError(f"{name}: hidden {hidden} is not a multiple of heads {heads}")
    b = _Builder(name, seed)
    x = b.input("hidden_states", (1, seq, hidden))
    mask = b.input("attention_mask", (1, seq), TensorProto.INT64)
    # the extended mask: (1 - mask[:, None, None, :]) * finfo(float32).min
    m = b.op("Unsqueeze", [mask, b.ints([1, 2], "mask_axes")], (1, 1, 1, seq), "mask4d")
    m = b.op("Cast", [m], (1, 1, 1, seq), "mask_float", dtype=TensorProto.FLOAT, to=TensorProto.FLOAT)
    m = b.binary("Sub", b.scalar(1.0, "one"), m)
    m = b.mul(m, b.scalar(float(np.finfo(np.float32).min), "mask_min"), "extended_mask")
    proj = lambda v, f, base: _projection(b, v, f, lora_rank, lora_scale, base)  # noqa: E731
    q = _attention_heads(b, proj(x, hidden, "attention.query"), heads)
    k = _attention_heads(b, proj(x, hidden, "attention.key"), heads, transpose_last=True)
    v = _attention_heads(b, proj(x, hidden, "attention.value"), heads)
    scores = b.binary("Div", b.matmul(q, k, "scores"), b.scalar(math.sqrt(hidden // heads), "sqrt_head"))
    probs = b.unary("Softmax", b.add(scores, m), "probs", axis=-1)
    context = _merge_heads(b, b.matmul(probs, v, "context"))
    attn = proj(context, hidden, "attention.output")
    h = b.layer_norm(b.add(attn, x, "attention_residual"), 1e-12, "attention.LayerNorm")
    up = _gelu_erf(b, proj(h, intermediate, "intermediate"))
    down = proj(up, hidden, "output")
    y = b.layer_norm(b.add(down, h, "output_residual"), 1e-12, "output.LayerNorm")
    return b.model([y], f"{name}: [1, {seq}, {hidden}], {heads} heads, intermediate {intermediate}"
                   + (f", LoRA rank {lora_rank}" if lora_rank else ""))


def bert_layer(seed: int = 0, seq: int = 128, hidden: int = 768, heads: int = 12,
               intermediate: int = 3072) -> onnx.ModelProto:
    """One BERT-base encoder layer as torch exports it: MatMul + Add projections, Reshape /
    Transpose heads, scaled softmax attention with the extended padding mask, residuals,
    LayerNormalization, GELU in its Erf form. Inputs ``hidden_states [1, seq, hidden]`` and
    ``attention_mask [1, seq]`` (int64)."""
    return _bert_layer("bert_layer", seed, seq, hidden, heads, intermediate, 0, 0.0)


def lora_layer(seed: int = 0, seq: int = 128, hidden: int = 768, heads: int = 12, intermediate: int = 3072,
               rank: int = 8, alpha: float = 16.0) -> onnx.ModelProto:
    """The BERT-base encoder layer with an unmerged LoRA adapter on each of its six projections:
    ``x @ W + b + ((x @ A) @ B) * (alpha / rank)``."""
    return _bert_layer("lora_layer", seed, seq, hidden, heads, intermediate, rank, alpha / rank)


def gpt2_layer(seed: int = 0, seq: int = 128, hidden: int = 768, heads: int = 12) -> onnx.ModelProto:
    """One GPT-2 decoder layer as torch exports it: pre-LayerNorm, one fused QKV projection
    (MatMul + Add, then Split), causal mask (Where on a constant lower-triangular mask), scaled
    softmax attention, the tanh GELU with Pow, MatMul + Add everywhere (no Gemm), residuals.
    Input ``hidden_states [1, seq, hidden]``."""
    if hidden % heads:
        raise InputError(f"gpt2_layer: hidden {hidden} is not a multiple of heads {heads}")
    b = _Builder("gpt2_layer", seed)
    x = b.input("hidden_states", (1, seq, hidden))
    h = b.layer_norm(x, 1e-5, "ln_1")
    qkv = b.linear(h, 3 * hidden, base="attn.c_attn")
    split = b.ints([hidden] * 3, "split_sizes")
    names = [b.fresh(n) for n in ("query", "key", "value")]
    b.node("Split", [qkv, split], names, name="/attn/Split", axis=2)
    for n in names:
        b.shapes[n], b.dtypes[n] = (1, seq, hidden), TensorProto.FLOAT
    q = _attention_heads(b, names[0], heads)
    k = _attention_heads(b, names[1], heads, transpose_last=True)
    v = _attention_heads(b, names[2], heads)
    scores = b.binary("Div", b.matmul(q, k, "scores"), b.scalar(math.sqrt(hidden // heads), "sqrt_head"))
    causal = b.const(np.tril(np.ones((seq, seq), dtype=bool))[None, None], "attn.bias")
    masked = b.op("Where", [causal, scores, b.scalar(float(np.finfo(np.float32).min), "mask_min")],
                  b.shapes[scores], "masked_scores", dtype=TensorProto.FLOAT)
    probs = b.unary("Softmax", masked, "probs", axis=-1)
    attn = b.linear(_merge_heads(b, b.matmul(probs, v, "context")), hidden, base="attn.c_proj")
    r = b.add(x, attn, "attention_residual")
    up = _gelu_tanh(b, b.linear(b.layer_norm(r, 1e-5, "ln_2"), 4 * hidden, base="mlp.c_fc"))
    y = b.add(r, b.linear(up, hidden, base="mlp.c_proj"), "output")
    return b.model([y], f"GPT-2 decoder layer: [1, {seq}, {hidden}], {heads} heads")


# ---------------------------------------------------------------------------
# the catalogue

_ZOO: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("bert", "Tensat's BERT: 8 attention blocks (no softmax) over [64, 1024], 16 heads", "tensat",
             bert, 0.224, 2.1),
    ZooModel("nasrnn", "Tensat's NasRNN: 5 NAS cells, hidden 512, 16 matmuls per cell", "tensat",
             nasrnn, 0.102, 12.8),
    ZooModel("resnext50", "ResNeXt-50 32x4d with batch norm, [1, 3, 224, 224]", "tensat",
             resnext50, 0.271, 4.8),
    ZooModel("nasneta", "Tensat's NasNet-A: 3 x (5 normal + 1 reduction) cells, [1, 3, 224, 224]", "tensat",
             nasneta, 0.178, 1.5),
    ZooModel("resnet50", "ResNet-50 after the stem with batch norm, [1, 64, 56, 56]", "tensat",
             resnet50, 0.003, 4.7),
    ZooModel("vgg19", "VGG-19 convolutions (no FC head by default), [1, 3, 224, 224]", "tensat",
             vgg19, 0.125, 0.3),
    ZooModel("squeezenet", "SqueezeNet 1.1, [1, 3, 224, 224]", "tensat", squeezenet, 0.297, 7.5),
    ZooModel("inception_v3", "Inception-v3 with batch norm, [1, 3, 299, 299]", "tensat",
             inception_v3, 0.183, 2.8),
    ZooModel("mobilenet_v2", "MobileNet-v2 with batch norm and ReLU6, [1, 3, 224, 224]", "tensat",
             mobilenet_v2, -0.007, 3.4),
    ZooModel("bert_layer", "BERT-base encoder layer as torch exports it, [1, 128, 768] + mask", "real-world",
             bert_layer),
    ZooModel("gpt2_layer", "GPT-2 decoder layer (pre-LN, causal), [1, 128, 768]", "real-world", gpt2_layer),
    ZooModel("lora_layer", "BERT-base layer with unmerged rank-8 LoRA adapters on all 6 projections",
             "real-world", lora_layer),
)}

SUITE: tuple[str, ...] = tuple(_ZOO)
"""Every zoo model, in the order the benchmark runs them."""


def list_models() -> list[ZooModel]:
    """The zoo's models, Tensat's first."""
    return list(_ZOO.values())


def get(name: str) -> ZooModel:
    """A zoo entry by name (``-`` and ``_`` are the same)."""
    key = name.strip().lower().replace("-", "_")
    if key not in _ZOO:
        raise InputError(f"unknown zoo model {name!r} (choose from {', '.join(_ZOO)})")
    return _ZOO[key]


def build(name: str, seed: int = 0, **overrides: Any) -> onnx.ModelProto:
    """Build zoo model ``name`` with weights drawn from ``seed``; ``overrides`` change its sizes
    (see :attr:`ZooModel.overrides`), e.g. ``build("bert", layers=2, hidden=256)``."""
    entry = get(name)
    unknown = sorted(set(overrides) - set(entry.overrides))
    if unknown:
        raise InputError(f"{entry.name}: unknown size override {', '.join(unknown)} "
                         f"(choose from {', '.join(entry.overrides)})")
    try:
        return entry.builder(seed=seed, **overrides)
    except (ValueError, IndexError, ZeroDivisionError) as exc:  # sizes that make no valid model
        raise InputError(f"{entry.name}: cannot build with {overrides}: {exc}") from None
