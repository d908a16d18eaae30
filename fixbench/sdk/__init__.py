"""Approach SDK: write one class, get a Repair gRPC service.

    from fixbench.sdk import Approach, Param, Outcome, serve

    class MyFix(Approach):
        name, version, level = "myfix", "1.0.0", "neuron"
        params = (Param("steps", int, 10, "search steps"),)
        def repair(self, ctx):
            ...
            return Outcome(model=repaired_onnx)

    if __name__ == "__main__":
        serve(MyFix)

ONNX helpers (Predictor, load_model, signature) come with it; recipe-level approaches take the
zoo's recipe, trainer and search space from `fixbench.sdk.recipes` (which imports torch).
"""

from fixbench.onnxio import InvalidModelError, Predictor, load_model
from fixbench.onnxio.validate import signature
from fixbench.sdk.approach import Approach, Param, ParamError
from fixbench.sdk.context import RepairContext, Split
from fixbench.sdk.errors import BudgetExceeded, Cancelled, InfraError, Unadaptable
from fixbench.sdk.outcome import Diagnosis, LocalisedNeuron, LocalisedWeight, Outcome, RecipeChange
from fixbench.sdk.serve import serve

__all__ = [
    "Approach", "Param", "ParamError", "RepairContext", "Split", "BudgetExceeded", "Cancelled", "InfraError",
    "Unadaptable", "Diagnosis", "LocalisedNeuron", "LocalisedWeight", "Outcome", "RecipeChange", "serve",
    "InvalidModelError", "Predictor", "load_model", "signature",
]
