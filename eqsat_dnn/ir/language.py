"""The tensor language: every operator the rules reason about, declared once.

Each :class:`OpSpec` says how an ONNX operator becomes an egglog constructor
(tensor inputs first, then attributes, in declaration order), how its output
shape follows from its inputs (a *shape kind*, from which egglog rules are
generated), and which of its ONNX inputs are really constant attributes
(``Reshape``'s shape, ``Slice``'s starts/ends, ...). Import, the e-graph prelude (:mod:`eqsat_dnn.ir.prelude`),
export, the cost model and the rule checker all read this table; the rule checker
(:mod:`eqsat_dnn.verify.sampling`) draws random instances of an op from what its spec declares
(the rank of its first input, a shape domain per input, a value domain per attribute, inputs
that must be positive, inputs that hold masks or indices), so a new op whose attributes and inputs fit those domains needs no
change to the checker.

Conventions inside the e-graph:

* sorts: ``T`` (a tensor), ``TL`` (a cons list of tensors), ``IVec`` (``Vec i64``), ``Dim``
  (one dimension: ``(Lit n)`` a size, ``(Sym "name")`` a symbolic one, ``(Unknown k)`` the k-th
  dimension with neither) and ``DVec`` (``Vec Dim``);
* a shape is in one of two functions, by what it holds. ``(shape t)`` is an ``IVec`` of sizes,
  for a shape whose every dimension is a size: rules read, compare and compute with it like any
  integers. ``(dims t)`` is a ``DVec``, for a shape with a symbolic or unknown dimension. A
  symbol is a ``Dim`` and never an integer, so no integer a model holds (a slice end, a reshape
  target, a pad, a split size) can be taken for one. The shape rules derive both; a ``dims``
  shape whose dimensions all turn out sizes (a slice or split along the one symbolic axis) gets
  its ``shape`` as well. A size of a ``dims`` shape is read as ``(dsize s k)``, a lookup (see
  :mod:`eqsat_dnn.ir.prelude`). The analysis of ``dims`` (its ``dims_prelude``) is loaded only
  where a model has such a shape, and there rule files, written over ``(shape t)``, also read
  ``(rank t)`` and ``(dims t)`` where they only compare shapes (:mod:`eqsat_dnn.eqsat.variants`);
* ``(dtype t)`` is the ONNX ``TensorProto`` element type number;
* ``(Input name)`` is a graph input, ``(Weight name)`` an initializer,
  ``(Absent)`` an omitted optional input;
* ``(Opaque key inputs k)`` is output ``k`` of a node the rules know nothing
  about; ``key`` names the original ``NodeProto``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

MAX_RANK = 6
"""Shape rules are generated for ranks up to this."""

CONTRIB = "com.microsoft"
"""onnxruntime's operator set of fused kernels (``MultiHeadAttention``, ``FastGelu``, ...)."""


class Target(str, Enum):
    """Where the optimized model runs, which decides the operator sets extraction may choose."""

    ONNXRUNTIME = "onnxruntime"
    """Standard ONNX plus onnxruntime's :data:`CONTRIB` kernels (the default)."""
    ONNX = "onnx"
    """Standard ONNX only: any runtime that implements the model's opset can run the output."""

    def admits(self, op: str) -> bool:
        """Whether a program for this target may hold vocabulary op ``op`` (an op of another operator
        set with a standard form may: export writes it so for this target)."""
        spec = OPS.get(op)
        return spec is None or not spec.domain or self is Target.ONNXRUNTIME or spec.standard_form


BOOL = 9
"""ONNX's element type of masks: what comparisons and logical ops output."""


class Values(str, Enum):
    """What the rule checker feeds a tensor input of an op (:attr:`OpSpec.input_values`)."""

    FLOAT = "float"
    """Random normal values of the instance's float type (or positive ones: :attr:`OpSpec.positive`)."""
    BOOL = "bool"
    """A random mask (a comparison's or a logical op's operand)."""
    INDEX = "index"
    """int64 indices valid along every axis of the op's first input (from 0 to below its
    smallest dim), whatever axis the op's attributes pick (Gather's, GatherND's)."""


