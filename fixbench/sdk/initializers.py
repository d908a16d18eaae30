"""Writing a torch module's changed weights back into the ONNX model they came from.

A method that edits a few weights of a model converted with onnx2torch can hand back the
faulty ONNX graph with just those initialisers replaced, instead of re-exporting the module:
every other byte of the graph is kept, so the repaired model differs from the faulty one only
where the method changed it (the change metrics then see exactly that). onnx2torch renames the
initialisers it keeps as parameters, so the two are matched by content before the edit.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def initializer_names(model, tensors: Mapping) -> dict[str, str]:
    """torch tensor name -> the float32 ONNX initialiser holding the same values; call it before
    the tensors change. Tensors without a match are left out."""
    from onnx import numpy_helper

    by_content: dict = {}
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32:
            by_content.setdefault((arr.shape, arr.tobytes()), init.name)
    out = {}
    for name, t in tensors.items():
        arr = t.detach().numpy()
        match = by_content.get((tuple(arr.shape), arr.tobytes()))
        if match is not None:
            out[name] = match
    return out


def write_initializers(model, tensors: Mapping, names: Mapping[str, str]):
    """A checked copy of the ONNX model with the tensors' current values in their initialisers
    (by `names`, from initializer_names); None when one has no initialiser to go to (the
    caller then re-exports the module)."""
    import onnx
    from onnx import numpy_helper

    if any(n not in names for n in tensors):
        return None
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    for name, t in tensors.items():
        target = inits[names[name]]
        target.CopyFrom(numpy_helper.from_array(t.detach().numpy().astype(np.float32), target.name))
    onnx.checker.check_model(out)
    return out


__all__ = ["initializer_names", "write_initializers"]
