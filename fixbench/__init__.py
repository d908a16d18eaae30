"""fixbench: a harness to compare deep-learning model-fixing approaches side by side."""

__version__ = "0.1.0"
