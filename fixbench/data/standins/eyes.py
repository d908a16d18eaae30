"""`unityeyes-standin`: a procedural stand-in for UnityEyes, the fourth dataset of Kim et al.

UnityEyes renders synthetic eye images for gaze *regression*. Kim et al.'s UnityEyes subject
is the largest of their benchmark; no copy can be downloaded here, so this stand-in keeps the
task's nature and turns it into classification: a continuous gaze (yaw, pitch) in [-1, 1]² is
drawn per image, the iris is drawn where that gaze puts it, and the label is the gaze binned
into a 3 × 3 grid (9 classes). Per-image eye size, openness, position, skin tone, lighting
gradient, iris size and pixel noise vary, and the iris position carries a little noise, so
images near a bin border are genuinely ambiguous (a CNN learns it well, never perfectly).

Images are grey 1 × 36 × 60 (the eye-crop size of MPIIGaze-style gaze estimators) in [0, 1],
low-contrast on purpose (skin mid-grey), so input normalisation matters as it does for real
eye crops. It has no real-format loader (UnityEyes is rendered, not downloaded), so it is
registered on its own, not as a mirror of a real dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..spec import SMALL_SET_PROPORTIONS, DatasetSpec
from ..splits import Splits, seeded_rng, splits_from_pool

NAME = "unityeyes-standin"
HEIGHT, WIDTH = 36, 60
GRID = 3  # gaze bins per axis
BASE_SAMPLES = 6000  # samples at scale 1.0

SPEC = DatasetSpec(
    name=NAME,
    input_shape=(1, HEIGHT, WIDTH),
    num_classes=GRID * GRID,
    class_names=tuple(f"{v}-{h}" for v in ("up", "level", "down") for h in ("left", "centre", "right")),
    sensitive_attribute=None,
    group_names=(),
    stand_in=True,
    stands_in_for="UnityEyes (gaze regression, binned into a 3x3 grid of directions)",
    description="Procedural grey eye crops; label = gaze direction binned 3x3 (UnityEyes stand-in).",
    proportions=SMALL_SET_PROPORTIONS,
    # Grey eye crops have CIFAR-like dynamic range; the CIFAR-10 budget (8/255) is used.
    pgd_epsilon=0.031,
)


def render_eyes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n eye images (n, 1, 36, 60) float32 in [0, 1], their gaze (n, 2) and labels (n,)."""
    gaze = rng.uniform(-1.0, 1.0, size=(n, 2))
    # Bins of width 2/3 on each axis; label = row (pitch) * 3 + column (yaw).
    bins = np.clip(((gaze + 1.0) / 2.0 * GRID).astype(np.int64), 0, GRID - 1)
    labels = bins[:, 1] * GRID + bins[:, 0]

    def per_image(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, size=(n, 1, 1))

    cx = WIDTH / 2 + rng.normal(0.0, 2.0, size=(n, 1, 1))
    cy = HEIGHT / 2 + rng.normal(0.0, 1.5, size=(n, 1, 1))
    half_w, half_h = per_image(20.0, 25.0), per_image(8.0, 12.0)
    iris_r = per_image(6.0, 8.0)
    skin, iris_tone = per_image(0.45, 0.65), per_image(0.15, 0.35)
    sclera = np.clip(skin + per_image(0.12, 0.22), 0.0, 1.0)
    light = per_image(-0.12, 0.12)
    # Where the gaze puts the iris, plus a little noise: borders between bins stay ambiguous.
    ix = cx + gaze[:, 0, None, None] * 0.45 * half_w + rng.normal(0.0, 0.8, size=(n, 1, 1))
    iy = cy + gaze[:, 1, None, None] * 0.5 * half_h + rng.normal(0.0, 0.5, size=(n, 1, 1))

    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    yy, xx = yy[None], xx[None]
    opening = ((xx - cx) / half_w) ** 2 + ((yy - cy) / half_h) ** 2 <= 1.0
    iris_d2 = (xx - ix) ** 2 + (yy - iy) ** 2
    img = np.broadcast_to(skin, (n, HEIGHT, WIDTH)).copy()
    img = np.where(opening, sclera, img)
    img = np.where(opening & (iris_d2 <= iris_r**2), iris_tone, img)
    img = np.where(opening & (iris_d2 <= (0.45 * iris_r) ** 2), 0.05, img)
    img = img + light * (xx / WIDTH - 0.5) + rng.normal(0.0, 0.03, size=img.shape)
    images = np.clip(img, 0.0, 1.0).astype(np.float32)[:, None]
    return images, gaze.astype(np.float32), labels


def build_eyes(seed: int, scale: float, path: Path | None) -> Splits:
    n = max(round(BASE_SAMPLES * scale), 10 * GRID * GRID)
    x, _, y = render_eyes(n, seeded_rng(seed, NAME, "render"))
    # The pool is already `scale`-sized, so the partition keeps all of it.
    return splits_from_pool(SPEC, x, y, None, seed, 1.0)
