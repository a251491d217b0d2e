"""Benchmark: how well the cost models predict onnxruntime on this machine.

For real exports (BERT-base, GPT-2 small, both 12 layers at sequence 128 from torch's dynamo
exporter, and ResNet-50 from onnx's ``backend/test/data/light`` with its weights materialized)
it compares:

* whole model: the cost model's predicted time (``graph_cost(load_model(path), model)``: node
  prices plus the excess of onnxruntime's slow fusions, see ``eqsat_dnn.cost.fusion_sites``) with the
  real onnxruntime latency (``ORT_ENABLE_ALL``, the same intra-op thread count, inputs and
  outputs bound once; median of ``--runs`` runs per pass, interleaved between models, the lower of
  ``--passes`` pass medians: the same statistic the measured model uses per configuration);
* per node: the real model profiled by onnxruntime (``enable_profiling``), kernel times per node of
  onnxruntime's *optimized* graph (median over runs); each optimized node (or chain of fused nodes
  joined by tensors the original graph does not have) is matched with the original nodes it
  computes, and the Spearman rank correlation of predicted against profiled times is taken over
  these groups.

Also prints the figures of the two merges the issue names (three parallel 1x1 convolutions into
one Conv + Split; the Q/K/V projections of BERT-base into one MatMul + Split) and of the lowering
of a residual Add + LayerNormalization into Sum + LayerNormalization: predicted and real speed-up
of the second form.

    python bench/cost_accuracy.py [--threads 1] [--models bert gpt2 resnet50] [--model measured]
        [--out bench/results/cost_accuracy.json]

Timings on a machine shared with other jobs are noisy: run it when the machine is quiet, or read
the spread it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from eqsat_dnn import load_model
from eqsat_dnn.cost import fusion_penalties, get_cost_model, graph_cost, node_costs, priced_nodes
from eqsat_dnn.runtime.sessions import BoundTimer, create_session

LIGHT_DIR = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"


# ---------------------------------------------------------------------------
# models


def materialize_light(name: str, out: Path) -> Path:
    """A light model with its ``ConstantOfShape`` weight generators replaced by initializers
    (the light files generate their weights at load time to stay small)."""
    model = onnx.load(str(LIGHT_DIR / f"light_{name}.onnx"))
    inits = {t.name: t for t in model.graph.initializer}
    rng = np.random.default_rng(0)
    kept, new = [], []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = numpy_helper.to_array(inits[node.input[0]]).astype(np.int64).tolist()
            value = next((numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"), np.zeros(1))
            data = (float(value.reshape(-1)[0]) * (1.0 + 0.1 * rng.standard_normal(shape))).astype(value.dtype)
            new.append(numpy_helper.from_array(np.abs(data) if "var" in node.output[0] else data, node.output[0]))
        else:
            kept.append(node)
    used = {i for n in kept for i in n.input}
    del model.graph.node[:]
    model.graph.node.extend(kept)
    keep_inits = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep_inits + new)
    names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in names or i.name in used]
    inputs = [i for i in inputs if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, 4)  # initializers need not be graph inputs from IR 4
    onnx.save_model(model, str(out))
    return out


def build_models(names: list[str], root: Path) -> dict[str, Path]:
    from eqsat_dnn.models.exports import export_bert, export_gpt2

    paths = {}
    for name in names:
        done = root / f"{name}.onnx"
        if done.exists():  # an earlier run's export (--work-dir)
            paths[name] = done
        elif name == "bert":
            paths[name] = export_bert(root / "bert.onnx", layers=12, seq=128)
        elif name == "gpt2":
            paths[name] = export_gpt2(root / "gpt2.onnx", layers=12, seq=128)
        else:
            paths[name] = materialize_light(name, root / f"{name}.onnx")
    return paths


# ---------------------------------------------------------------------------
# running the real thing


def session(path_or_model, threads: int, profile: bool = False, optimized: str | None = None):
    return create_session(path_or_model, optimize=True, threads=threads, profiling=profile, optimized_path=optimized)


def feeds_for(sess) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        if "int64" in inp.type:
            feeds[inp.name] = (rng.integers(0, 100, shape) if "ids" in inp.name else np.ones(shape)).astype(np.int64)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def runner(source, threads: int) -> BoundTimer:
    """A session on ``source`` (a path or a model) with its inputs and outputs bound once."""
    sess = session(source, threads)
    return BoundTimer(sess, feeds_for(sess))


def canary_model() -> onnx.ModelProto:
    """The measured cost model's canary (a 64x256x256 MatMul), to tell how busy the machine was."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "canary",
                          [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [64, 256])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64, 256])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def real_latency(runners: dict[str, BoundTimer], runs: int, passes: int, threads: int = 1) -> dict[str, dict]:
    """Per model: the lower of the pass medians, every pass median (runs interleaved between the
    models and a canary) and each pass's load (canary median over its best: 1.0 = quiet)."""
    runners = dict(runners, __canary__=runner(canary_model(), threads))
    for r in runners.values():
        for _ in range(3):
            r.once()
    result = {k: {"pass_medians": []} for k in runners}
    for _ in range(passes):
        samples = defaultdict(list)
        for _ in range(runs):
            for k, r in runners.items():
                samples[k].append(r.once())
                if k == "__canary__":
                    for _ in range(9):
                        samples[k].append(r.once())
        for k in runners:
            result[k]["pass_medians"].append(statistics.median(samples[k]))
            result[k].setdefault("all", []).extend(samples[k])
    canary = result.pop("__canary__")["pass_medians"]
    loads = [c / min(canary) for c in canary]
    for k, v in result.items():
        best = min(range(passes), key=lambda i: v["pass_medians"][i])
        v["latency"] = v["pass_medians"][best]
        v["load"] = loads[best]
        v["pass_loads"] = loads
        v["median_all"] = statistics.median(v.pop("all"))
    return result


