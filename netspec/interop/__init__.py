"""Interoperability: ONNX export and its check against onnxruntime, and the PyTorch bridge."""
