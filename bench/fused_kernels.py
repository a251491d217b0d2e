"""Benchmark: the decompositions the HF exports write against the fused kernels the rules of
``rules/normalization.egg``, ``rules/rotary.egg`` and ``rules/gelu.egg`` choose, and the two fused
attention kernels ``rules/attention.egg`` chooses between (issue 16).

Each case is a one-pattern model at a shape of the exports (LLaMA-style: hidden 576, 9 query and
3 key heads of 64; Qwen2: hidden 896, 14 and 2 heads; GPT-2's MLP 3072; sequence 512), written
once as the exporter writes it and once with the fused op, timed in onnxruntime with
``ORT_ENABLE_ALL`` on one thread, interleaved, the best of ``--runs`` rounds. Beside each time,
the ops onnxruntime's optimized graph holds: what it fused itself (the ``x / sqrt`` RMS norm
becomes its ``SimplifiedLayerNormalization``; the ``Reciprocal(Sqrt)`` one, rotary embeddings and
a residual ``Add`` + ``RMSNormalization`` stay as written).

    python bench/fused_kernels.py [--runs 7] [--out bench/results/fused_kernels.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn.ir.language import CONTRIB
from eqsat_dnn.runtime.sessions import create_session

F = TensorProto.FLOAT
SEQ = 512


def _model(nodes: list[onnx.NodeProto], inputs: dict[str, list[int]], inits: list[onnx.TensorProto],
           opset: int = 20) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "case", [helper.make_tensor_value_info(n, F, s) for n, s in inputs.items()],
                              [helper.make_tensor_value_info("y", F, None)], inits)
    imports = [helper.make_opsetid("", opset), helper.make_opsetid(CONTRIB, 1)]
    return helper.make_model(graph, opset_imports=imports, ir_version=10)


def _f(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _i(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.int64), name)


def _rms_statistics(x: str, out: str, divide: bool) -> list[onnx.NodeProto]:
    """HF's x * rsqrt(mean(x^2) + eps) (rsqrt as Reciprocal(Sqrt)), or x / sqrt(...)."""
    nodes = [helper.make_node("Pow", [x, "two"], ["sq"]), helper.make_node("ReduceMean", ["sq", "last"], ["ms"]),
             helper.make_node("Add", ["ms", "eps"], ["mse"]), helper.make_node("Sqrt", ["mse"], ["rms"])]
    if divide:
        return nodes + [helper.make_node("Div", [x, "rms"], [out])]
    return nodes + [helper.make_node("Reciprocal", ["rms"], ["inv"]), helper.make_node("Mul", [x, "inv"], [out])]


def rms_cases(hidden: int) -> dict[str, tuple[onnx.ModelProto, dict[str, list[int]]]]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal(hidden)
    consts = [_f("w", w), _f("two", 2.0), _f("eps", 1e-5), _i("last", [-1])]
    x = {"x": [1, SEQ, hidden]}
    xr = {"x": [1, SEQ, hidden], "r": [1, SEQ, hidden]}
    scale = helper.make_node("Mul", ["w", "n"], ["y"])
    fused = helper.make_node("RMSNormalization", ["x", "w"], ["y"], epsilon=1e-5)
    skip = helper.make_node("Add", ["x", "r"], ["s"])
    return {
        f"rms {hidden} as exported (Reciprocal)": (_model(_rms_statistics("x", "n", False) + [scale], x, consts), x),
        f"rms {hidden} x / sqrt": (_model(_rms_statistics("x", "n", True) + [scale], x, consts), x),
        f"rms {hidden} RMSNormalization": (_model([fused], x, [_f("w", w)], opset=23), x),
        f"residual + rms {hidden} as exported": (_model([skip] + _rms_statistics("s", "n", False) + [scale], xr, consts),
                                                 xr),
        f"residual + rms {hidden} Add + RMSNormalization": (
            _model([skip, helper.make_node("RMSNormalization", ["s", "w"], ["y"], epsilon=1e-5)], xr, [_f("w", w)],
                   opset=23), xr),
        f"residual + rms {hidden} SkipSimplifiedLayerNormalization": (
            _model([helper.make_node("SkipSimplifiedLayerNormalization", ["x", "r", "w"], ["y"], epsilon=1e-5,
                                     domain=CONTRIB)], xr, [_f("w", w)]), xr),
    }


def rope_cases(heads: int, head: int = 64) -> dict[str, tuple[onnx.ModelProto, dict[str, list[int]]]]:
    half = head // 2
    freqs = np.random.default_rng(0).standard_normal((1, SEQ, half))
    q = {"q": [1, heads, SEQ, head]}
    consts = [_f("f", freqs), _i("one", [1]), _i("zero", [0]), _i("mid", [half]), _i("end", [head]), _i("last", [-1])]
    decomposed = [
        helper.make_node("Concat", ["f", "f"], ["ff"], axis=-1), helper.make_node("Cos", ["ff"], ["cos"]),
        helper.make_node("Sin", ["ff"], ["sin"]), helper.make_node("Unsqueeze", ["cos", "one"], ["cu"]),
        helper.make_node("Unsqueeze", ["sin", "one"], ["su"]), helper.make_node("Mul", ["q", "cu"], ["qc"]),
        helper.make_node("Slice", ["q", "zero", "mid", "last", "one"], ["q1"]),
        helper.make_node("Slice", ["q", "mid", "end", "last", "one"], ["q2"]), helper.make_node("Neg", ["q2"], ["nq2"]),
        helper.make_node("Concat", ["nq2", "q1"], ["rot"], axis=-1), helper.make_node("Mul", ["rot", "su"], ["qs"]),
        helper.make_node("Add", ["qc", "qs"], ["y"])]
    fused = [helper.make_node("Cos", ["f"], ["c"]), helper.make_node("Sin", ["f"], ["s"]),
             helper.make_node("RotaryEmbedding", ["q", "c", "s"], ["y"])]
    return {f"rope {heads}x{head} as exported": (_model(decomposed, q, consts), q),
            f"rope {heads}x{head} RotaryEmbedding": (_model(fused, q, [_f("f", freqs)], opset=23), q)}


