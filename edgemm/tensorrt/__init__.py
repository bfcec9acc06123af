"""TensorRT knowledge that needs no TensorRT: builder settings (a profile's ``tensorrt:`` section),
optimization-profile shapes from the model contract, trtexec command lines for TensorRT 8.5/10/11,
engine keys, a static ONNX compatibility check, and the device build bundle. Only ``builder`` and the
``tensorrt`` bench backend import TensorRT itself (lazily). Facts cited as [TRT §n] are sections of
``../shared/TENSORRT.md``."""