@dataclass(frozen=True)
class Attr:
    """One attribute of an op, as an egglog argument.

    ``sort`` is ``i64``, ``f64``, ``String`` or ``IVec``. ``default`` is the
    ONNX default; ``"zeros"``/``"ones"`` mean a vector with one entry per
    spatial dimension (twice that for pads). ``from_input`` names the ONNX input
    position that carries the value as a constant tensor from opset
    ``input_since`` on (an attribute before that).

    ``domain`` is what the rule checker draws for it: a tuple of values (one picked at random;
    a value may repeat to weigh it), the name of a domain that depends on the op's input shapes
    (see :data:`eqsat_dnn.verify.sampling.DOMAINS`: ``"axis"``, ``"perm"``, ``"steps_2d"``,
    ...), or ``None`` for any value of the sort.
    """

    name: str
    sort: str
    default: Any = None
    from_input: int | None = None
    input_since: int = 1
    domain: tuple | str | None = None


@dataclass(frozen=True)
class OpSpec:
    """One operator of the vocabulary."""

    name: str
    inputs: tuple[str, ...]
    """Tensor inputs in ONNX order; a trailing ``?`` marks an optional one."""
    attrs: tuple[Attr, ...] = ()
    shape: str = "same"
    """Shape kind: how the output shape follows (see :func:`eqsat_dnn.ir.prelude.shape_rules`)."""
    variadic: bool = False
    """All tensor inputs travel as one ``TL`` list (Concat)."""
    elementwise: bool = False
    description: str = ""
    ranks: tuple[int, int] | None = None
    """The ranks the rule checker draws the first input in, ``(low, high)`` (None: any)."""
    input_shapes: tuple[str | None, ...] = ()
    """Per tensor input, the shape domain the rule checker draws it from (see
    :data:`eqsat_dnn.verify.sampling.SHAPES`): for the first input a layout (``"image"``: NCHW)
    or a tie to an attribute (``"perm_rank"``), for later ones a relation to the inputs before
    (``"broadcast"``, ``"channel"``, ``"matmul_rhs"``, ...). None (or past the end): the first
    input per :attr:`ranks`, a later one unconstrained."""
    positive: tuple[int, ...] = ()
    """Tensor inputs the rule checker feeds positive values only (outside, the op is NaN)."""
    domain: str = ""
    """The ONNX operator set the op belongs to: ``""`` (the standard one) or a runtime's own,
    such as :data:`CONTRIB` (onnxruntime's fused kernels). Export declares it where used, and
    :class:`Target` decides whether extraction may choose it."""
    since: int = 1
    """The first version of :attr:`domain`'s operator set with this op as declared; export raises
    the model's opset to it where the op is chosen (:func:`eqsat_dnn.io.onnx_out.to_onnx`)."""
    standard_form: bool = False
    """An op of another operator set that :func:`eqsat_dnn.lower.to_standard` writes as standard ONNX
    ops for :attr:`Target.ONNX` (QuickGelu as Sigmoid and Mul, in the order onnxruntime fuses back):
    extraction may choose it for either target, which keeps it from reassociating the formula."""
    input_values: tuple[Values, ...] = ()
    """Per tensor input, what the rule checker feeds it (past the end: :attr:`Values.FLOAT`)."""
    output_dtype: int | None = None
    """The output's ONNX element type where the op fixes it (:data:`BOOL` for comparisons);
    None: the first input's, or :attr:`dtype_attr`'s."""
    dtype_attr: str | None = None
    """The attribute that gives the output's element type (Cast's ``to``)."""
    dtype_input: int = 0
    """The tensor input whose element type the output has where no other field fixes it
    (``Where``: 1, its first input is the boolean condition)."""
    sampler: str | None = None
    """A hook of the rule checker (:data:`eqsat_dnn.verify.sampling.HOOKS`) that draws attributes
    that constrain each other together, once the inputs are drawn (Slice's starts, ends, axes
    and steps); its attributes take the ``"planned"`` domain."""
    onnx_name: str = ""
    """The ONNX op type where it differs from :attr:`name`, the constructor's: an op of another
    operator set that shares its type with a standard one (onnxruntime's ``Attention`` beside
    ONNX's). Import reads ``(onnx_name, domain)`` as this op; export writes it so."""

    @property
    def op_type(self) -> str:
        """The ONNX op type export writes for this op."""
        return self.onnx_name or self.name

    @property
    def tensor_arity(self) -> int:
        return 1 if self.variadic else len(self.inputs)

    def signature(self) -> list[str]:
        """egglog argument sorts: tensors first, then attributes."""
        tensors = ["TL"] if self.variadic else ["T"] * len(self.inputs)
        return tensors + [a.sort for a in self.attrs]


