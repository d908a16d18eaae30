"""The names a training recipe may use, in one place.

The recipe validates against these tuples, the trainer implements every name in them (a test
checks both sides), and the Kim et al. search space draws from them. The loss, activation and
initialiser names are Keras's, because DeepCrime, AutoTrainer and Kim et al. describe their
faults and search spaces in Keras terms.
"""

from __future__ import annotations

ARCHITECTURES: tuple[str, ...] = (
    "lenet5",
    "vgg16",
    "resnet18",
    "facenet",
    "densenet121",
    "mlp",
    "textmlp",
)

# The 13 Keras losses of the search space; every one is defined for one-hot class targets.
LOSSES: tuple[str, ...] = (
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "binary_crossentropy",
    "kullback_leibler_divergence",
    "poisson",
    "categorical_hinge",
    "hinge",
    "squared_hinge",
    "mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
    "logcosh",
)

# Short Keras aliases, accepted on input and stored under the canonical name so that two
# recipes meaning the same loss compare equal.
LOSS_ALIASES: dict[str, str] = {
    "crossentropy": "categorical_crossentropy",
    "kld": "kullback_leibler_divergence",
    "kl_divergence": "kullback_leibler_divergence",
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
    "log_cosh": "logcosh",
}

OPTIMIZERS: tuple[str, ...] = (
    "sgd",
    "rmsprop",
    "adagrad",
    "adadelta",
    "adam",
    "adamax",
    "nadam",
)

# The 11 activations DeepCrime's "change activation" operator draws from.
ACTIVATIONS: tuple[str, ...] = (
    "relu",
    "sigmoid",
    "tanh",
    "elu",
    "selu",
    "softplus",
    "softsign",
    "exponential",
    "linear",
    "hard_sigmoid",
    "softmax",
)

# The last layer may use any activation, plus "double_softmax": the DeepFD fault where a
# softmax is applied on top of a softmax output (the gradients nearly vanish).
LAST_ACTIVATIONS: tuple[str, ...] = ACTIVATIONS + ("double_softmax",)

# 13 Keras initialisers (Keras's "identity" and the generic "variance_scaling" are left out:
# identity only fits square matrices and variance_scaling is the family the others belong to).
INITIALIZERS: tuple[str, ...] = (
    "zeros",
    "ones",
    "constant",
    "random_normal",
    "random_uniform",
    "truncated_normal",
    "orthogonal",
    "lecun_uniform",
    "lecun_normal",
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
)

REGULARIZERS: tuple[str, ...] = ("none", "l1", "l2", "l1_l2")
