"""Export targets, registered by name. ``onnx`` lives here; TensorRT targets build on its output."""
