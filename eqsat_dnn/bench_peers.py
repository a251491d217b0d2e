"""Two of the bench's peers, for transformer exports: onnxruntime's transformers optimizer
(``ort-transformers``) and onnxslim. :mod:`eqsat_dnn.bench` runs them like the others
(``run_peer``: a failure is a cell, the output is checked)."""

from __future__ import annotations

from pathlib import Path

import onnx


def run_ort_transformers(model: onnx.ModelProto, tmp: Path, model_type: str = "bert", num_heads: int = 0,
                          hidden_size: int = 0) -> onnx.ModelProto:
    """onnxruntime's transformers optimizer (``optimize_model``), its Python fusions only (its
    default ``opt_level`` for these types; the timing session applies ``ORT_ENABLE_ALL`` after).
    It is given a file: handed a ModelProto, its shape inference fails on dynamo exports."""
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    path = tmp / "ort-transformers-in.onnx"
    onnx.save_model(model, str(path), save_as_external_data=model.ByteSize() >= 1_800_000_000,
                    location="ort-transformers-in.data")
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)  # it logs every fusion it tries
    try:
        return optimize_model(str(path), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
                              use_gpu=False).model
    finally:
        logger.setLevel(level)


def run_onnxslim(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
    import onnxslim

    slimmed = onnxslim.slim(model)
    if slimmed is None:
        raise RuntimeError("onnxslim returned nothing")
    return slimmed
