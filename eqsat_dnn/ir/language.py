"""The tensor language: every operator the rules reason about, declared once.

Each :class:`OpSpec` says how an ONNX operator becomes an egglog constructor
(tensor inputs first, then attributes, in declaration order), how its output
shape follows from its inputs (a *shape kind*, from which egglog rules are
generated), and which of its ONNX inputs are really constant attributes
(``Reshape``'s shape, ``Slice``'s starts/ends, ...). Import, the e-graph prelude,
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
  :func:`_dims_helper_rules`). The analysis of ``dims`` (:func:`dims_prelude`) is loaded only
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
    """Shape kind: how the output shape follows (see :func:`shape_rules`)."""
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
    # ONNX's own (opset 23), in its 4-D form [B, H, S, D]: K and V may have fewer heads (GQA)
    OpSpec("Attention", ("Q", "K", "V", "attn_mask?"), (Attr("scale", "f64", domain="planned"),),
           shape="attention", since=23, sampler="attention",
           description="softmax(scale * Q K^T + attn_mask) V, K/V heads shared by groups of Q heads",
           input_shapes=("attention_query", "attention_kv", "attention_kv", "attention_mask")),
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
                           "(batch, sequence, head / 2) caches, halves rotated (opset 23)",
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
                                       Attr("value", "f64", 0.0, domain=(0.0, 1.0, -math.inf, 0.5)),
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


# ---------------------------------------------------------------------------
# The prelude: sorts, constructors, analyses and the shape rules


def prelude() -> str:
    """egglog source declaring the language and its shape/dtype analyses.

    The analyses run in the ruleset ``analysis``; the saturation runner
    re-establishes them after every step of the optimisation rules.
    """
    lines = [
        "(sort T)",
        "(sort TL)",
        "(sort IVec (Vec i64))",
        "(sort Dim)",
        "(constructor Lit (i64) Dim)",
        "(constructor Sym (String) Dim)",
        "(constructor Unknown (i64) Dim)",
        "(sort DVec (Vec Dim))",
        "(constructor TNil () TL)",
        "(constructor TCons (T TL) TL)",
    ]
    for name, sorts in LEAVES.items():
        lines.append(f"(constructor {name} ({' '.join(sorts)}) T)")
    lines.append(f"(constructor {OPAQUE} (String TL i64) T)")
    for spec in OPS.values():
        lines.append(f"(constructor {spec.name} ({' '.join(spec.signature())}) T)")
    lines += [
        "(function shape (T) IVec :merge old)",
        "(function dims (T) DVec :merge old)",
        "(function dtype (T) i64 :merge old)",
        # the value of a one-element float tensor known at import (eps, a softmax scale): fused
        # constructors take such values as attributes
        "(function scalar (T) f64 :merge old)",
        "(ruleset analysis)",
    ]
    lines += _helper_rules()
    lines += _scalar_rules()
    for spec in OPS.values():
        lines += _dtype_rules(spec)
        lines += shape_rules(spec)
    return "\n".join(lines)


def dims_prelude() -> str:
    """egglog source of the analysis rules for symbolic shapes (``(dims t)``), to load after
    :func:`prelude` where a model has a symbolic or unknown dim. Only ``dims`` shapes make
    ``dims`` shapes, so a static model does without them, and its analysis runs no rule more
    than before symbolic shapes had a form of their own."""
    lines = _dims_helper_rules()
    for spec in OPS.values():
        lines += dims_rules(spec)
    return "\n".join(lines)


def _rule(query: str, action: str) -> str:
    return f"(rule ({query}) ({action}) :ruleset analysis)"


def _helper_rules() -> list[str]:
    return [
        # broadcast of one dimension, computed on demand
        "(relation bdim-demand (i64 i64))",
        "(function bdim (i64 i64) i64 :merge old)",
        _rule("(bdim-demand x x)", "(set (bdim x x) x)"),
        _rule("(bdim-demand 1 y)", "(set (bdim 1 y) y)"),
        _rule("(bdim-demand x 1)", "(set (bdim x 1) x)"),
        # broadcast of two shapes, right-aligned, one trailing dimension at a time; the
        # tables involved stay small (one row per distinct pair of shapes)
        "(relation bshape-demand (IVec IVec))",
        "(function bshape (IVec IVec) IVec :merge old)",
        _rule("(bshape-demand sa sb) (= (vec-length sa) 0)", "(set (bshape sa sb) sb)"),
        _rule("(bshape-demand sa sb) (= (vec-length sb) 0)", "(set (bshape sa sb) sa)"),
        _rule(
            "(bshape-demand sa sb) (> (vec-length sa) 0) (> (vec-length sb) 0)",
            "(bshape-demand (vec-pop sa) (vec-pop sb)) "
            "(bdim-demand (vec-get sa (- (vec-length sa) 1)) (vec-get sb (- (vec-length sb) 1)))",
        ),
        _rule(
            "(bshape-demand sa sb) (> (vec-length sa) 0) (> (vec-length sb) 0) "
            "(= r (bshape (vec-pop sa) (vec-pop sb))) "
            "(= d (bdim (vec-get sa (- (vec-length sa) 1)) (vec-get sb (- (vec-length sb) 1))))",
            "(set (bshape sa sb) (vec-push r d))",
        ),
        # sum of one dimension over a tensor list, for Concat
        "(relation dimsum-demand (TL i64))",
        "(function dimsum (TL i64) i64 :merge old)",
        _rule("(= e (Concat l ax))", "(dimsum-demand l ax)"),
        _rule("(dimsum-demand (TCons a rest) ax)", "(dimsum-demand rest ax)"),
        _rule("(dimsum-demand l ax) (= l (TNil))", "(set (dimsum l ax) 0)"),
        _rule(
            "(dimsum-demand l ax) (= l (TCons a rest)) (= s (shape a)) (= d (dimsum rest ax))",
            "(set (dimsum l ax) (+ (vec-get s ax) d))",
        ),
    ]


def _scalar_rules() -> list[str]:
    """Scalars computed from scalars (``1 / sqrt(d)`` written as ops over a constant)."""
    return [
        _rule("(= e (Neg x)) (= v (scalar x))", "(set (scalar e) (neg v))"),
        _rule("(= e (Reciprocal x)) (= v (scalar x)) (!= v 0.0)", "(set (scalar e) (/ 1.0 v))"),
        _rule("(= e (Sqrt x)) (= v (scalar x)) (>= v 0.0)", "(set (scalar e) (^ v 0.5))"),
        _rule("(= e (Mul x y)) (= v (scalar x)) (= w (scalar y))", "(set (scalar e) (* v w))"),
        _rule("(= e (Div x y)) (= v (scalar x)) (= w (scalar y)) (!= w 0.0)", "(set (scalar e) (/ v w))"),
        _rule("(= e (Reshape x t z)) (= v (scalar x))", "(set (scalar e) v)"),
    ]


def _args(spec: OpSpec) -> list[str]:
    tensor_names = ["l"] if spec.variadic else [f"x{i}" for i in range(len(spec.inputs))]
    return tensor_names + [f"a_{a.name}" for a in spec.attrs]


def _pattern(spec: OpSpec) -> str:
    return f"(= e ({spec.name} {' '.join(_args(spec))}))"


def _dtype_rules(spec: OpSpec) -> list[str]:
    if spec.dtype_attr is not None:
        return [_rule(_pattern(spec), f"(set (dtype e) a_{spec.dtype_attr})")]
    if spec.output_dtype is not None:
        return [_rule(_pattern(spec), f"(set (dtype e) {spec.output_dtype})")]
    source = "(= l (TCons x0 rest))" if spec.variadic else ""
    return [_rule(f"{_pattern(spec)} {source} (= d (dtype x{spec.dtype_input}))", "(set (dtype e) d)")]


def _vec(items: list[str]) -> str:
    return f"(vec-of {' '.join(items)})" if items else "(vec-empty)"


def _product(factors: list[str]) -> str:
    if not factors:
        return "1"
    expr = factors[0]
    for factor in factors[1:]:
        expr = f"(* {expr} {factor})"
    return expr


def _rank_is(var: str, rank: int) -> str:
    return f"(= (vec-length {var}) {rank})"


def shape_rules(spec: OpSpec) -> list[str]:
    """egglog rules deriving ``(shape e)`` for one op, from its shape kind.

    Kinds without a rule (``none``) get their shapes from ONNX shape inference
    at import only; a rewrite that creates such a node leaves its class without
    a shape, and shape-conditioned rules simply do not fire on it.
    """
    pat = _pattern(spec)
    kind = spec.shape
    rules: list[str] = []
    if kind == "same":
        rules.append(_rule(f"{pat} (= s (shape x0))", "(set (shape e) s)"))
    elif kind == "broadcast":
        rules.append(_rule(f"{pat} (= sa (shape x0)) (= sb (shape x1))", "(bshape-demand sa sb)"))
        rules.append(_rule(f"{pat} (= sa (shape x0)) (= sb (shape x1)) (= s (bshape sa sb))", "(set (shape e) s)"))
    elif kind == "broadcast3":
        rules.append(_rule(f"{pat} (= sa (shape x0)) (= sb (shape x1))", "(bshape-demand sa sb)"))
        rules.append(_rule(f"{pat} (= sa (shape x0)) (= sb (shape x1)) (= sab (bshape sa sb)) (= sc (shape x2))",
                           "(bshape-demand sab sc)"))
        rules.append(_rule(f"{pat} (= sa (shape x0)) (= sb (shape x1)) (= sab (bshape sa sb)) (= sc (shape x2)) "
                           "(= s (bshape sab sc))", "(set (shape e) s)"))
    elif kind == "expand":
        # a static target only: its 1s keep the input's dims, which bshape resolves
        rules.append(_rule(f"{pat} (= s (shape x0)) (vec-not-contains a_shape -1)", "(bshape-demand s a_shape)"))
        rules.append(_rule(f"{pat} (= s (shape x0)) (= r (bshape s a_shape))", "(set (shape e) r)"))
    elif kind == "mha":
        # [B, S, H * Dv]: the query's rows, the value's width
        rules.append(_rule(f"{pat} (= sq (shape x0)) (= sv (shape x2)) {_rank_is('sq', 3)} {_rank_is('sv', 3)}",
                           "(set (shape e) (vec-set sq 2 (vec-get sv 2)))"))
    elif kind == "attention":
        # [B, H, S, Dv]: the query's heads and rows, the value's head size
        rules.append(_rule(f"{pat} (= sq (shape x0)) (= sv (shape x2)) {_rank_is('sq', 4)} {_rank_is('sv', 4)}",
                           "(set (shape e) (vec-set sq 3 (vec-get sv 3)))"))
    elif kind == "matmul":
        for rank in range(2, MAX_RANK + 1):
            same_batch = " ".join(f"(= (vec-get sa {i}) (vec-get sb {i}))" for i in range(rank - 2))
            rules.append(_rule(
                f"{pat} (= sa (shape x0)) (= sb (shape x1)) {_rank_is('sa', rank)} {_rank_is('sb', rank)} {same_batch}",
                f"(set (shape e) (vec-set sa {rank - 1} (vec-get sb {rank - 1})))",
            ))
            if rank > 2:
                rules.append(_rule(
                    f"{pat} (= sa (shape x0)) (= sb (shape x1)) {_rank_is('sa', rank)} {_rank_is('sb', 2)}",
                    f"(set (shape e) (vec-set sa {rank - 1} (vec-get sb 1)))",
                ))
    elif kind == "gemm":
        for ta in (0, 1):
            for tb in (0, 1):
                rules.append(_rule(
                    f"{pat} (= a_transA {ta}) (= a_transB {tb}) (= sa (shape x0)) (= sb (shape x1))",
                    f"(set (shape e) (vec-of (vec-get sa {1 if ta else 0}) (vec-get sb {0 if tb else 1})))",
                ))
    elif kind == "transpose":
        for rank in range(1, MAX_RANK + 1):
            dims = [f"(vec-get s (vec-get a_perm {i}))" for i in range(rank)]
            rules.append(_rule(f"{pat} (= s (shape x0)) {_rank_is('s', rank)} {_rank_is('a_perm', rank)}",
                               f"(set (shape e) {_vec(dims)})"))
    elif kind == "reshape":
        rules.append(_rule(
            f"{pat} (vec-not-contains a_shape 0) (vec-not-contains a_shape -1)",
            "(set (shape e) a_shape)",
        ))
    elif kind == "flatten":
        for rank in range(1, MAX_RANK + 1):
            for axis in range(rank + 1):
                prod_l = _product([f"(vec-get s {i})" for i in range(axis)])
                prod_r = _product([f"(vec-get s {i})" for i in range(axis, rank)])
                rules.append(_rule(f"{pat} (= a_axis {axis}) (= s (shape x0)) {_rank_is('s', rank)}",
                                   f"(set (shape e) (vec-of {prod_l} {prod_r}))"))
    elif kind == "concat":
        rules.append(_rule(f"{pat} (= l (TCons a rest)) (= s (shape a)) (= d (dimsum l a_axis))",
                           "(set (shape e) (vec-set s a_axis d))"))
    elif kind == "splitpart":
        rules.append(_rule(f"{pat} (= s (shape x0))", "(set (shape e) (vec-set s a_axis (vec-get a_split a_index)))"))
    elif kind in ("conv", "pool"):
        # 2-D only: N, C, H, W with static spatial sizes
        channels = "(vec-get sw 0)" if kind == "conv" else "(vec-get s 1)"
        spatial = _spatial(kind, "(vec-get s 2)", "(vec-get s 3)")
        rules.append(_rule(
            f"{pat} (= s (shape x0)) {_rank_is('s', 4)} {_window(kind)}",
            f"(set (shape e) (vec-of (vec-get s 0) {channels} {spatial[0]} {spatial[1]}))",
        ))
    elif kind == "slice":
        for count in range(1, MAX_RANK + 1):
            conditions, out = _slice(count, "s", lambda i, axis: f"(vec-get s {axis})")
            rules.append(_rule(f"{pat} (= s (shape x0)) {conditions}", f"(set (shape e) {out})"))
    elif kind == "pad":
        for rank in range(1, MAX_RANK + 1):
            dims = [f"(+ (vec-get s {i}) (+ (vec-get a_pads {i}) (vec-get a_pads {i + rank})))" for i in range(rank)]
            rules.append(_rule(f"{pat} (= s (shape x0)) {_rank_is('s', rank)} {_rank_is('a_pads', 2 * rank)}",
                               f"(set (shape e) {_vec(dims)})"))
    elif kind == "gather":
        # data's dims before the axis, then the indices' dims, then data's after the axis
        for rank in range(1, MAX_RANK + 1):
            for axis in range(rank):
                before = _vec([f"(vec-get s {i})" for i in range(axis)])
                after = _vec([f"(vec-get s {i})" for i in range(axis + 1, rank)])
                rules.append(_rule(f"{pat} (= a_axis {axis}) (= s (shape x0)) {_rank_is('s', rank)} (= si (shape x1))",
                                   f"(set (shape e) (vec-append {before} (vec-append si {after})))"))
    elif kind == "indices":
        rules.append(_rule(f"{pat} (= s (shape x1))", "(set (shape e) s)"))
    elif kind == "global_pool":
        rules.append(_rule(f"{pat} (= s (shape x0)) {_rank_is('s', 4)}",
                           "(set (shape e) (vec-of (vec-get s 0) (vec-get s 1) 1 1))"))
    elif kind != "none":
        raise ValueError(f"{spec.name}: unknown shape kind {kind!r}")
    return rules


def _window(kind: str) -> str:
    """A conv's kernel (static: a weight's shape) or a pool's mode, as query atoms."""
    return "(= sw (shape x1)) (= (vec-length sw) 4)" if kind == "conv" else "(= a_ceil_mode 0)"


