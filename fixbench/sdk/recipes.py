"""What recipe-level approaches need from the model zoo, exposed through the SDK (services
import only fixbench.sdk): the training recipe, the trainer and the Kim et al. search space.
Importing this module imports torch."""

from fixbench.zoo import Recipe, RecipeError, TrainingDiverged, TrainResult, train
from fixbench.zoo.search_space import SEARCH_SPACE, sample_recipe

__all__ = ["Recipe", "RecipeError", "SEARCH_SPACE", "TrainResult", "TrainingDiverged", "sample_recipe", "train"]
