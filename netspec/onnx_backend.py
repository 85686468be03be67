"""netspec as an ONNX backend, importable as `netspec.onnx_backend` the way onnxruntime's is
(`onnxruntime.backend`): `prepare(model).run([x])`, `run_model`, `run_node`,
`supports_device`, and the `NetspecBackend` class for onnx's BackendTest. The implementation
is netspec/interop/onnx_backend.py; it needs the onnx extra (pip install 'netspec[onnx]').
"""

from netspec.interop.onnx_backend import (
    NetspecBackend,
    NetspecRep,
    is_compatible,
    prepare,
    run_model,
    run_node,
    supports_device,
)

__all__ = ["NetspecBackend", "NetspecRep", "is_compatible", "prepare", "run_model", "run_node",
           "supports_device"]
