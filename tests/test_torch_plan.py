"""A partitioning plan said of the exported PyTorch module (eqsat_dnn.partition.torch_plan): ONNX
initializers back to parameters (kept names and transposed ``val_N`` weights), column/row-parallel
detection, the Megatron pairing of local shards, the per-parameter fallback, and the emitted plan
applied with ``parallelize_module`` on 2 gloo processes training like one device."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from eqsat_dnn.cli import main  # noqa: E402
from eqsat_dnn.errors import InputError  # noqa: E402
from eqsat_dnn.io.onnx_in import load_model  # noqa: E402
from eqsat_dnn.partition import get_mesh, partition  # noqa: E402
from eqsat_dnn.partition.plan import plan_from_assignment  # noqa: E402
from eqsat_dnn.partition.problem import BASELINES, build_problem  # noqa: E402
from eqsat_dnn.partition.torch_plan import Style, load_torch_plan, to_parallelize_plan, torch_plan  # noqa: E402

HIDDEN, HEADS, SEQ, BATCH = 16, 4, 8, 2


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(HIDDEN, 2 * HIDDEN)
        self.fc2 = nn.Linear(2 * HIDDEN, HIDDEN)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class Attention(nn.Module):
    """As transformers writes attention: heads from ``view(..., -1, head_dim)``, so a local shard of
    q/k/v is a local set of heads; a pre-norm with a weight and a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(HIDDEN)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(HIDDEN, HIDDEN) for _ in range(3))
        self.o_proj = nn.Linear(HIDDEN, HIDDEN, bias=False)

    def forward(self, x):
        b, s, _ = x.shape
        h = self.norm(x)
        q, k, v = (p(h).view(b, s, -1, HIDDEN // HEADS).transpose(1, 2) for p in (self.q_proj, self.k_proj,
                                                                                    self.v_proj))
        scores = torch.softmax(q @ k.transpose(-1, -2) * (HIDDEN // HEADS) ** -0.5, dim=-1)
        return x + self.o_proj((scores @ v).transpose(1, 2).reshape(b, s, -1))


def build_mlp():
    torch.manual_seed(0)
    return MLP(), (torch.randn(BATCH, SEQ, HIDDEN, generator=torch.Generator().manual_seed(1)),)


def build_attention():
    torch.manual_seed(0)
    return Attention(), (torch.randn(BATCH, SEQ, HIDDEN, generator=torch.Generator().manual_seed(1)),)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Dynamo exports of both modules (the metadata the mapping reads)."""
    import warnings

    out = {}
    for name, build in (("mlp", build_mlp), ("attention", build_attention)):
        module, inputs = build()
        path = tmp_path_factory.mktemp("torch_plan") / f"{name}.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, inputs, str(path), input_names=["x"], output_names=["y"], dynamo=True,
                              verbose=False)
        out[name] = path
    return out


def _baseline(path, name, mesh="2"):
    graph = load_model(path, load_weights=False)
    problem = build_problem(graph, get_mesh(mesh, "cpu"), "train", optimizer="sgd")
    return graph, problem, plan_from_assignment(problem, BASELINES[name](problem))


def _weight_of(tp, parameter):
    return next(t for t, s in tp.sources.items() if s.parameter == parameter)


def test_initializers_map_to_parameters_transposed_where_renamed(exported):
    graph, _, plan = _baseline(exported["mlp"], "megatron")
    tp = torch_plan(graph, plan)
    params = {s.parameter: s for s in tp.sources.values()}
    assert set(params) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    fc1 = params["fc1.weight"]
    assert fc1.transposed and fc1.tensor != "fc1.weight" and fc1.module == "fc1"  # val_N = fc1.weight^T
    assert graph.types[fc1.tensor].shape == (HIDDEN, 2 * HIDDEN)
    assert not params["fc1.bias"].transposed and params["fc1.bias"].tensor == "fc1.bias"  # kept its name
    # Megatron's column rule splits the ONNX [in, out] weight by columns: nn.Linear's rows
    assert [str(p) for p in plan.placements[fc1.tensor]] == ["Shard(1)"]
    assert tp.parameters["fc1.weight"] == ["Shard(0)"] and tp.parameters["fc2.weight"] == ["Shard(1)"]


def test_megatron_pairs_become_local_colwise_and_rowwise(exported):
    for name, cols, rows in (("mlp", ["fc1"], ["fc2"]), ("attention", ["q_proj", "k_proj", "v_proj"], ["o_proj"])):
        graph, _, plan = _baseline(exported[name], "megatron")
        tp = torch_plan(graph, plan)
        for module in cols:
            style = tp.styles[module]
            assert (style.style, style.input_layouts, style.output_layouts) == (Style.COLWISE, "Replicate()",
                                                                                "Shard(-1)"), (name, module)
        for module in rows:
            style = tp.styles[module]
            assert (style.style, style.input_layouts, style.output_layouts) == (Style.ROWWISE, "Shard(-1)",
                                                                                "Replicate()"), (name, module)


def test_a_column_split_the_plan_gathers_is_not_left_local(exported):
    """fc1 column-parallel, fc2 replicated: fc1's output must be whole for fc2 in torch."""
    graph, problem, _ = _baseline(exported["mlp"], "megatron")
    assignment = BASELINES["megatron"](problem)
    fc2 = next(t for t, s in torch_plan(graph, plan_from_assignment(problem, assignment)).sources.items()
               if s.parameter == "fc2.weight")
    for i, item in enumerate(problem.items):
        if item.kind == "weight" and item.label == fc2 or item.kind == "node" and fc2 in item.consumes:
            assignment[i] = next(c for c, ch in enumerate(item.choices)
                                 if all(s is None or all(str(p) == "Replicate()" for p in s)
                                        for s in list(ch.consumes) + list(ch.produces)))
    tp = torch_plan(graph, plan_from_assignment(problem, assignment))
    assert tp.styles["fc1"].style is Style.COLWISE and tp.styles["fc1"].output_layouts == "Replicate()"
    assert "fc2" not in tp.styles and "fc2.weight" not in tp.parameters


def test_layouts_no_style_fits_are_per_parameter(exported):
    graph, _, fsdp = _baseline(exported["attention"], "fsdp")  # stored split, gathered to be used
    tp = torch_plan(graph, fsdp)
    assert tp.styles and all(s.style is Style.PARAMETERS for s in tp.styles.values())
    assert tp.styles["q_proj"].placements["weight"] == tp.parameters["q_proj.weight"]
    assert "norm" in tp.styles  # a LayerNorm weight has no tensor-parallel style
    _, _, two_d = _baseline(exported["attention"], "megatron", mesh="2x2")
    tp2 = torch_plan(graph, two_d)
    assert all(s.style is Style.PARAMETERS for s in tp2.styles.values())
    assert all(len(p) == 2 for p in tp2.parameters.values()) and any("1-D" in n for n in tp2.notes)


def test_a_model_without_export_metadata_maps_nothing():
    from eqsat_dnn.models.blocks import transformer_mlp

    graph = load_model(transformer_mlp(batch=2, seq=8, hidden=16, ffn=32), load_weights=False)
    problem = build_problem(graph, get_mesh("2", "cpu"), "train", optimizer="sgd")
    tp = torch_plan(graph, plan_from_assignment(problem, BASELINES["megatron"](problem)))
    assert not tp.styles and not tp.sources and tp.unmapped and "metadata" in tp.notes[0]


def test_parallelize_plan_and_its_errors(exported, tmp_path):
    from torch.distributed.tensor.parallel import ColwiseParallel, ParallelStyle, RowwiseParallel

    graph, _, plan = _baseline(exported["attention"], "megatron")
    data = torch_plan(graph, plan).to_dict()
    json.loads(json.dumps(data))  # JSON as it is
    styles = to_parallelize_plan(data)
    assert isinstance(styles["q_proj"], ColwiseParallel) and isinstance(styles["o_proj"], RowwiseParallel)
    assert all(isinstance(s, ParallelStyle) for s in styles.values())
    assert set(to_parallelize_plan({"torch_plan": data}, prefix="q_")) == {"proj"}
    with pytest.raises(InputError, match="not a torch plan"):
        load_torch_plan({"version": 1})
    with pytest.raises(InputError, match="cannot read"):
        load_torch_plan(tmp_path / "absent.json")
    data["styles"]["q_proj"]["style"] = "Diagonal"
    with pytest.raises(InputError, match="q_proj"):
        to_parallelize_plan(data)


def test_cli_writes_the_torch_plan(exported, tmp_path, capsys):
    out = tmp_path / "torch.json"
    code = main(["partition", str(exported["mlp"]), "--mesh", "2", "--machine", "cpu", "--mode", "train",
                 "-o", str(tmp_path / "plan.json"), "--torch-plan", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)["torch_plan"]
    assert summary["path"] == str(out) and load_torch_plan(out)["mesh"] == [2]
    assert main(["partition", str(exported["mlp"]), "--mesh", "2", "-o", str(out), "--torch-plan", str(out)]) != 0
    assert "--torch-plan would overwrite" in capsys.readouterr().err


def test_emitted_plans_train_on_2_processes_like_one_device(exported):
    """parallelize_module with the emitted plan: the Megatron attention (local heads), and the ILP's
    plan of the MLP under a memory bound (column- and row-parallel), SGD and Adam."""
    from eqsat_dnn.partition.torch_train import check_torch_plans

    graph, problem, megatron = _baseline(exported["attention"], "megatron")
    attention = torch_plan(graph, megatron).to_dict()
    mlp_graph = load_model(exported["mlp"], load_weights=False)
    replicated = partition(mlp_graph, "2", machine="cpu", mode="train", optimizer="adam")
    bound = 0.7 * replicated.baselines["data_parallel"].memory_bytes_per_device / 2 ** 30
    mlp = torch_plan(mlp_graph, partition(mlp_graph, "2", machine="cpu", mode="train", optimizer="adam",
                                          memory_gb=bound)).to_dict()
    assert {s["style"] for s in mlp["styles"].values()} & {"ColwiseParallel", "RowwiseParallel"}
    reports = check_torch_plans([(build_attention, attention, "sgd", 0.05), (build_mlp, mlp, "adam", 0.01)], steps=3)
    for report in reports:
        assert report.ok and report.loss_max_rel_error <= 1e-4, report.to_dict()
        assert report.losses[-1] < report.losses[0]
