"""Runs inside the sdk-tf environment (TensorFlow, no torch) for tests/sdk/test_keras_bridge.py:
round-trips each given ONNX model through Keras and prints what it measured as JSON."""

import json
import sys
from pathlib import Path

import numpy as np

from fixbench.onnxio import Predictor
from fixbench.sdk import keras_bridge as kb
from fixbench.sdk.errors import status_for_exception


def main(folder: str) -> None:
    root = Path(folder)
    x = np.load(root / "x.npy")
    results = {"import_seen_tf": "tensorflow" in sys.modules}
    for path in sorted(root.glob("*.onnx")):
        data = path.read_bytes()
        ref = Predictor(data, threads=1).scores(x)
        row = {}
        for layout in ("nchw", "nhwc"):
            model = kb.onnx_to_keras(data, check_x=x, channels_last_input=layout == "nhwc")
            back = kb.keras_to_onnx(model, check_x=x)
            out = Predictor(back, threads=1).scores(x)
            row[layout] = {"import_diff": model.fixbench_parity.max_diff,
                           "roundtrip_diff": float(np.abs(out - ref).max()),
                           "same_predictions": bool((out.argmax(1) == ref.argmax(1)).all()),
                           "keras_input": list(model.inputs[0].shape[1:])}
        # A gate with no room at all must refuse the model (float32 never matches exactly across
        # runtimes on these nets), as UNADAPTABLE, naming the measured difference.
        try:
            kb.onnx_to_keras(data, check_x=x, atol=0.0, rtol=0.0)
            row["strict_gate"] = None
        except kb.ImportParityError as exc:
            status, message = status_for_exception(exc)
            row["strict_gate"] = {"status": int(status), "max_diff": exc.max_diff, "message": message}
        results[path.stem] = row
    xs, ys = kb.keras_split(x, np.arange(len(x)) % 10, num_classes=10)
    results["split"] = {"x": list(xs.shape), "y": list(ys.shape), "same": bool(np.array_equal(kb.channels_first(xs), x))}
    err = kb.ExportParityError("Keras -> ONNX", 0.5, 1e-5, 3)
    results["export_status"] = list(status_for_exception(err))
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
