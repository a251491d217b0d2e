"""A small bundled example model, built in code (no model files in the repository).

:func:`attention_block` is one pre-norm transformer block in plain ONNX ops, with
seeded random weights, written the way naive exporters write it: projections as
separate matmuls that share their input and are summed, a reshape/transpose round
trip, and Identity nodes. The starter rules have something to find in it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def attention_block(seq: int = 32, hidden: int = 64, heads: int = 4, seed: int = 0) -> onnx.ModelProto:
    """One self-attention + MLP block over ``x: [seq, hidden]``, opset 17."""
    rng = np.random.default_rng(seed)
    head = hidden // heads

    def weight(name: str, *shape: int, scale: float = 0.1) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    def ints(name: str, values: list[int]) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(values, dtype=np.int64), name)

    inits = [
        weight("ln_scale", hidden, scale=1.0), weight("ln_bias", hidden),
        weight("w_q", hidden, hidden), weight("w_k", hidden, hidden), weight("w_v", hidden, hidden),
        weight("w_o", hidden, hidden), weight("w_up", hidden, 4 * hidden), weight("w_up_lora_a", hidden, 4),
        weight("w_up_lora_b", 4, 4 * hidden), weight("w_down", 4 * hidden, hidden),
        weight("w_skip", hidden, hidden),
        ints("heads_shape", [seq, heads, head]), ints("flat_shape", [seq, hidden]),
        numpy_helper.from_array(np.array(1.0 / np.sqrt(head), dtype=np.float32), "scale"),
    ]
    n = helper.make_node
    nodes = [
        n("LayerNormalization", ["x", "ln_scale", "ln_bias"], ["h"], axis=-1, name="ln"),
        n("Identity", ["h"], ["h_id"], name="copy"),
        n("MatMul", ["h_id", "w_q"], ["q"], name="q_proj"),
        n("MatMul", ["h", "w_k"], ["k"], name="k_proj"),
        n("MatMul", ["h", "w_v"], ["v"], name="v_proj"),
        n("Reshape", ["q", "heads_shape"], ["q3"], name="q_split_heads"),
        n("Transpose", ["q3"], ["qh"], perm=[1, 0, 2], name="q_heads_first"),
        n("Reshape", ["k", "heads_shape"], ["k3"], name="k_split_heads"),
        n("Transpose", ["k3"], ["kh_t"], perm=[1, 2, 0], name="k_heads_first_t"),
        n("Reshape", ["v", "heads_shape"], ["v3"], name="v_split_heads"),
        n("Transpose", ["v3"], ["vh"], perm=[1, 0, 2], name="v_heads_first"),
        n("MatMul", ["qh", "kh_t"], ["scores"], name="scores"),
        n("Mul", ["scores", "scale"], ["scaled"], name="scale_scores"),
        n("Softmax", ["scaled"], ["probs"], axis=-1, name="softmax"),
        n("MatMul", ["probs", "vh"], ["ctx"], name="context"),
        n("Transpose", ["ctx"], ["ctx_t"], perm=[1, 0, 2], name="ctx_seq_first"),
        n("Reshape", ["ctx_t", "flat_shape"], ["ctx_flat"], name="merge_heads"),
        n("MatMul", ["ctx_flat", "w_o"], ["attn"], name="o_proj"),
        n("Add", ["x", "attn"], ["r1"], name="residual1"),
        # an MLP whose up-projection carries an unmerged low-rank adapter, and a skip projection
        n("MatMul", ["r1", "w_up"], ["up"], name="up_proj"),
        n("MatMul", ["r1", "w_up_lora_a"], ["lora_mid"], name="lora_a"),
        n("MatMul", ["lora_mid", "w_up_lora_b"], ["lora_up"], name="lora_b"),
        n("Add", ["up", "lora_up"], ["up_total"], name="lora_add"),
        n("Relu", ["up_total"], ["act"], name="relu"),
        n("MatMul", ["act", "w_down"], ["down"], name="down_proj"),
        n("MatMul", ["r1", "w_skip"], ["skip"], name="skip_proj"),
        n("Add", ["down", "skip"], ["mlp"], name="mlp_sum"),
        # a reshape round trip that cancels
        n("Reshape", ["mlp", "heads_shape"], ["mlp3"], name="round_trip_in"),
        n("Reshape", ["mlp3", "flat_shape"], ["mlp2"], name="round_trip_out"),
        n("Add", ["r1", "mlp2"], ["y"], name="residual2"),
    ]
    graph = helper.make_graph(
        nodes, "attention_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [seq, hidden])],
        initializer=inits,
        doc_string="A bundled example: one transformer block with naive projections.",
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="eqsat-dnn")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
