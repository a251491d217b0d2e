"""eqsat-dnn: superoptimize ONNX models by equality saturation.

The pipeline, one stage per module, each a plain function over a plain type::

    load_model(path)            ONNX file      -> Graph            (onnx_in)
    TensorEGraph(graph)         Graph          -> e-graph          (egraph)
    saturate(teg, rules)        e-graph        -> saturated        (saturate)
    teg.snapshot(cost_model)    e-graph        -> EGraph snapshot  (egraph)
    extract(snapshot)           EGraph         -> Extraction       (extract)
    teg.program(snap, choice)   Extraction     -> Graph            (egraph)
    avoid_slow_fusions(g, cost) Graph          -> lowered Graph    (lower)
    to_onnx(graph)              Graph          -> ONNX model       (onnx_out)
    compare_models(a, b)        two models     -> CheckReport      (check)

    find_blocks(graph)          Graph          -> BlockClasses     (ir.blocks)
    stitch(graph, classes, ...) one search per class and the glue -> Graph  (blocks)

:func:`optimize` runs them all; :func:`eqsat_dnn.search.search` is the middle five on one graph
(the whole model, or one representative of repeated layers and what lies between them).
"""

from eqsat_dnn.runtime.check import CheckReport, compare_models
from eqsat_dnn.cost import CostModel, DeviceProfile, RooflineCostModel, get_cost_model
from eqsat_dnn.eqsat.egraph import Snapshot, TensorEGraph
from eqsat_dnn.errors import CheckError, EqsatError, InputError, OutputError, RuleError
from eqsat_dnn.extract import EXTRACTORS
from eqsat_dnn.extract.base import EGraph, Extraction, ExtractionStatus, ExtractionStop, Extractor, load_egraph_json
from eqsat_dnn.extract.greedy import GreedyExtractor
from eqsat_dnn.ir.graph import Graph, Node, TensorType
from eqsat_dnn.lower import avoid_slow_fusions
from eqsat_dnn.io.onnx_in import load_model
from eqsat_dnn.io.onnx_out import save_model, to_onnx
from eqsat_dnn.pipeline import OptimizeReport, extract, optimize
from eqsat_dnn.eqsat.rules import Rule, load_library, select_rules
from eqsat_dnn.eqsat.saturate import Limits, SaturationReport, SaturationStop, saturate

__version__ = "0.1.0"

_PARTITION = {"DeviceMesh": "DeviceMesh", "Plan": "Plan", "get_mesh": "get_mesh", "run_plan": "run_plan", "train_plan": "train_plan",
              "partition_model": "partition"}
"""Names served from :mod:`eqsat_dnn.partition`, imported when first asked for (it brings the ILP
solver, and ``run_plan`` brings torch): ``import eqsat_dnn`` stays light."""


def __getattr__(name: str) -> object:
    if name in _PARTITION:
        from eqsat_dnn import partition

        value = getattr(partition, _PARTITION[name])
        globals()[name] = value
        return value
    raise AttributeError(f"module 'eqsat_dnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PARTITION))

__all__ = [
    "CheckError", "CheckReport", "CostModel", "DeviceProfile", "EGraph", "EXTRACTORS", "EqsatError", "Extraction",
    "ExtractionStatus", "ExtractionStop", "Extractor", "Graph", "GreedyExtractor", "InputError", "Limits", "Node", "OptimizeReport",
    "OutputError", "RooflineCostModel", "Rule", "RuleError", "SaturationReport", "SaturationStop", "Snapshot",
    "TensorEGraph", "TensorType", "avoid_slow_fusions", "compare_models", "extract", "get_cost_model", "load_egraph_json", "load_library",
    "load_model", "optimize", "saturate", "save_model", "select_rules", "to_onnx", "__version__",
    "DeviceMesh", "Plan", "get_mesh", "partition_model", "run_plan", "train_plan",
]
