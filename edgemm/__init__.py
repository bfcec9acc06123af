"""edgemm: compress, export and benchmark multimodal models for edge targets.

The Python API lives in :mod:`edgemm.api`; the model contract in :mod:`edgemm.spec`; how the
layers and registries fit together in ARCHITECTURE.md. Heavy libraries (torch, onnx,
onnxruntime) are declared at the top of each module with :func:`edgemm.lazy.lazy_import` and
imported on first use.
"""
__version__ = "0.1.0"