def profile_nodes(path: str, threads: int, runs: int, tmp: Path) -> tuple[dict[str, float], dict[str, list],
                                                                         onnx.ModelProto]:
    """Median kernel time per node of onnxruntime's optimized graph, each node's output shapes,
    and that graph."""
    optimized = str(tmp / (Path(path).stem + ".opt.onnx"))
    sess = session(path, threads, profile=True, optimized=optimized)
    feeds = feeds_for(sess)
    for _ in range(runs):
        sess.run(None, feeds)
    trace = sess.end_profiling()
    times: dict[str, list[float]] = defaultdict(list)
    shapes: dict[str, list] = {}
    with open(trace) as f:
        for event in json.load(f):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                name = event["name"][: -len("_kernel_time")]
                times[name].append(event["dur"] * 1e-6)
                args_ = event.get("args", {})
                shapes[name] = {key: [list(d.values())[0] for d in args_.get(f"{key}_type_shape", [])]
                                for key in ("input", "output")}
    os.unlink(trace)
    # the first run allocates; drop it
    return ({k: statistics.median(v[1:] if len(v) > 1 else v) for k, v in times.items()}, shapes,
            onnx.load(optimized, load_external_data=False))


# ---------------------------------------------------------------------------
# matching optimized nodes with original ones


def label_nodes(graph, path: Path, out: Path) -> Path:
    """A copy of the model file whose nodes are named ``orig_<index in graph>`` (matched by output
    names), so that onnxruntime's fused nodes, named after their sources, can be traced back."""
    model = onnx.load(str(path))
    index = {o: i for i, n in enumerate(graph.nodes) for o in n.outputs if o}
    for node in model.graph.node:
        for o in node.output:
            if o in index:
                node.name = f"orig_{index[o]}"
                break
    onnx.save_model(model, str(out))
    return out


