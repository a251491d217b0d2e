"""Helpers for tests and benchmarks (real ONNX exports from torch/transformers)."""
