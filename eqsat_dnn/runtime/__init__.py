"""onnxruntime as the oracle: the output check (:mod:`.check`) and onnx's node-test
conformance run (:mod:`.conformance`)."""