def _unary(name: str, description: str, positive: bool = False) -> OpSpec:
    return OpSpec(name, ("X",), shape="same", elementwise=True, description=description,
                  positive=(0,) if positive else ())


def _binary(name: str, description: str, positive: tuple[int, ...] = ()) -> OpSpec:
    return OpSpec(name, ("A", "B"), shape="broadcast", elementwise=True, description=description,
                  input_shapes=(None, "broadcast"), positive=positive)


def _compare(name: str, description: str) -> OpSpec:
    return OpSpec(name, ("A", "B"), shape="broadcast", elementwise=True, description=description,
                  input_shapes=(None, "broadcast"), output_dtype=BOOL)


def _logical(name: str, description: str) -> OpSpec:
    return OpSpec(name, ("A", "B"), shape="broadcast", elementwise=True, description=description,
                  input_shapes=(None, "broadcast"), input_values=(Values.BOOL, Values.BOOL))


def _reduce(name: str, description: str, since: int) -> OpSpec:
    """A reduction over constant axes (an input from opset ``since`` on)."""
    return OpSpec(name, ("X",), (Attr("axes", "IVec", from_input=1, input_since=since, domain="axes_subset"),
                                 Attr("keepdims", "i64", 1, domain=(0, 1))),
                  shape="none", description=description)


_RANKED = (1, 4)
"""The first input's ranks for ops that need at least one axis."""

_POOL_ATTRS = (
    Attr("kernel_shape", "IVec", domain="pool_kernel"),
    Attr("strides", "IVec", "ones", domain="steps_2d"),
    Attr("pads", "IVec", "zeros", domain="pool_pads"),
)
_CEIL_MODE = Attr("ceil_mode", "i64", 0, domain="mostly_zero")