def _spatial(kind: str, height: str, width: str) -> list[str]:
    """A conv's or pool's output height and width from its input's (size expressions)."""
    kernel = ("(vec-get sw 2)", "(vec-get sw 3)") if kind == "conv" else (
        "(vec-get a_kernel_shape 0)", "(vec-get a_kernel_shape 1)")
    out = []
    for i, (size, k) in enumerate(zip((height, width), kernel)):
        padded = f"(+ {size} (+ (vec-get a_pads {i}) (vec-get a_pads {i + 2})))"
        reach = f"(+ (* (vec-get a_dilations {i}) (- {k} 1)) 1)"
        out.append(f"(+ (/ (- {padded} {reach}) (vec-get a_strides {i})) 1)")
    return out


def _slice(count: int, shape: str, size_of, wrap=lambda size: size) -> tuple[str, str]:
    """A slice of ``count`` axes over ``shape``: its conditions and its output shape.

    Canonical slices only (0 <= start <= end <= dim, step > 0), which import produces wherever
    the sliced dims are known; a slice whose ends are not canonical gets no shape.
    ``size_of(i, axis)`` reads the size of the i-th sliced axis; ``wrap`` makes a new size a
    dimension of ``shape``'s sort."""
    conditions = [_rank_is(f"a_{n}", count) for n in ("axes", "starts", "ends", "steps")]
    out = shape
    for i in range(count):
        start, end, step = (f"(vec-get a_{n} {i})" for n in ("starts", "ends", "steps"))
        axis = f"(vec-get a_axes {i})"
        conditions += [f"(> {step} 0)", f"(>= {start} 0)", f"(<= {start} {end})",
                       f"(< {axis} (vec-length {shape}))", f"(<= {end} {size_of(i, axis)})"]
        out = f"(vec-set {out} {axis} {wrap(f'(/ (+ (- {end} {start}) (- {step} 1)) {step})')})"
    return " ".join(conditions), out


