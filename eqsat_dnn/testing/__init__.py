"""Helpers for tests and benchmarks: real ONNX exports from torch/transformers (``exports``),
onnx's backend node tests run through the optimizer (``conformance``)."""