_ATTENTION_OPS = [
    OpSpec("Where", ("condition", "X", "Y"), shape="broadcast3", dtype_input=1,
           description="X where the condition holds, else Y (all three broadcast)",
           input_shapes=(None, "broadcast", "broadcast"), input_values=(Values.BOOL,)),
    OpSpec("IsNaN", ("X",), elementwise=True, output_dtype=BOOL, description="whether each element is NaN"),
    OpSpec("Expand", ("input",), (Attr("shape", "IVec", from_input=1, input_since=8, domain="expand_target"),),
           shape="expand", description="broadcast to a constant shape (numpy rules, both ways)"),
    # onnxruntime's fused attention: Q, K, V as [B, S, H*D], one head count; inputs 3 and 4 (the
    # projection bias, the key padding mask) are never written by the rules, so always (Absent)
    OpSpec("MultiHeadAttention", ("query", "key", "value", "bias?", "key_padding_mask?", "attention_bias?"),
           (Attr("num_heads", "i64", domain="planned"), Attr("scale", "f64", domain="planned")),
           shape="mha", domain=CONTRIB, sampler="attention",
           description="softmax(scale * Q K^T + attention_bias) V per head, heads packed in the last axis",
           input_shapes=("mha_query", "mha_kv", "mha_kv", "absent", "absent", "mha_bias")),
    # ONNX's own (opset 23): K and V may have fewer heads (GQA). Its 4-D form [B, H, S, D] has both
    # head counts 0 (absent); its 3-D form [B, S, H * D] (heads packed in the last axis, output
    # [B, S, q_num_heads * Dv]) has them set (rules/attention.egg builds it from head splits).
    # softcap > 0 caps the scaled scores, softcap * tanh(s / softcap), before the mask (Gemma 2)
    OpSpec("Attention", ("Q", "K", "V", "attn_mask?"),
           (Attr("scale", "f64", domain="planned"), Attr("q_num_heads", "i64", 0, domain="planned"),
            Attr("kv_num_heads", "i64", 0, domain="planned"),
            Attr("softcap", "f64", 0.0, domain=(0.0, 0.0, 2.5))),
           shape="attention", since=23, sampler="attention",
           description="softmax(cap(scale * Q K^T) + attn_mask) V, cap(s) = softcap * tanh(s / softcap) "
                       "where softcap > 0 (else s), K/V heads shared by groups of Q heads "
                       "(4-D, or 3-D with q_num_heads and kv_num_heads)",
           input_shapes=("attention_query", "attention_kv", "attention_kv", "attention_mask")),
    # onnxruntime's Attention (com.microsoft): the packed Q/K/V projection X W + bias ([B, S, Hin] by
    # [Hin, 3H], Q, K and V side by side in W's columns) and multi-head attention over it, one
    # kernel; inputs 3 and 4 (mask_index, past) are never written by the rules, so always (Absent)
    OpSpec("ProjectedAttention", ("input", "weights", "bias", "mask_index?", "past?", "attention_bias?"),
           (Attr("num_heads", "i64", domain="planned"), Attr("scale", "f64", domain="planned")),
           shape="projected_attention", domain=CONTRIB, sampler="attention", onnx_name="Attention",
           description="softmax(scale * Q K^T + attention_bias) V per head over [Q K V] = X W + bias",
           input_shapes=("mha_query", "qkv_weights", "qkv_bias", "absent", "absent", "projected_bias")),
]
"""Attention as one kernel, and the ops exporters spell its masks and grouped heads with."""

OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in [
        _binary("Add", "element-wise sum with broadcasting"),
        _binary("Sub", "element-wise difference with broadcasting"),
        _binary("Mul", "element-wise product with broadcasting"),
        _binary("Div", "element-wise quotient with broadcasting"),
        _binary("Pow", "element-wise power with broadcasting", positive=(0,)),
        _unary("Relu", "max(x, 0)"),
        _unary("Sigmoid", "1 / (1 + exp(-x))"),
        _unary("Tanh", "hyperbolic tangent"),
        _unary("Erf", "error function"),
        _unary("Neg", "-x"),
        _unary("Sqrt", "square root", positive=True),
        _unary("Exp", "e ** x"),
        _unary("Reciprocal", "1 / x", positive=True),
        OpSpec("Identity", ("X",), description="the input itself (removed by the rules)"),
        OpSpec("Cast", ("X",), (Attr("to", "i64", domain=(1, 11, 1, 11, BOOL, 7)), Attr("saturate", "i64", 1, domain=(1,))),
               elementwise=True, dtype_attr="to", description="element type conversion (the output's dtype is `to`)"),
        OpSpec("Gelu", ("X",), (Attr("approximate", "String", "none", domain=("none", "tanh")),), elementwise=True,
               description="Gaussian error linear unit (opset 20)", since=20),
        OpSpec("MatMul", ("A", "B"), shape="matmul", description="numpy-style matrix product", ranks=_RANKED,
               input_shapes=(None, "matmul_rhs")),
        OpSpec("Gemm", ("A", "B", "C?"),
               (Attr("alpha", "f64", 1.0, domain=(1.0, 0.5, 2.0, -1.5)),
                Attr("beta", "f64", 1.0, domain=(1.0, 0.5, 2.0, -1.5)),
                Attr("transA", "i64", 0, domain=(0, 1)), Attr("transB", "i64", 0, domain="gemm_transB")),
               shape="gemm", description="alpha * A' B' + beta * C", ranks=(2, 2),
               input_shapes=(None, "gemm_b", "gemm_c")),
        OpSpec("Conv", ("X", "W", "B?"),
               (Attr("strides", "IVec", "ones", domain="steps_2d"), Attr("pads", "IVec", "zeros", domain="conv_pads"),
                Attr("dilations", "IVec", "ones", domain="steps_2d"), Attr("group", "i64", 1, domain="conv_group")),
               shape="conv", description="N-d convolution; auto_pad made explicit at import",
               input_shapes=("image", "conv_kernel", "conv_bias")),
        OpSpec("Softmax", ("X",), (Attr("axis", "i64", -1, domain="axis"),), description="softmax along one axis",
               ranks=_RANKED),
        OpSpec("LayerNormalization", ("X", "Scale", "B?"),
               (Attr("axis", "i64", -1, domain="norm_axis"), Attr("epsilon", "f64", 1e-5, domain=(1e-5, 1e-3, 0.1)),
                Attr("stash_type", "i64", 1, domain=(1,))),
               description="layer normalization (first output only)", ranks=_RANKED,
               input_shapes=(None, "trailing", "like_previous")),
        OpSpec("BatchNormalization", ("X", "scale", "B", "input_mean", "input_var"),
               (Attr("epsilon", "f64", 1e-5, domain=(1e-5, 1e-3)),), description="inference-mode batch normalization",
               ranks=(2, 4), input_shapes=(None, "channel", "channel", "channel", "channel")),
        OpSpec("Transpose", ("X",), (Attr("perm", "IVec", domain="perm"),), shape="transpose",
               description="permute axes", input_shapes=("perm_rank",)),
        OpSpec("Reshape", ("X",), (Attr("shape", "IVec", from_input=1, input_since=5, domain="reshape_target"),
                                   Attr("allowzero", "i64", 0, domain="allowzero")),
               shape="reshape", description="reshape to a constant target", input_shapes=("reshape_source",)),
        OpSpec("Pad", ("X",), (Attr("pads", "IVec", from_input=1, input_since=11, domain="pad_widths"),
                               Attr("mode", "String", "constant", domain=("constant", "constant", "edge", "reflect"))),
               shape="pad", description="pad with zeros (or edge/reflect values) before and after each axis"),
        OpSpec("Flatten", ("X",), (Attr("axis", "i64", 1, domain="axis_or_end"),), shape="flatten",
               description="collapse to 2-D at an axis", ranks=_RANKED),
        OpSpec("Concat", ("inputs",), (Attr("axis", "i64", domain="axis"),), shape="concat", variadic=True,
               description="join along an axis", ranks=_RANKED),
        OpSpec("Split", ("X",), (Attr("axis", "i64", 0, domain="axis"),
                                 Attr("split", "IVec", from_input=1, input_since=13, domain="split_sizes"),
                                 Attr("index", "i64", 0, domain="split_index")),
               shape="splitpart", description="one output (index) of a split with explicit sizes", ranks=_RANKED),
        OpSpec("Slice", ("X",), (Attr("starts", "IVec", from_input=1, input_since=10, domain="planned"),
                                 Attr("ends", "IVec", from_input=2, input_since=10, domain="planned"),
                                 Attr("axes", "IVec", from_input=3, input_since=10, domain="planned"),
                                 Attr("steps", "IVec", from_input=4, input_since=10, domain="planned")),
               shape="slice", description="constant-index slice (clamped at import where dims are known)",
               sampler="slice"),
        OpSpec("Squeeze", ("X",), (Attr("axes", "IVec", from_input=1, input_since=13, domain="unit_axes"),),
               shape="none", description="drop size-1 axes", ranks=_RANKED, input_shapes=("unit_dim",)),
        OpSpec("Unsqueeze", ("X",), (Attr("axes", "IVec", from_input=1, input_since=13, domain="new_axes"),),
               shape="none", description="insert size-1 axes"),
        _reduce("ReduceMean", "mean over axes", since=18),
        _reduce("ReduceSum", "sum over axes", since=13),
        OpSpec("MaxPool", ("X",),
               _POOL_ATTRS + (Attr("dilations", "IVec", "ones", domain="pool_dilations"), _CEIL_MODE),
               shape="pool", description="max pooling", input_shapes=("image",)),
        OpSpec("AveragePool", ("X",), _POOL_ATTRS + (Attr("dilations", "IVec", "ones", domain=((1, 1),)), _CEIL_MODE,
                                                      Attr("count_include_pad", "i64", 0, domain=(0, 1))),
               shape="pool", description="average pooling", input_shapes=("image",)),
        OpSpec("GlobalAveragePool", ("X",), shape="global_pool", description="mean over spatial axes",
               input_shapes=("image",)),
        # -- fused normalization and rotary embedding (issue 16): constructors that rules build from the
        # decompositions exporters write (rules/normalization.egg, rules/rotary.egg)
        _unary("Sin", "sine"),
        _unary("Cos", "cosine"),
        OpSpec("RMSNormalization", ("X", "scale"),
               (Attr("axis", "i64", -1, domain="norm_axis"), Attr("epsilon", "f64", 1e-5, domain=(1e-5, 1e-3, 0.1)),
                Attr("stash_type", "i64", 1, domain=(1,))),
               description="x / sqrt(mean(x^2 over axis..) + epsilon) * scale (opset 23)", ranks=_RANKED,
               input_shapes=(None, "trailing"), since=23),
        OpSpec("RotaryEmbedding", ("X", "cos_cache", "sin_cache", "position_ids?"),
               (Attr("interleaved", "i64", 0, domain=(0,)), Attr("num_heads", "i64", 0, domain=(0,)),
                Attr("rotary_embedding_dim", "i64", 0, domain=(0,))),
               description="rotary position embedding of (batch, heads, sequence, head) by half-width "
                           "(batch, sequence, head / 2) caches, halves rotated (opset 23); with num_heads, "
                           "of (batch, sequence, heads * head) by the same caches",
               input_shapes=("rotary_input", "rotary_cache", "like_previous"), since=23),
        OpSpec("QuickGelu", ("X",), (Attr("alpha", "f64", 1.702, domain=(1.0, 1.702, 0.5)),), elementwise=True,
               description="x * sigmoid(alpha * x), onnxruntime's kernel (SiLU/Swish is alpha = 1)", domain=CONTRIB,
               standard_form=True),
        # what transformer exports compute masks, positions and embeddings with
        _binary("Max", "element-wise maximum of two operands"),
        _binary("Min", "element-wise minimum of two operands"),
        _unary("Abs", "|x|"),
        _unary("Log", "natural logarithm", positive=True),
        _unary("Softplus", "log(1 + e ** x)"),
        _compare("Equal", "a == b (bool)"),
        _compare("Less", "a < b (bool)"),
        _compare("Greater", "a > b (bool)"),
        _compare("LessOrEqual", "a <= b (bool)"),
        _compare("GreaterOrEqual", "a >= b (bool)"),
        _logical("And", "logical and of two masks"),
        _logical("Or", "logical or of two masks"),
        OpSpec("Not", ("X",), elementwise=True, description="logical not of a mask", input_values=(Values.BOOL,)),
        _reduce("ReduceMax", "maximum over axes", since=18),
        OpSpec("Gather", ("data", "indices"), (Attr("axis", "i64", 0, domain="axis"),), shape="gather",
               description="take entries along an axis (embedding lookups)", ranks=_RANKED,
               input_values=(Values.FLOAT, Values.INDEX)),
        OpSpec("GatherElements", ("data", "indices"), (Attr("axis", "i64", 0, domain="axis"),), shape="indices",
               description="take one entry along an axis per index", ranks=_RANKED,
               input_shapes=(None, "like_first"), input_values=(Values.FLOAT, Values.INDEX)),
        OpSpec("GatherND", ("data", "indices"), (Attr("batch_dims", "i64", 0, domain=(0,)),), shape="none",
               description="take slices at index tuples (the last axis of indices)", ranks=_RANKED,
               input_shapes=(None, "nd_indices"), input_values=(Values.FLOAT, Values.INDEX)),
        OpSpec("CumSum", ("x",), (Attr("axis", "i64", from_input=1, domain="axis"),
                                  Attr("exclusive", "i64", 0, domain=(0, 1)), Attr("reverse", "i64", 0, domain=(0, 1))),
               description="running sum along an axis", ranks=_RANKED),
        OpSpec("Trilu", ("input",), (Attr("k", "i64", 0, from_input=1, input_since=14, domain=(0, 0, 1, -1)),
                                     Attr("upper", "i64", 1, domain=(0, 1))),
               description="the upper (or lower) triangle of the last two axes (causal masks)", ranks=(2, 4),
               since=14),
        OpSpec("ConstantOfShape", (), (Attr("shape", "IVec", from_input=0, input_since=9, domain="any_shape"),
                                       Attr("value", "f64", 0.0, domain=(0.0, 1.0, -math.inf, 0.5, -2.0 ** 127)),
                                       Attr("dtype", "i64", 1, domain="float_type")),
               shape="reshape", dtype_attr="dtype",
               description="a tensor of one value (its element type: dtype; ONNX's value attribute holds both)"),
        OpSpec("Range", ("start", "limit", "delta"), shape="none", since=11,
               description="start, start + delta, ... below limit (position ids)",
               input_shapes=("scalar", "scalar", "scalar")),
        *_ATTENTION_OPS,
    ]
}
"""The vocabulary. ``Constant`` nodes become weights at import, so they need no constructor."""