def groups(graph, optimized: onnx.ModelProto, shapes: dict[str, list]) -> list[tuple[list[int], list[str]]]:
    """(original node indices, optimized node names) per group of fused nodes.

    An optimized node belongs to the original node it is named after (onnxruntime names most
    fused nodes after a source: ``orig_12/MatMulAddFusion``), or for its NCHWc nodes (renamed
    ``r6_nchwc``) to an original node of the same op and output shape, or else to a neighbour it
    was inserted for (the Reshapes around a Gemm, NCHWc reorders), or else to the original node
    that computed its output tensor. Original nodes that onnxruntime fused away join the group
    whose tensors enclose them, or else the group of their latest producer (an epilogue joins
    its Conv).
    """
    from eqsat_dnn.cost import dims

    original_values = set(graph.inputs) | set(graph.weights) | {o for n in graph.nodes for o in n.outputs}
    producer = {o: i for i, n in enumerate(graph.nodes) for o in n.outputs if o}
    opt = list(optimized.graph.node)
    group_of: dict[int, Any] = {}
    for k, node in enumerate(opt):
        match = re.search(r"orig_(\d+)", node.name)
        if match:
            group_of[k] = int(match.group(1))
    # NCHWc nodes: same op, input and output shapes (channels padded to the block), kernel size
    def signature(op: str, shapes_in: list, shape_out: list) -> tuple | None:
        if len(shape_out) != 4 or not shapes_in or len(shapes_in[0]) != 4:
            return None
        pad = [shape_out[0], -(-shape_out[1] // 16), *shape_out[2:]]
        x = shapes_in[0]
        kernel = tuple(shapes_in[1][2:]) if op == "Conv" and len(shapes_in) > 1 else ()
        return (op, *pad, -(-x[1] // 16), *x[2:], *kernel)

    free: dict[tuple, list[int]] = defaultdict(list)
    taken = set(group_of.values())
    for i, node in enumerate(graph.nodes):
        if i not in taken and node.outputs:
            sig = signature(node.op_type, [dims(graph.types.get(v)) for v in node.inputs],
                            dims(graph.types.get(node.outputs[0])))
            if sig:
                free[sig].append(i)
    for k, node in enumerate(opt):
        info = shapes.get(node.name)
        if k in group_of or node.domain != "com.microsoft.nchwc" or not info or not info["output"]:
            continue
        sig = signature(node.op_type, info["input"], info["output"][0])
        if sig and free.get(sig):
            group_of[k] = free[sig].pop(0)
    made = {o: k for k, n in enumerate(opt) for o in n.output if o}
    used: dict[str, list[int]] = defaultdict(list)
    for k, n in enumerate(opt):
        for i in n.input:
            used[i].append(k)

    def attach(through_new_only: bool) -> None:
        changed = True
        while changed:
            changed = False
            for k, node in enumerate(opt):
                if k in group_of:
                    continue
                outs = [o for o in node.output if not (through_new_only and o in original_values)]
                ins = [i for i in node.input if not (through_new_only and i in original_values)]
                near = [c for o in outs for c in used.get(o, []) if c in group_of]
                near += [made[i] for i in ins if i in made and made[i] in group_of]
                if near:
                    group_of[k] = group_of[near[0]]
                    changed = True

    attach(through_new_only=True)
    for k, node in enumerate(opt):
        if k not in group_of:
            for o in node.output:
                if o in producer:
                    group_of[k] = producer[o]
                    break
    attach(through_new_only=False)
    members: dict[Any, dict[str, Any]] = defaultdict(lambda: {"opt": [], "orig": set()})
    for k in range(len(opt)):
        gid = group_of.get(k, ("runtime", k))
        members[gid]["opt"].append(k)
        if isinstance(gid, int):
            members[gid]["orig"].add(gid)
    claimed = {i: gid for gid, g in members.items() for i in g["orig"]}
    for gid, g in list(members.items()):  # tensors that enclose fused-away nodes
        outs = {o for k in g["opt"] for o in opt[k].output if o in producer}
        ins = {i for k in g["opt"] for i in opt[k].input if i in original_values}
        stack = [producer[o] for o in outs]
        seen: set[int] = set()
        while stack:
            idx = stack.pop()
            if idx in seen or claimed.get(idx, gid) != gid:
                continue
            seen.add(idx)
            claimed[idx] = gid
            g["orig"].add(idx)
            stack += [producer[i] for i in graph.nodes[idx].inputs if i and i not in ins and i in producer]
    for idx in range(len(graph.nodes)):  # epilogues fused into their producer
        if idx in claimed:
            continue
        sources = [producer[i] for i in graph.nodes[idx].inputs if i in producer and producer[i] in claimed]
        gid = claimed[max(sources)] if sources else ("fused-away", idx)
        claimed[idx] = gid
        members[gid]["orig"].add(idx)
    return [(sorted(g["orig"]), [opt[k].name for k in g["opt"]]) for g in members.values()]


def _configuration(graph, members: list[int]) -> str:
    """What the cost model sees of a group: each member's op, attributes and input types."""
    return repr(sorted(repr((graph.nodes[i].op_type, sorted(graph.nodes[i].attrs.items()),
                             [graph.types.get(v) for v in graph.nodes[i].inputs])) for i in members))


def spearman(x: list[float], y: list[float]) -> float:
    def ranks(v: list[float]) -> np.ndarray:
        a = np.asarray(v, dtype=float)
        order = a.argsort(kind="mergesort")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=float)
        for value in np.unique(a):  # average ranks of ties
            tie = a == value
            if tie.sum() > 1:
                r[tie] = r[tie].mean()
        return r

    if len(x) < 3:
        return float("nan")
    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


# ---------------------------------------------------------------------------
# the two merges


def merge_cases() -> dict[str, tuple[onnx.ModelProto, onnx.ModelProto]]:
    n = helper.make_node
    rng = np.random.default_rng(1)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.05).astype(np.float32), name)

    def model(nodes, inputs, outputs, inits):
        g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None)
                                                  for o in outputs], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        inferred = onnx.shape_inference.infer_shapes(m)
        by_name = {v.name: v for v in inferred.graph.output}
        for o in m.graph.output:
            o.CopyFrom(by_name[o.name])
        return m

    def x4(c, h):
        return [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c, h, h])]

    cases = {}
    for c, h, cos in [(192, 28, (64, 96, 16)), (256, 28, (128, 128, 128)), (64, 56, (64, 64, 64)),
                      (480, 14, (192, 96, 16))]:
        # each branch: 1x1 conv + relu, then a 3x3 conv (the branch's consumer)
        sep_nodes, sep_inits, mer_nodes = [], [], []
        mer_inits = [w("wm", sum(cos), c, 1, 1), w("bm", sum(cos)),
                     numpy_helper.from_array(np.array(cos, np.int64), "split")]
        mer_nodes += [n("Conv", ["x", "wm", "bm"], ["cm"]), n("Relu", ["cm"], ["rm"]),
                      n("Split", ["rm", "split"], [f"s{i}" for i in range(3)], axis=1)]
        outs = []
        for i, co in enumerate(cos):
            sep_inits += [w(f"w{i}", co, c, 1, 1), w(f"b{i}", co), w(f"w3_{i}", co, co, 3, 3)]
            mer_inits += [w(f"w3_{i}", co, co, 3, 3)]
            sep_nodes += [n("Conv", ["x", f"w{i}", f"b{i}"], [f"c{i}"]), n("Relu", [f"c{i}"], [f"r{i}"]),
                          n("Conv", [f"r{i}", f"w3_{i}"], [f"o{i}"], pads=[1, 1, 1, 1])]
            mer_nodes += [n("Conv", [f"s{i}", f"w3_{i}"], [f"o{i}"], pads=[1, 1, 1, 1])]
            outs.append(f"o{i}")
        cases[f"conv1x1x3 c{c} {h}x{h} -> {'/'.join(map(str, cos))}"] = (
            model(sep_nodes, x4(c, h), outs, sep_inits), model(mer_nodes, x4(c, h), outs, mer_inits))
    for seq in (128, 32):
        hidden, heads = 768, 12
        shp = numpy_helper.from_array(np.array([1, seq, heads, hidden // heads], np.int64), "shp")
        sep_nodes, sep_inits = [], [shp]
        mer_inits = [shp, w("wm", hidden, 3 * hidden), w("bm", 3 * hidden),
                     numpy_helper.from_array(np.array([hidden] * 3, np.int64), "split")]
        mer_nodes = [n("MatMul", ["x", "wm"], ["mm"]), n("Add", ["mm", "bm"], ["am"]),
                     n("Split", ["am", "split"], ["s0", "s1", "s2"], axis=2)]
        outs = []
        for i in range(3):
            sep_inits += [w(f"w{i}", hidden, hidden), w(f"b{i}", hidden)]
            sep_nodes += [n("MatMul", ["x", f"w{i}"], [f"m{i}"]), n("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                          n("Reshape", [f"a{i}", "shp"], [f"r{i}"]),
                          n("Transpose", [f"r{i}"], [f"t{i}"], perm=[0, 2, 1, 3])]
            mer_nodes += [n("Reshape", [f"s{i}", "shp"], [f"r{i}"]),
                          n("Transpose", [f"r{i}"], [f"t{i}"], perm=[0, 2, 1, 3])]
            outs.append(f"t{i}")
        x = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, seq, hidden])]
        cases[f"qkv seq{seq} hidden768"] = (model(sep_nodes, x, outs, sep_inits), model(mer_nodes, x, outs, mer_inits))
    for seq in (128, 32):
        # not a merge: the lowering of a residual Add + LayerNormalization (SkipLayerNormalization in
        # onnxruntime) into Sum + LayerNormalization, which onnxruntime leaves apart
        shape = [1, seq, 768]
        xy = [helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, shape) for v in ("x", "y")]
        ln = [w("g", 768), w("b", 768)]
        pair = [n("LayerNormalization", ["s", "g", "b"], ["o"], axis=-1, epsilon=1e-5)]
        cases[f"lowering: Add+LayerNorm as Sum, 1x{seq}x768"] = (
            model([n("Add", ["x", "y"], ["s"])] + pair, xy, ["o"], ln),
            model([n("Sum", ["x", "y"], ["s"])] + pair, xy, ["o"], ln))
    return cases


# ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["bert", "gpt2", "resnet50"],
                        help="real exports to compare (none: only the merges)")
    parser.add_argument("--model", default="measured", help="cost model name (see eqsat_dnn.cost.get_cost_model)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20, help="real runs per pass")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--profile-runs", type=int, default=50)
    parser.add_argument("--cache-dir", default=None, help="measured model cache (default: the user's cache)")
    parser.add_argument("--no-merges", action="store_true")
    parser.add_argument("--work-dir", default=None,
                        help="keep the exported models here (and reuse them on the next run)")
    parser.add_argument("--out", default="bench/results/cost_accuracy.json")
    args = parser.parse_args()

    options = {"threads": args.threads}
    if args.cache_dir:
        options["cache_dir"] = args.cache_dir
    cost_model = get_cost_model(args.model, **options)
    rows, merges = [], []
    # the merges first, so each one's two forms are measured together on a fresh cache
    if not args.no_merges:
        for label, (sep, mer) in merge_cases().items():
            gs, gm = load_model(sep), load_model(mer)
            # both forms measured side by side, as an e-graph's alternatives
            cost_model.prepare([(n, i, o) for g in (gs, gm) for _, n, i, o in priced_nodes(g)])
            ps, pm = graph_cost(gs, cost_model), graph_cost(gm, cost_model)
            r = real_latency({"sep": runner(sep, args.threads), "mer": runner(mer, args.threads)},
                             max(args.runs, 30), args.passes, args.threads)
            merges.append({"case": label, "predicted_separate_s": ps, "predicted_merged_s": pm,
                           "real_separate_s": r["sep"]["latency"], "real_merged_s": r["mer"]["latency"],
                           "predicted_speed": ps / pm, "real_speed": r["sep"]["latency"] / r["mer"]["latency"]})

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        keep = Path(args.work_dir) if args.work_dir else tmp
        keep.mkdir(parents=True, exist_ok=True)
        paths = build_models(args.models, keep)
        graphs, predicted, price_s = {}, {}, {}
        for name, path in paths.items():
            graphs[name] = load_model(str(path))
            t = time.perf_counter()
            predicted[name] = node_costs(graphs[name], cost_model)
            for site, penalty in fusion_penalties(graphs[name], cost_model).items():
                predicted[name][site.nodes[-1]] += penalty  # the fused kernel's excess, on its last part
            price_s[name] = time.perf_counter() - t
            t = time.perf_counter()
            node_costs(graphs[name], cost_model)
            price_s[name + ":warm"] = time.perf_counter() - t
        runners = {name: runner(str(path), args.threads) for name, path in paths.items()}
        real = real_latency(runners, args.runs, args.passes, args.threads)
        del runners
        for name, path in paths.items():
            graph = graphs[name]
            labelled = label_nodes(graph, path, tmp / f"{name}.labelled.onnx")
            prof, shapes, optimized = profile_nodes(str(labelled), args.threads, args.profile_runs, tmp)
            pred = predicted[name]
            xs, ys, by_op = [], [], defaultdict(lambda: [0.0, 0.0, 0])
            configs: dict[str, list[tuple[float, float]]] = defaultdict(list)
            for members, opt_names in groups(graph, optimized, shapes):
                p = sum(pred.get(i, 0.0) for i in members)
                m = sum(prof.get(k, 0.0) for k in opt_names)
                if not members and m == 0.0:
                    continue
                xs.append(p)
                ys.append(m)
                configs[_configuration(graph, members)].append((p, m))
                key = "+".join(sorted({graph.nodes[i].op_type for i in members})) or "(runtime-only)"
                by_op[key][0] += p
                by_op[key][1] += m
                by_op[key][2] += 1
            total_pred = sum(pred.values())
            rows.append({
                "model": name, "nodes": len(graph.nodes), "optimized_nodes": len(optimized.graph.node),
                "predicted_s": total_pred, "real_s": real[name]["latency"],
                "real_pass_medians_s": real[name]["pass_medians"], "real_median_all_s": real[name]["median_all"],
                "real_pass_loads": real[name]["pass_loads"], "real_load": real[name]["load"],
                "profiled_kernel_sum_s": sum(prof.values()),
                "error": total_pred / real[name]["latency"] - 1.0,
                "spearman": spearman(xs, ys), "groups": len(xs),
                # repeated blocks (ResNet's identical bottlenecks) give groups no model can rank
                # apart: their prices tie while their profiled times differ by noise; per distinct
                # configuration (median of its groups' times) the ranking is the model's own
                "spearman_configs": spearman([statistics.median(p for p, _ in v) for v in configs.values()],
                                             [statistics.median(m for _, m in v) for v in configs.values()]),
                "configs": len(configs),
                "per_configuration": sorted(
                    ({"configuration": k, "groups": len(v),
                      "predicted_s": statistics.median(p for p, _ in v),
                      "profiled_s": statistics.median(m for _, m in v)} for k, v in configs.items()),
                    key=lambda c: -c["profiled_s"]),
                "pricing_cold_s": price_s[name], "pricing_warm_s": price_s[name + ":warm"],
                "by_op": {k: {"predicted_s": v[0], "profiled_s": v[1], "groups": v[2]}
                          for k, v in sorted(by_op.items(), key=lambda kv: -kv[1][1])},
            })
    print(f"cost model {cost_model.name}, {args.threads} thread(s), onnxruntime {ort.__version__}\n")
    print("| model | nodes | ORT nodes | predicted ms | real ms (pass medians @ load) | error | Spearman (groups) |"
          " Spearman (configurations) | pricing cold / warm s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        passes = ", ".join(f"{v * 1e3:.1f}@{load:.2f}" for v, load in zip(r["real_pass_medians_s"],
                                                                           r["real_pass_loads"]))
        print(f"| {r['model']} | {r['nodes']} | {r['optimized_nodes']} | {r['predicted_s'] * 1e3:.1f} | "
              f"{r['real_s'] * 1e3:.1f} ({passes}) | {r['error'] * 100:+.1f}% | {r['spearman']:.3f} ({r['groups']}) | "
              f"{r['spearman_configs']:.3f} ({r['configs']}) | {r['pricing_cold_s']:.1f} / {r['pricing_warm_s']:.2f} |")
    for r in rows:
        print(f"\n{r['model']}: predicted vs profiled per op group (profiled kernels sum "
              f"{r['profiled_kernel_sum_s'] * 1e3:.1f} ms)\n")
        print("| ops | groups | predicted ms | profiled ms | ratio |")
        print("|---|---|---|---|---|")
        for key, v in r["by_op"].items():
            ratio = v["predicted_s"] / v["profiled_s"] if v["profiled_s"] else float("inf")
            print(f"| {key} | {v['groups']} | {v['predicted_s'] * 1e3:.2f} | {v['profiled_s'] * 1e3:.2f} | {ratio:.2f} |")
    if merges:
        print("\n| merge | predicted sep / merged ms | predicted speed | real sep / merged ms | real speed |")
        print("|---|---|---|---|---|")
        for m in merges:
            print(f"| {m['case']} | {m['predicted_separate_s'] * 1e3:.3f} / {m['predicted_merged_s'] * 1e3:.3f} | "
                  f"{m['predicted_speed']:.3f} | {m['real_separate_s'] * 1e3:.3f} / {m['real_merged_s'] * 1e3:.3f} | "
                  f"{m['real_speed']:.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cost_model": cost_model.name, "threads": args.threads,
                               "onnxruntime": ort.__version__, "models": rows, "merges": merges}, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
