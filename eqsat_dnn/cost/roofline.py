"""The roofline cost model: the larger of compute time (FLOPs over the peak for the dtype) and
memory time (bytes over bandwidth), plus a fixed per-kernel overhead, against a
:class:`~eqsat_dnn.cost.profiles.DeviceProfile`, fusion-aware (:mod:`eqsat_dnn.cost.fusion`).
"""

from __future__ import annotations

import math
from typing import Iterable

from eqsat_dnn.cost.fusion import (
    CONV_ACTIVATIONS,
    VIEW_OPS,
    FusionSite,
    fusion_role,
    layout_boundary,
    main_operand,
    same_shape,
)
from eqsat_dnn.cost.profiles import CPU_PROFILE, DeviceProfile
from eqsat_dnn.cost.shapes import flops, itemsize, numel, split_output_types
from eqsat_dnn.ir.graph import Node, TensorType

FOLDED_SHARE = 0.05
"""What a node onnxruntime folds into a Conv's weights costs, as a share of the kernel overhead:
not zero, or the extractor would keep useless ones."""


class RooflineCostModel:
    """max(FLOPs / peak, bytes / bandwidth) + per-kernel overhead, fusion-aware.

    Fused epilogues (see :func:`fusion_role`) cost only the extra operand they read;
    on a profile with ``nchwc`` a channel Split/Slice also pays its layout reorders.
    """

    def __init__(self, profile: DeviceProfile = CPU_PROFILE, fusion: bool = True) -> None:
        self.profile = profile
        self.fusion = fusion
        self.name = f"roofline:{profile.name}"

    def prepare(self, items: Iterable[tuple[Node, list[TensorType | None], TensorType | None]]) -> None:
        """Nothing to measure: every price is computed."""

    def node_cost(self, node: Node, inputs: list[TensorType | None], output: TensorType | None) -> float:
        op = node.op_type
        p = self.profile
        role = fusion_role(op, node.attrs, inputs, output) if self.fusion else (
            "view" if op in VIEW_OPS else "kernel")
        if role == "view":
            return p.view_overhead if p.view_overhead is not None else p.overhead * 0.1
        if role == "gelu_part":
            return flops(op, node.attrs, inputs, output) / p.peak(output.dtype if output else None)
        if role == "conv_epilogue" and (op == "BatchNormalization" or (
                op in ("Add", "Mul") and not same_shape(inputs[0], inputs[1]))):
            # folded into the Conv's weights when the session is created (ConvBNFusion,
            # ConvAddFusion, ConvMulFusion): next to nothing, but not free (see FOLDED_SHARE)
            return p.overhead * FOLDED_SHARE
        if role in ("conv_epilogue", "gemm_epilogue"):
            main = 0 if op in CONV_ACTIVATIONS or op == "BatchNormalization" else main_operand(inputs, output)
            extra = sum(numel(t) * itemsize(t) for k, t in enumerate(inputs) if k != main and t is not None)
            return max(flops(op, node.attrs, inputs, output) / p.peak(output.dtype if output else None),
                       extra / p.bandwidth)
        outputs = split_output_types(node, inputs, output)
        compute = flops(op, node.attrs, inputs, output) / p.peak(output.dtype if output else None)
        if op == "Attention" and float(node.attrs.get("softcap") or 0.0) > 0.0:
            compute *= p.slow_kernels.get("attention_softcap", 1.0)
        written = sum(numel(t) * itemsize(t) for t in outputs)
        if op == "Slice":  # reads only the part it copies (a block of rows reads a block's bytes)
            moved = 2.0 * written
        else:
            moved = float(sum(numel(t) * itemsize(t) for t in inputs if t is not None) + written)
        cost = max(compute, moved / p.bandwidth) + p.overhead
        if p.nchwc and self.fusion:
            before, after = layout_boundary(op, node.attrs, inputs, outputs)
            for shape in before + after:
                cost += 2 * 4 * math.prod(shape) / p.bandwidth + p.overhead
        return cost

    def fusion_penalty(self, site: FusionSite) -> float:
        """What the runtime's fused kernel costs beyond its parts (see :attr:`DeviceProfile.slow_fusions`)."""
        slowdown = self.profile.slow_fusions.get(site.kind, 1.0) if self.fusion else 1.0
        if slowdown <= 1.0:
            return 0.0
        return (slowdown - 1.0) * sum(self.node_cost(node, inputs, output) for node, inputs, output in site.parts())


__all__ = ["FOLDED_SHARE", "RooflineCostModel"]
