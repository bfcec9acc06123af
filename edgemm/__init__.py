"""edgemm: compress, export and benchmark multimodal models for edge targets.

The Python API lives in :mod:`edgemm.api`; the model contract in :mod:`edgemm.spec`.
Heavy libraries (torch, onnx, onnxruntime) are imported where they are used.
"""
__version__ = "0.1.0"
