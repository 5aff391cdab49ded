"""Deployment: one modality's retrieval embedding through ``torch.export`` and ONNX, checked with ONNX Runtime.

:func:`export_embedding` traces ``model.embed`` with the modality fixed (one stem in the graph) and a dynamic
batch size; :func:`export_onnx` writes it as ONNX (opset 18) through ``torch.onnx.export(dynamo=True)``;
:func:`check_onnx_parity` compares ONNX Runtime with the eager model. ``onnx``, ``onnxscript`` and
``onnxruntime`` come with the ``export`` extra (``pip install 'vireid-layers[export]'``). The ``vireid-export``
command does all three for a saved model (:mod:`vireid_layers.hub`).
"""

from .embedding import ModalityEmbedding, export_embedding
from .onnx import ONNX_OPSET, PARITY_ATOL, OnnxParity, check_onnx_parity, export_onnx, run_onnx

__all__ = [
    "ModalityEmbedding",
    "ONNX_OPSET",
    "OnnxParity",
    "PARITY_ATOL",
    "check_onnx_parity",
    "export_embedding",
    "export_onnx",
    "run_onnx",
]
