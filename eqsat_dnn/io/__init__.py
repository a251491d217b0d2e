"""ONNX in and out: :mod:`.onnx_in` reads a model into a :class:`~eqsat_dnn.ir.graph.Graph`,
:mod:`.onnx_out` writes one back and saves it safely; :mod:`.protos` keeps large weights cheap."""