# ---------------------------------------------------------------------------
# Symbolic shapes: (dims t), a vector of Dim


def _dims_helper_rules() -> list[str]:
    return [
        # the size of each dim of a symbolic shape that is one: egglog joins a (Lit n) with a dim
        # read out of a vector by scanning every Lit, so the scan runs once per (shape, axis)
        # here, and rules read sizes through dsize, a lookup keyed by the shape
        "(relation dsize-demand (DVec i64))",
        "(function dsize (DVec i64) i64 :merge old)",
        _rule("(= s (dims e)) (> (vec-length s) 0)", "(dsize-demand s 0)"),
        _rule("(dsize-demand s k) (< (+ k 1) (vec-length s))", "(dsize-demand s (+ k 1))"),
        _rule("(dsize-demand s k) (= (vec-get s k) (Lit n))", "(set (dsize s k) n)"),
        # a symbolic shape whose dims are all sizes (a slice or split along its one symbolic
        # axis) is a static shape too, so that the rules reading (shape t) see it; lowp is its
        # static prefix of length k
        "(function lowp (DVec i64) IVec :merge old)",
        _rule("(= s (dims e))", "(set (lowp s 0) (vec-empty))"),
        _rule("(= z (lowp s k)) (= n (dsize s k))", "(set (lowp s (+ k 1)) (vec-push z n))"),
        _rule("(= s (dims e)) (= z (lowp s (vec-length s)))", "(set (shape e) z)"),
        # a tensor's rank, whatever the form of its shape (rules that read only a rank read this)
        "(function rank (T) i64 :merge old)",
        _rule("(= s (shape e))", "(set (rank e) (vec-length s))"),
        _rule("(= s (dims e))", "(set (rank e) (vec-length s))"),
        # an operand's shape as a DVec, where an op meets a symbolic shape with another one
        "(relation view-demand (T))",
        "(function view (T) DVec :merge old)",
        "(relation lift-demand (IVec))",
        "(function lift (IVec) DVec :merge old)",
        _rule("(view-demand x) (= s (dims x))", "(set (view x) s)"),
        _rule("(view-demand x) (= z (shape x))", "(lift-demand z)"),
        _rule("(view-demand x) (= z (shape x)) (= s (lift z))", "(set (view x) s)"),
        *[_rule(f"(lift-demand z) {_rank_is('z', rank)}",
                f"(set (lift z) {_vec([f'(Lit (vec-get z {i}))' for i in range(rank)])})")
          for rank in range(MAX_RANK + 1)],
        # broadcast, as for static shapes
        "(relation dbdim-demand (Dim Dim))",
        "(function dbdim (Dim Dim) Dim :merge old)",
        _rule("(dbdim-demand x x)", "(set (dbdim x x) x)"),
        _rule("(dbdim-demand (Lit 1) y)", "(set (dbdim (Lit 1) y) y)"),
        _rule("(dbdim-demand x (Lit 1))", "(set (dbdim x (Lit 1)) x)"),
        "(relation dbshape-demand (DVec DVec))",
        "(function dbshape (DVec DVec) DVec :merge old)",
        _rule("(dbshape-demand sa sb) (= (vec-length sa) 0)", "(set (dbshape sa sb) sb)"),
        _rule("(dbshape-demand sa sb) (= (vec-length sb) 0)", "(set (dbshape sa sb) sa)"),
        _rule(
            "(dbshape-demand sa sb) (> (vec-length sa) 0) (> (vec-length sb) 0)",
            "(dbshape-demand (vec-pop sa) (vec-pop sb)) "
            "(dbdim-demand (vec-get sa (- (vec-length sa) 1)) (vec-get sb (- (vec-length sb) 1)))",
        ),
        _rule(
            "(dbshape-demand sa sb) (> (vec-length sa) 0) (> (vec-length sb) 0) "
            "(= r (dbshape (vec-pop sa) (vec-pop sb))) "
            "(= d (dbdim (vec-get sa (- (vec-length sa) 1)) (vec-get sb (- (vec-length sb) 1))))",
            "(set (dbshape sa sb) (vec-push r d))",
        ),
        # sum of one dimension over a tensor list (Concat), for parts with a symbolic shape
        _rule(
            "(dimsum-demand l ax) (= l (TCons a rest)) (= s (dims a)) (= d (dimsum rest ax)) "
            "(= n (dsize s ax))",
            "(set (dimsum l ax) (+ n d))",
        ),
    ]


