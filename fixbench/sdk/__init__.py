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
"""

from fixbench.sdk.approach import Approach, Param, ParamError
from fixbench.sdk.context import RepairContext, Split
from fixbench.sdk.errors import BudgetExceeded, Cancelled, InfraError, Unadaptable
from fixbench.sdk.outcome import Diagnosis, LocalisedNeuron, LocalisedWeight, Outcome, RecipeChange
from fixbench.sdk.serve import serve

__all__ = [
    "Approach", "Param", "ParamError", "RepairContext", "Split", "BudgetExceeded", "Cancelled", "InfraError",
    "Unadaptable", "Diagnosis", "LocalisedNeuron", "LocalisedWeight", "Outcome", "RecipeChange", "serve",
]
