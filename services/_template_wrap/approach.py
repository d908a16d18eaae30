"""__NAME__: the original tool at __REPO__ (commit __COMMIT__), wrapped behind the Repair contract
by `fixbench new-approach __NAME__ --wrap ... --framework __FRAMEWORK__`.

The tool runs as it is, in an environment of its own (/opt/tool in the image, FIXBENCH_TOOL_PREFIX
for a local process). Per job the service writes the faulty model and the splits in the tool's
format (framework __FRAMEWORK__), runs the entry command under the job's budget, and converts
what the tool wrote back to ONNX:

    framework  model given (and expected back)                       splits (data/NAME.npz: x, y)
    onnx       model.onnx (repaired.onnx)                            as the job's, channels-first
    keras      model.keras, Keras 3 (repaired.keras); parity-gated   x channels-last (N, H, W, C)
    torch      model.pt, TorchScript (repaired.pt, TorchScript)      as the job's, channels-first

Statuses: no output -> NOT_REPAIRED; non-zero exit -> TOOL_ERROR with the tool's last log lines;
over budget -> TIMEOUT (the tool's process group is killed); cancellation kills it too. A model
that comes back is judged like every approach's (REPAIRED when it fixes a failing repair input).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import wrap  # this folder's runner (the folder is on sys.path when the service runs)

from fixbench.sdk import Approach, Diagnosis, Outcome, Param, serve

FRAMEWORK = "__FRAMEWORK__"
ENTRY = "__ENTRY_LITERAL__"  # the scaffold writes the entry as a Python literal
FILES = {"onnx": ("model.onnx", "repaired.onnx"), "keras": ("model.keras", "repaired.keras"),
         "torch": ("model.pt", "repaired.pt")}
SPLITS = ("repair", "valid", "train")


def write_inputs(ctx, work: Path) -> dict[str, str]:
    """The job's model and splits in the tool's format; returns the entry command's fields."""
    given, expected = FILES[FRAMEWORK]
    data = work / "data"
    data.mkdir()
    check_x = ctx.split("valid").x if ctx.has_split("valid") else ctx.split("repair").x
    if FRAMEWORK == "onnx":
        (work / given).write_bytes(ctx.model_bytes)
    elif FRAMEWORK == "keras":
        from fixbench.sdk.keras_bridge import onnx_to_keras

        onnx_to_keras(ctx.model_bytes, check_x=check_x, channels_last_input=check_x.ndim == 4).save(work / given)
    else:
        import torch

        module = ctx.torch_model().eval()
        torch.jit.trace(module, torch.as_tensor(check_x[:1])).save(str(work / given))
    for name in SPLITS:
        if ctx.has_split(name):
            split = ctx.split(name)
            x = split.x
            if FRAMEWORK == "keras":
                from fixbench.sdk.keras_bridge import channels_last

                x = channels_last(x)
            np.savez(data / f"{name}.npz", x=x, y=split.y)
    return {"model": str(work / given), "data": str(data), "output": str(work / expected), "workdir": str(work),
            "seed": str(ctx.seed), "budget": f"{ctx.remaining():.0f}" if ctx.budget_seconds else "0"}


def read_output(ctx, path: Path) -> bytes:
    """The tool's output as ONNX bytes (Keras is parity-gated on the validation split)."""
    check_x = ctx.split("valid").x if ctx.has_split("valid") else ctx.split("repair").x
    if FRAMEWORK == "onnx":
        return path.read_bytes()
    if FRAMEWORK == "keras":
        import keras

        from fixbench.sdk.keras_bridge import keras_to_onnx

        # safe_mode: a .keras file with lambdas (arbitrary code) is refused.
        return keras_to_onnx(keras.models.load_model(path, safe_mode=True), check_x=check_x)
    import torch

    module = torch.jit.load(str(path), map_location="cpu").eval()
    return ctx.export(module, torch.as_tensor(check_x[:1]))


class __CLASS__(Approach):
    name = "__NAME__"
    version = "0.1.0"
    level = "__LEVEL__"
    paper = ""
    summary = "The original tool at __REPO__ (commit __COMMIT__), run as it is in its own environment."
    needs = ("repair_data",)
    fault_families = ("misclassification", "training_recipe")
    uses_torch = FRAMEWORK == "torch"
    params = (
        Param("args", str, "", "extra words appended to the tool's entry command (its own options)"),
        Param("log_lines", int, 20, "the tool's last log lines carried in a TOOL_ERROR or TIMEOUT message"),
    )

    @classmethod
    def validate_params(cls, params: dict) -> None:
        if params["log_lines"] < 1:
            raise ValueError(f"parameter 'log_lines' must be at least 1, not {params['log_lines']}")
        wrap.entry_args(ENTRY, {f: "" for f in wrap.ENTRY_FIELDS}, params["args"])

    def check(self, ctx):
        prefix = wrap.tool_prefix()
        if not (prefix / "bin").is_dir():
            return (f"the wrapped tool is not installed at {prefix} (the image installs it there; for a local "
                    f"process run `python services/__NAME__/wrap.py install --repo URL --commit SHA --prefix DIR` "
                    "and set FIXBENCH_TOOL_PREFIX=DIR)")
        return None

    def repair(self, ctx):
        p = ctx.params
        with tempfile.TemporaryDirectory(prefix="__NAME__-") as tmp:
            work = Path(tmp)
            ctx.progress(0.0, "convert", f"writing the model and splits for the tool ({FRAMEWORK})")
            fields = write_inputs(ctx, work)
            argv = wrap.entry_args(ENTRY, fields, p["args"])
            ctx.log("running " + " ".join(argv))
            lines = wrap.run_tool(argv, work, wrap.tool_env(wrap.tool_prefix()), ctx, p["log_lines"])
            output = Path(fields["output"])
            if not output.is_file() or output.stat().st_size == 0:
                return Outcome(model=None, not_repaired=True,
                               message=f"the tool finished without writing {output.name}; last lines:\n{lines}")
            ctx.progress(0.95, "convert", f"reading {output.name} back")
            try:
                model = read_output(ctx, output)
            except (OSError, ValueError) as exc:
                raise wrap.ToolFailed(f"the tool wrote {output.name} but it could not be read back: {exc}") from exc
        return Outcome(model=model, diagnosis=Diagnosis(summary=f"{os.path.basename(ENTRY.split()[0])}: {lines[-500:]}"),
                       message="the wrapped tool wrote a repaired model")


if __name__ == "__main__":
    serve(__CLASS__)
