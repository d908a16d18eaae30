"""bohb: BOHB (Falkner, Klein, Hutter, ICML 2018) as a training-recipe repairer, the way Kim et
al. (ICST 2023) used it: Bayesian optimisation + Hyperband over their recipe space with epochs
as the fidelity, each trial a retraining scored on validation, within a budget of k × the
faulty model's training time; the best retrained model is returned with the recipe diff as its
diagnosis. The model is hpbandster's original BOHB config generator; trials run on the SDK's
trial engine (serial, or Ray Tune locally or on a cluster)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from fixbench.sdk import Param, ParamError, serve  # noqa: E402
from fixbench.sdk.recipe_search import COMMON_PARAMS, RecipeSearchApproach  # noqa: E402

# What a preset sets; explicitly given parameters override it. "paper" is BOHB's published
# defaults (hpbandster's, which Ray Tune's TuneBOHB keeps): eta 3, 15 % good points, 64 samples
# of the acquisition, a third of the configs random, bandwidth factor 3. The default preset
# keeps them and only lets the smallest rung train a single epoch.
PRESETS = {
    "default": {"eta": 3.0, "min_epochs": 1, "max_epochs": 0, "top_n_percent": 15, "num_samples": 64,
                "random_fraction": 1 / 3, "bandwidth_factor": 3.0},
    "paper": {"eta": 3.0, "min_epochs": 0, "max_epochs": 0, "top_n_percent": 15, "num_samples": 64,
              "random_fraction": 1 / 3, "bandwidth_factor": 3.0},
}


class Bohb(RecipeSearchApproach):
    name = "bohb"
    version = "1.0.0"
    paper = (
        "S. Falkner, A. Klein, F. Hutter. BOHB: Robust and Efficient Hyperparameter Optimization at Scale. "
        "ICML 2018 (hpbandster); as a recipe repairer in J. Kim et al., Repairing DNN Architecture: Are We "
        "There Yet? ICST 2023"
    )
    summary = (
        "BOHB (Bayesian optimisation + Hyperband, epochs as the fidelity) over the Kim et al. training-recipe "
        "space: retrain within the budget, keep the best on validation, report the recipe diff."
    )
    presets = PRESETS
    params = COMMON_PARAMS + (
        Param("eta", float, 3.0, "Hyperband's halving rate: 1/eta of a rung's configs go on, with eta times the epochs"),
        Param("min_epochs", int, 1, "epochs of the smallest rung (0: max_epochs / eta^2)"),
        Param("max_epochs", int, 0, "epochs of the largest rung (0: the top of Kim et al.'s range, 1.3 x the faulty recipe's)"),
        Param("top_n_percent", int, 15, "percentage of observed configs that form the 'good' KDE"),
        Param("num_samples", int, 64, "samples drawn from the good KDE to maximise the density ratio"),
        Param("random_fraction", float, 1 / 3, "fraction of configs drawn at random instead of from the model"),
        Param("bandwidth_factor", float, 3.0, "widening of the KDE bandwidth when sampling candidates"),
    )

    @classmethod
    def validate_params(cls, params):
        super().validate_params(params)
        if not params["eta"] > 1:
            raise ParamError(f"parameter 'eta' must be above 1, got {params['eta']}")
        for name in ("min_epochs", "max_epochs"):
            if params[name] < 0:
                raise ParamError(f"parameter {name!r} must not be negative, got {params[name]}")
        if not 0 < params["top_n_percent"] < 100:
            raise ParamError(f"parameter 'top_n_percent' must lie in (0, 100), got {params['top_n_percent']}")
        if params["num_samples"] < 1:
            raise ParamError(f"parameter 'num_samples' must be at least 1, got {params['num_samples']}")
        if not 0 <= params["random_fraction"] <= 1:
            raise ParamError(f"parameter 'random_fraction' must lie in [0, 1], got {params['random_fraction']}")
        if not params["bandwidth_factor"] > 0:
            raise ParamError(f"parameter 'bandwidth_factor' must be positive, got {params['bandwidth_factor']}")

    def make_proposer(self, ctx, base, train_samples, engine):
        from bohb_search import BohbProposer, default_epoch_range

        p = ctx.params
        low, high = default_epoch_range(base, p["eta"], p["min_epochs"], p["max_epochs"])
        ctx.log(f"BOHB fidelity: epochs {low}..{high}, eta {p['eta']:g}")
        return BohbProposer(base, train_samples, ctx.seed, low, high, eta=p["eta"],
                            top_n_percent=p["top_n_percent"], num_samples=p["num_samples"],
                            random_fraction=p["random_fraction"], bandwidth_factor=p["bandwidth_factor"])


if __name__ == "__main__":
    # Imported before serving, so that no job waits on them with its budget running: hpbandster
    # (statsmodels) and what a first trial would import (torch's optimiser machinery, the ONNX
    # exporter), which takes tens of seconds on a loaded machine.
    import hpbandster.optimizers.config_generators.bohb  # noqa: F401
    import torch._dynamo  # noqa: F401
    import torch.onnx  # noqa: F401

    serve(Bohb)
