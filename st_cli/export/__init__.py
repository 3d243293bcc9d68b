"""`st export`: the Transformer module as ONNX (and its optimised and int8 variants) and OpenVINO IR, under the file
names sentence-transformers' `backend="onnx"` / `backend="openvino"` read (docs/how-to/export.md).

Layer: above `model` (it loads the torch model), below `cli`. onnx, onnxruntime, onnxscript and openvino are
optional extras, imported only inside the functions that use them.
"""
