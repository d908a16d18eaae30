"""hebo: HEBO (Cowen-Rivers et al., JAIR 2022) as a training-recipe repairer, the way Kim et al.
(ICST 2023) used it: Bayesian optimisation over their recipe space, each trial a retraining
scored on validation, within a budget of k × the faulty model's training time; the best
retrained model is returned with the recipe diff as its diagnosis. Trials run on the SDK's
trial engine (serial, or Ray Tune locally or on a cluster)."""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script the folder is on sys.path; loaded by path (tests) it is not.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from fixbench.sdk import Param, serve  # noqa: E402
from fixbench.sdk.recipe_search import COMMON_PARAMS, RecipeSearchApproach  # noqa: E402

# What a preset sets; explicitly given parameters override it. "paper" is HEBO's own defaults
# as Ray Tune's HEBOSearch leaves them (Kim et al. ran HEBO through Ray Tune with its defaults):
# 1 + dimensions Sobol points, 100 Adam epochs for the GP, NSGA-II 100 × 100 on the acquisition.
PRESETS = {
    "default": {"suggestions": 2, "initial_points": 4, "gp_epochs": 50, "acq_population": 40, "acq_iterations": 30},
    "paper": {"suggestions": 1, "initial_points": 0, "gp_epochs": 100, "acq_population": 100, "acq_iterations": 100},
}


class Hebo(RecipeSearchApproach):
    name = "hebo"
    version = "1.0.0"
    paper = (
        "A. I. Cowen-Rivers, W. Lyu, R. Tutunov, Z. Wang, A. Grosnit, R. R. Griffiths, A. M. Maraval, "
        "H. Jianye, J. Wang, J. Peters, H. Bou-Ammar. HEBO: Pushing the Limits of Sample-Efficient "
        "Hyperparameter Optimisation. JAIR 74, 2022. doi:10.1613/jair.1.13643; as a recipe repairer in "
        "J. Kim et al., Repairing DNN Architecture: Are We There Yet? ICST 2023"
    )
    summary = (
        "HEBO Bayesian optimisation over the Kim et al. training-recipe space: retrain with suggested "
        "recipes within the budget, keep the best on validation, report the recipe diff."
    )
    presets = PRESETS
    params = COMMON_PARAMS + (
        Param("suggestions", int, 2, "recipes HEBO suggests per round (its MACE batch); trials of a round run in parallel"),
        Param("initial_points", int, 4, "Sobol points before the GP is used (0: HEBO's default, 1 + dimensions)"),
        Param("gp_epochs", int, 50, "Adam epochs of the GP's hyperparameter fit"),
        Param("acq_population", int, 40, "NSGA-II population of the acquisition search"),
        Param("acq_iterations", int, 30, "NSGA-II generations of the acquisition search"),
    )

    @classmethod
    def validate_params(cls, params):
        super().validate_params(params)
        from fixbench.sdk import ParamError

        for name in ("suggestions", "gp_epochs", "acq_population", "acq_iterations"):
            if params[name] < 1:
                raise ParamError(f"parameter {name!r} must be at least 1, got {params[name]}")
        if params["initial_points"] < 0:
            raise ParamError(f"parameter 'initial_points' must not be negative, got {params['initial_points']}")

    def make_proposer(self, ctx, base, train_samples, engine):
        from hebo_search import HeboProposer

        p = ctx.params
        return HeboProposer(base, train_samples, ctx.seed, suggestions=p["suggestions"],
                            initial_points=p["initial_points"] or None, gp_epochs=p["gp_epochs"],
                            acq_population=p["acq_population"], acq_iterations=p["acq_iterations"])


def _warm_imports() -> None:
    # torch's optimiser machinery (torch._dynamo) is imported by the first torch optimiser:
    # warmed beside the server's start, which it would otherwise slow by seconds.
    import torch._dynamo  # noqa: F401


if __name__ == "__main__":
    import threading

    # hebo (torch, gpytorch, pymoo) is imported before serving, so that no job waits on it
    # with its budget running.
    import hebo.optimizers.hebo  # noqa: F401

    threading.Thread(target=_warm_imports, name="warm-imports", daemon=True).start()
    serve(Hebo)
