"""The egglog source the vocabulary derives: sorts, one constructor per :class:`OpSpec`, and the
shape, dtype and scalar analyses generated from each op's declared shape kind.

:mod:`eqsat_dnn.ir.language` declares the ops; this module only writes what egglog needs of
them, so a new op is still declared once, there.
"""

from __future__ import annotations

from eqsat_dnn.ir.language import LEAVES, MAX_RANK, OPAQUE, OPS, OpSpec


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
        # exporters write a mask's fill as a ConstantOfShape of no dims (float32 or float64)
        _rule("(= e (ConstantOfShape (vec-empty) v 1))", "(set (scalar e) v)"),
        _rule("(= e (ConstantOfShape (vec-empty) v 11))", "(set (scalar e) v)"),
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
    elif kind == "projected_attention":
        # [B, S, H]: the input's rows, a third of the packed weights' columns
        rules.append(_rule(f"{pat} (= sx (shape x0)) (= sw (shape x1)) {_rank_is('sx', 3)} {_rank_is('sw', 2)}",
                           "(set (shape e) (vec-set sx 2 (/ (vec-get sw 1) 3)))"))
    elif kind == "attention":
        # [B, H, S, Dv]: the query's heads and rows, the value's head size
        rules.append(_rule(f"{pat} (= sq (shape x0)) (= sv (shape x2)) {_rank_is('sq', 4)} {_rank_is('sv', 4)}",
                           "(set (shape e) (vec-set sq 3 (vec-get sv 3)))"))
        # 3-D [B, S, Hq * Dv]: the query's rows, Hq heads of the value's head size (Hkv heads in it)
        rules.append(_rule(f"{pat} (= sq (shape x0)) (= sv (shape x2)) {_rank_is('sq', 3)} {_rank_is('sv', 3)} "
                           "(> a_kv_num_heads 0) (> a_q_num_heads 0)",
                           "(set (shape e) (vec-set sq 2 (* a_q_num_heads (/ (vec-get sv 2) a_kv_num_heads))))"))
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