def dims_rules(spec: OpSpec) -> list[str]:
    """egglog rules deriving ``(dims e)`` for one op whose input shape is symbolic (see
    :func:`shape_rules` for static ones). Sizes are read with ``dsize``, so arithmetic only
    ever runs on sizes; kinds that need every dim a size (flatten, pad) or
    that set the shape from attributes alone (reshape) have no rule here."""
    pat = _pattern(spec)
    kind = spec.shape
    rules: list[str] = []
    both = "(= sa (view x0)) (= sb (view x1))"
    if kind in ("broadcast", "matmul", "gemm"):
        # either operand symbolic: both as DVecs
        for i in (0, 1):
            rules.append(_rule(f"{pat} (= s (dims x{i}))", "(view-demand x0) (view-demand x1)"))
    if kind == "same":
        rules.append(_rule(f"{pat} (= s (dims x0))", "(set (dims e) s)"))
    elif kind == "broadcast":
        rules.append(_rule(f"{pat} {both}", "(dbshape-demand sa sb)"))
        rules.append(_rule(f"{pat} {both} (= s (dbshape sa sb))", "(set (dims e) s)"))
    elif kind == "matmul":
        for rank in range(2, MAX_RANK + 1):
            same_batch = " ".join(f"(= (vec-get sa {i}) (vec-get sb {i}))" for i in range(rank - 2))
            rules.append(_rule(f"{pat} {both} {_rank_is('sa', rank)} {_rank_is('sb', rank)} {same_batch}",
                               f"(set (dims e) (vec-set sa {rank - 1} (vec-get sb {rank - 1})))"))
            if rank > 2:
                rules.append(_rule(f"{pat} {both} {_rank_is('sa', rank)} {_rank_is('sb', 2)}",
                                   f"(set (dims e) (vec-set sa {rank - 1} (vec-get sb 1)))"))
    elif kind == "gemm":
        for ta in (0, 1):
            for tb in (0, 1):
                rules.append(_rule(
                    f"{pat} (= a_transA {ta}) (= a_transB {tb}) {both}",
                    f"(set (dims e) (vec-of (vec-get sa {1 if ta else 0}) (vec-get sb {0 if tb else 1})))"))
    elif kind == "transpose":
        for rank in range(1, MAX_RANK + 1):
            dims = [f"(vec-get s (vec-get a_perm {i}))" for i in range(rank)]
            rules.append(_rule(f"{pat} (= s (dims x0)) {_rank_is('s', rank)} {_rank_is('a_perm', rank)}",
                               f"(set (dims e) {_vec(dims)})"))
    elif kind == "concat":
        rules.append(_rule(f"{pat} (= l (TCons a rest)) (= s (dims a)) (= d (dimsum l a_axis))",
                           "(set (dims e) (vec-set s a_axis (Lit d)))"))
    elif kind == "splitpart":
        rules.append(_rule(f"{pat} (= s (dims x0))",
                           "(set (dims e) (vec-set s a_axis (Lit (vec-get a_split a_index))))"))
    elif kind in ("conv", "pool"):
        channels = "(Lit (vec-get sw 0))" if kind == "conv" else "(vec-get s 1)"
        spatial = _spatial(kind, "h", "w")
        rules.append(_rule(
            f"{pat} (= s (dims x0)) {_rank_is('s', 4)} {_window(kind)} (= h (dsize s 2)) (= w (dsize s 3))",
            f"(set (dims e) (vec-of (vec-get s 0) {channels} (Lit {spatial[0]}) (Lit {spatial[1]})))",
        ))
    elif kind == "slice":
        for count in range(1, MAX_RANK + 1):
            conditions, out = _slice(count, "s", lambda i, axis: f"n{i}", wrap=lambda size: f"(Lit {size})")
            sizes = " ".join(f"(= n{i} (dsize s (vec-get a_axes {i})))" for i in range(count))
            rules.append(_rule(f"{pat} (= s (dims x0)) {conditions} {sizes}", f"(set (dims e) {out})"))
    elif kind == "global_pool":
        rules.append(_rule(f"{pat} (= s (dims x0)) {_rank_is('s', 4)}",
                           "(set (dims e) (vec-of (vec-get s 0) (vec-get s 1) (Lit 1) (Lit 1)))"))
    return rules