def gelu_cases(width: int = 3072) -> dict[str, tuple[onnx.ModelProto, dict[str, list[int]]]]:
    x = {"x": [1, SEQ, width]}
    consts = [_f("h", 0.5), _f("p", 3.0), _f("k", 0.044715), _f("s", 0.7978846), _f("o", 1.0)]
    gpt2 = [helper.make_node("Mul", ["x", "h"], ["m1"]), helper.make_node("Pow", ["x", "p"], ["p3"]),
            helper.make_node("Mul", ["p3", "k"], ["m2"]), helper.make_node("Add", ["x", "m2"], ["a1"]),
            helper.make_node("Mul", ["a1", "s"], ["m3"]), helper.make_node("Tanh", ["m3"], ["t"]),
            helper.make_node("Add", ["t", "o"], ["a2"]), helper.make_node("Mul", ["m1", "a2"], ["y"])]
    return {f"gelu tanh {width} as GPT-2 writes it": (_model(gpt2, x, consts), x),
            f"gelu tanh {width} Gelu (opset 20)": (_model([helper.make_node("Gelu", ["x"], ["y"], approximate="tanh")],
                                                          x, []), x),
            f"gelu tanh {width} FastGelu": (_model([helper.make_node("FastGelu", ["x"], ["y"], domain=CONTRIB)], x, []),
                                            x)}


def attention_cases(heads: int, head: int = 64) -> dict[str, tuple[onnx.ModelProto, dict[str, list[int]]]]:
    """The attention core on [1, S, heads * head] projections under a causal mask filled with the
    float minimum (a constant: the floor the rules give it, -2^127): onnxruntime's
    MultiHeadAttention on the unsplit tensors against opset 23's Attention on the head splits
    (Reshape, Transpose in; Transpose, Reshape out), the two forms extraction chooses between."""
    width = heads * head
    x = {n: [1, SEQ, width] for n in "qkv"}
    causal = np.where(np.tril(np.ones((SEQ, SEQ), bool)), 0.0, -2.0 ** 127).astype(np.float32)[None, None]
    mask = numpy_helper.from_array(causal, "m")
    mha = [helper.make_node("MultiHeadAttention", ["q", "k", "v", "", "", "m"], ["y"], domain=CONTRIB,
                            num_heads=heads, scale=head ** -0.5)]
    split = [n for name in "qkv" for n in (helper.make_node("Reshape", [name, "heads"], [name + "4"]),
                                            helper.make_node("Transpose", [name + "4"], [name + "t"], perm=[0, 2, 1, 3]))]
    four_d = split + [helper.make_node("Attention", ["qt", "kt", "vt", "m"], ["a"], scale=head ** -0.5),
                      helper.make_node("Transpose", ["a"], ["at"], perm=[0, 2, 1, 3]),
                      helper.make_node("Reshape", ["at", "merged"], ["y"])]
    shapes = [_i("heads", [1, SEQ, heads, head]), _i("merged", [1, SEQ, width])]
    return {f"attention {heads}x{head} causal MultiHeadAttention": (_model(mha, x, [mask], opset=23), x),
            f"attention {heads}x{head} causal Attention (4-D)": (_model(four_d, x, [mask, *shapes], opset=23), x)}


def run(runs: int) -> dict[str, dict]:
    cases = {**rms_cases(576), **rms_cases(896), **rope_cases(9), **rope_cases(3), **rope_cases(14), **gelu_cases(),
             **attention_cases(12), **attention_cases(16), **attention_cases(8, 128)}
    rng = np.random.default_rng(1)
    sessions, feeds, fused_ops = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, inputs) in cases.items():
            path = Path(tmp) / "optimized.onnx"
            sessions[name] = create_session(model, optimize=True, threads=1, optimized_path=path)
            counts = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
            fused_ops[name] = dict(sorted(counts.items()))
            feeds[name] = {k: rng.standard_normal(s).astype(np.float32) for k, s in inputs.items()}
    best = {name: float("inf") for name in cases}
    for _ in range(runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds[name])
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: {"us": round(best[name] * 1e6, 1), "onnxruntime_ops": fused_ops[name]} for name in cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fused_kernels.json"))
    args = parser.parse_args()
    results = run(args.runs)
    for name, row in results.items():
        print(f"{name:58s} {row['us']:9.1f} us  {row['onnxruntime_ops']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
