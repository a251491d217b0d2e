"""End to end: real models in, verified models out."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from eqsat_dnn import ExtractionStatus, Limits, compare_models, get_cost_model, load_model, optimize, select_rules
from eqsat_dnn.models.examples import attention_block
from eqsat_dnn.io.onnx_out import check_model
from eqsat_dnn.eqsat.rules import library_dir
from tests.conftest import light_model


def _run(model: onnx.ModelProto | str, feeds: dict) -> list[np.ndarray]:
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_example_is_optimized_and_matches():
    model = attention_block()
    optimized, report = optimize(model, extractor="greedy", check=3)
    assert report.check is not None and report.check.ok and report.check.runs == 3
    # the starter rules remove the Identity, the reshape round trip and fold the LoRA adapter
    assert report.ops_after.get("Identity", 0) == 0
    assert report.ops_after["MatMul"] < report.ops_before["MatMul"]
    assert report.ops_after["Reshape"] < report.ops_before["Reshape"]
    assert report.cost_after < report.cost_before
    assert report.saturation.stop_reason == "saturated"
    check_model(optimized)
    # graph interface, names and metadata survive
    assert [i.name for i in optimized.graph.input] == ["x"]
    assert [o.name for o in optimized.graph.output] == ["y"]
    assert optimized.producer_name == "eqsat-dnn"
    assert optimized.graph.doc_string == model.graph.doc_string
    names = {n.name for n in optimized.graph.node}
    assert {"ln", "softmax"} <= names
    # independent check of the outputs, with a fresh seed
    x = np.random.default_rng(123).standard_normal((32, 64)).astype(np.float32)
    np.testing.assert_allclose(_run(optimized, {"x": x})[0], _run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet50", "squeezenet", "inception_v2"])
def test_real_cnn_round_trip(name):
    path = light_model(name)
    optimized, report = optimize(str(path), extractor="greedy", check=1)
    assert report.check.ok
    assert report.nodes_after <= report.nodes_before
    check_model(optimized)
    # the reference output shipped with onnx, through the optimized model
    original = onnx.load(str(path))
    expected = onnx.numpy_helper.to_array(onnx.load_tensor(str(path).replace(".onnx", "_output_0.pb")))
    feeds = {i.name: np.zeros([d.dim_value for d in i.type.tensor_type.shape.dim], np.float32)
             for i in original.graph.input if i.name not in {t.name for t in original.graph.initializer}}
    del expected  # the light models ship reference outputs for their own (unpublished) inputs
    np.testing.assert_allclose(_run(optimized, feeds)[0], _run(str(path), feeds)[0], rtol=1e-4, atol=1e-5)


def test_opset9_model_is_upgraded():
    path = light_model("squeezenet")
    assert onnx.load(str(path)).opset_import[0].version < 13
    graph = load_model(str(path))
    assert graph.opset >= 13
    assert graph.op_counts()["Conv"] > 10


@pytest.mark.parametrize("key", ["bert-dynamo", "gpt2-dynamo", "bert-torchscript", "gpt2-torchscript"])
def test_real_transformer_exports(tiny_exports, key):
    optimized, report = optimize(str(tiny_exports[key]), extractor="greedy", check=2)
    assert report.check.ok and report.check.runs == 2
    assert report.cost_after <= report.cost_before * 1.0001
    check_model(optimized)
    original = onnx.load(str(tiny_exports[key]))
    assert [o.name for o in optimized.graph.output] == [o.name for o in original.graph.output]
    assert [i.name for i in optimized.graph.input] == [i.name for i in original.graph.input]


def test_dynamic_dims_kept_and_overridable(tiny_exports):
    path = str(tiny_exports["bert-dynamic"])
    optimized, report = optimize(path, extractor="greedy", check=1)
    dims = [d.dim_param for d in optimized.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq"]
    fixed, _ = optimize(path, extractor="greedy", check=1, input_shapes={"input_ids": [3, 8],
                                                                         "attention_mask": [3, 8]})
    dims = [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 8]


def test_limits_stop_saturation():
    _, report = optimize(attention_block(), extractor="greedy", limits=Limits(iterations=1), check=1)
    assert report.saturation.stop_reason == "iteration limit"
    assert len(report.saturation.iterations) == 1
    _, report = optimize(attention_block(), extractor="greedy", limits=Limits(nodes=10), check=1)
    assert report.saturation.stop_reason == "node limit"


def _wrong_rules(tmp_path) -> str:
    wrong = tmp_path / "wrong.egg"
    wrong.write_text(';; matmul does not commute\n(rewrite (MatMul a b) (MatMul b a) :name "matmul-comm")\n'
                     ';; and this one makes it pay off\n(rewrite (Relu x) (Sigmoid x) :name "relu-sigmoid")\n')
    return str(wrong)


def test_a_wrong_rule_is_caught_by_the_check_and_left_out(tmp_path):
    """The check (or onnx's checker) catches the wrong program; the input program, which is in
    the e-graph, is kept, and the warning names the rules that can build what was left out."""
    optimized, report = optimize(attention_block(), rules=[_wrong_rules(tmp_path)], extractor="greedy", check=1)
    assert report.check.ok and report.repair is not None
    assert "matmul-comm" in report.repair.rules
    assert "Sigmoid" not in report.ops_after


def test_a_wrong_rule_is_left_out_even_without_the_check(tmp_path):
    """With ``check=0`` onnx's checker still rejects the ill-typed program matmul-comm makes."""
    optimized, report = optimize(attention_block(), rules=[_wrong_rules(tmp_path)], extractor="greedy", check=0)
    check_model(optimized)


def test_compare_models_reports_a_difference():
    model = attention_block()
    other = attention_block(seed=1)
    report = compare_models(model, other, runs=1)
    assert not report.ok and "y" in report.failures[0]


def _inception_branches(batch_norm: bool) -> onnx.ModelProto:
    """A 1x1 and a 3x3 conv ("same" padding) of one input, concatenated (an Inception block),
    each followed by BatchNormalization when asked."""
    rng = np.random.default_rng(0)

    def init(name, *shape, positive=False):
        value = rng.uniform(0.5, 1.5, shape) if positive else rng.standard_normal(shape) * 0.3
        return numpy_helper.from_array(value.astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[0, 0, 0, 0]),
             helper.make_node("Conv", ["x", "w3"], ["c3"], pads=[1, 1, 1, 1])]
    inits = [init("w1", 8, 4, 1, 1), init("w3", 8, 4, 3, 3)]
    outs = ["c1", "c3"]
    if batch_norm:
        for k, c in enumerate(outs):
            nodes.append(helper.make_node("BatchNormalization", [c, f"s{k}", f"b{k}", f"m{k}", f"v{k}"], [f"n{k}"]))
            inits += [init(f"s{k}", 8), init(f"b{k}", 8), init(f"m{k}", 8), init(f"v{k}", 8, positive=True)]
        outs = ["n0", "n1"]
    nodes.append(helper.make_node("Concat", outs, ["y"], axis=1))
    graph = helper.make_graph(nodes, "branches", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_batchnorm_folds_into_convs():
    optimized, report = optimize(_inception_branches(batch_norm=True), check=3)
    assert report.check.ok
    assert report.ops_before["BatchNormalization"] == 2 and "BatchNormalization" not in report.ops_after
    assert report.ops_after["Conv"] == 2 and report.cost_after < report.cost_before


def test_gpu_profiles_search_the_merges_by_default():
    # after folding, the batch norms are the convs' biases: the biased enlarge-then-merge makes
    # one conv of the two under a GPU profile; the CPU default does not even search it
    model = _inception_branches(batch_norm=True)
    _, gpu = optimize(model, check=3, cost_model=get_cost_model("roofline:t4"))
    assert gpu.check.ok
    assert gpu.saturation.matches_per_rule().get("multi-conv-enlarge-merge-biased", 0) >= 1
    assert gpu.ops_after == {"Conv": 1}, gpu.ops_after
    _, cpu = optimize(model, check=1)
    assert not any(name.startswith("multi-") for name in cpu.saturation.matches_per_rule())
    assert cpu.rules == len(select_rules()) < gpu.rules


def test_enlarge_then_merge_under_a_gpu_profile():
    # Tensat's enlarge-then-merge: the 1x1 kernel zero-padded to 3x3, both convs in one; a GPU
    # profile pays for one launch less, the outputs must still match
    rules = select_rules() + select_rules([str(library_dir() / "multi")])
    optimized, report = optimize(_inception_branches(batch_norm=False), rules=rules, check=3,
                                 cost_model=get_cost_model("roofline:t4"))
    assert report.check.ok
    matches = report.saturation.matches_per_rule()
    assert matches.get("multi-conv-enlarge-merge", 0) >= 1
    assert report.ops_after.get("Conv") == 1, report.ops_after


def _cancelling_and_mergeable() -> onnx.ModelProto:
    """``y1 = (x + 1e8) + (-1e8)``, which reassociation turns into ``x`` (the original computes
    rounding noise), beside ``y2 = x @ a + x @ b``, which one product computes just as well."""
    rng = np.random.default_rng(0)
    consts = [numpy_helper.from_array(np.full((16, 64), v, np.float32), n) for n, v in (("c1", 1e8), ("c2", -1e8))]
    weights = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), n) for n in "ab"]
    nodes = [helper.make_node("Add", ["x", "c1"], ["p"]), helper.make_node("Add", ["p", "c2"], ["y1"]),
             helper.make_node("MatMul", ["x", "a"], ["xa"]), helper.make_node("MatMul", ["x", "b"], ["xb"]),
             helper.make_node("Add", ["xa", "xb"], ["y2"])]
    vi = lambda name: helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [16, 64])
    graph = helper.make_graph(nodes, "g", [vi("x")], [vi("y1"), vi("y2")], consts + weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("extractor", ["greedy", "ilp"])
def test_a_float_unsound_rewrite_never_fails_a_valid_model(extractor):
    """Defect 8 of the reliability issue: the reassociated program fails the check; the pipeline
    finds the e-nodes to blame, excludes them, keeps the sound gain and warns, naming the rules."""
    optimized, report = optimize(_cancelling_and_mergeable(), extractor=extractor, check=1)
    assert report.check.ok and report.repair is not None and not report.repair.kept_input
    assert report.ops_after.get("MatMul") == 1  # x @ (a + b): the sound rewrite stays
    assert report.ops_after.get("Add") == 2  # y1 computed as written
    assert "add-assoc" in report.repair.rules and any("failed the output check" in w for w in report.warnings)
    assert report.to_dict()["repair"]["excluded"] == len(report.repair.excluded) > 0


def test_the_input_program_is_the_last_resort(monkeypatch):
    """When nothing but the input program passes, it is kept (exit 0, a warning), never an error."""
    from eqsat_dnn import repair as repair_module

    monkeypatch.setattr(repair_module, "MAX_ROUNDS", 0)
    optimized, report = optimize(_cancelling_and_mergeable(), extractor="greedy", check=1)
    assert report.check.ok and report.repair.kept_input
    assert report.ops_after == {"Add": 3, "MatMul": 2}
    assert "kept the input program" in report.warnings[-1]


def test_every_library_rule_says_its_arithmetic():
    """The floating-point policy: each rule holds in IEEE float (exact) or in real arithmetic only."""
    from eqsat_dnn.eqsat.rules import Arithmetic, default_rules

    rules = {r.name: r.arithmetic for r in default_rules(merges=True)}
    assert rules["add-comm"] is Arithmetic.EXACT and rules["transpose-transpose-2d"] is Arithmetic.EXACT
    assert rules["add-assoc"] is Arithmetic.REAL and rules["matmul-assoc"] is Arithmetic.REAL
    assert rules["bn-into-conv"] is Arithmetic.REAL and rules["multi-conv-enlarge-merge"] is Arithmetic.REAL
    assert rules["multi-conv-merge-kernels"] is Arithmetic.EXACT


def test_a_rule_file_says_its_arithmetic(tmp_path):
    from eqsat_dnn.eqsat.rules import Arithmetic, parse_rule_file
    from eqsat_dnn.errors import RuleError

    path = tmp_path / "mine.egg"
    path.write_text(";; My rules.\n;; float: exact\n\n;; Relu twice is Relu.\n(rewrite (Relu (Relu x)) (Relu x) "
                    ":name \"relu-relu\")\n\n;; Mul by a sum.\n;; float: real\n(rewrite (Mul a (Add b c)) "
                    "(Add (Mul a b) (Mul a c)) :name \"distribute\")\n\n(rewrite (Neg (Neg x)) x :name \"neg-neg\")\n")
    arithmetic = {r.name: r.arithmetic for r in parse_rule_file(path)}
    assert arithmetic == {"relu-relu": Arithmetic.EXACT, "distribute": Arithmetic.REAL, "neg-neg": Arithmetic.EXACT}
    path.write_text("(rewrite (Neg (Neg x)) x :name \"neg-neg\")\n")
    assert parse_rule_file(path)[0].arithmetic is Arithmetic.REAL  # unsaid: real (the cautious reading)
    path.write_text(";; float: sometimes\n\n(rewrite (Neg (Neg x)) x :name \"neg-neg\")\n")
    with pytest.raises(RuleError, match="float"):
        parse_rule_file(path)


def test_exact_mode_admits_only_exact_rewrites():
    """x @ a + x @ b = x @ (a + b) holds in real arithmetic only: --exact leaves it out."""
    _, loose = optimize(_cancelling_and_mergeable(), extractor="greedy", check=1)
    _, exact = optimize(_cancelling_and_mergeable(), extractor="greedy", check=1, exact=True)
    assert loose.ops_after.get("MatMul") == 1 and exact.ops_after.get("MatMul") == 2
    assert exact.repair is None and exact.check.ok
    assert exact.rules < loose.rules


def test_a_kept_input_program_is_a_field_shown_beside_the_status():
    """Nothing to gain (one Relu): the input program is kept; the extraction's status stays what
    the extractor said, and the JSON and the table show the fact as they always did."""
    from rich.console import Console

    from eqsat_dnn.report import optimize_table

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    _, report = optimize(model, extractor="greedy", check=0)
    assert report.kept_input
    assert report.extraction.status is ExtractionStatus.GREEDY
    assert report.to_dict()["extraction"]["status"] == "greedy (kept input program)"
    console = Console(record=True, width=300)
    console.print(optimize_table(report))
    assert "greedy: greedy (kept input program)" in console.export_text()
    from eqsat_dnn.blocks import BlockPath

    report.blocks_path = BlockPath.BLOCKS  # searched block by block, the extraction is the glue's
    assert report.extraction_status == "greedy (kept the glue's input program)"