ALIASES = {"Sum": "Add"}
"""ONNX ops read as a vocabulary op when they have two operands: a two-operand ``Sum`` is an
``Add`` (both broadcast alike). Such a node keeps its own type when written back
(:attr:`eqsat_dnn.ir.graph.Node.written_op`), so a ``Sum`` that lowering wrote to keep a fusion
away stays one, while the e-graph sees through it."""

RENAMED = {(spec.onnx_name, spec.domain): spec for spec in OPS.values() if spec.onnx_name}
"""Ops whose ONNX type is not their constructor's name, by ``(ONNX type, domain)`` (import)."""

LEAVES = {"Input": ["String"], "Weight": ["String"], "Absent": []}
OPAQUE = "Opaque"


# ---------------------------------------------------------------------------
# egglog literals


def lit(value: Any, sort: str) -> str:
    """An attribute value as egglog source text."""
    if sort == "i64":
        return str(int(value))
    if sort == "f64":
        x = float(value)
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        text = repr(x)
        return text if any(c in text for c in ".en") else text + ".0"
    if sort == "String":
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if sort == "IVec":
        items = [int(v) for v in value]
        return "(vec-of " + " ".join(map(str, items)) + ")" if items else "(vec-empty)"
    if sort == "DVec":  # a shape: sizes (int), symbolic dims (str), unknown ones (Unknown)
        items = [f"(Lit {int(d)})" if isinstance(d, int) else f"(Sym {lit(d, 'String')})" if isinstance(d, str)
                 else f"(Unknown {int(d.index)})" for d in value]
        return "(vec-of " + " ".join(items) + ")" if items else "(vec-empty)"
    raise ValueError(f"unknown sort {sort}")


@dataclass(frozen=True)
class Unknown:
    """A dimension with neither a size nor a name: equal to no other dimension (``index`` tells
    them apart)."""

    index: int
