"""Procedural object scenes: each class is a (shape, texture) pair with a typical hue, drawn at a
random place, size and rotation over a gradient background, among distractor objects, with
pixel noise. Hue is only a weak cue (its noise overlaps neighbouring classes), so greying an
image removes some, not all, of the evidence — which is what CIFAR-10S's skew exploits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .render import (
    SHAPES,
    TEXTURES,
    gradient_background,
    grid,
    hsv_to_rgb,
    local_coords,
    paint,
    shape_distance,
    soft_mask,
    texture,
)


@dataclass(frozen=True)
class SceneStyle:
    """How one family of scenes is drawn; sizes in pixels of a `size` x `size` image."""

    class_shapes: tuple[int, ...]
    class_textures: tuple[int, ...]
    class_hues: tuple[float, ...]
    hue_noise: float
    radius: tuple[float, float]
    distractors: tuple[int, int]
    distractor_scale: tuple[float, float]
    period: tuple[float, float]
    noise: float
    size: int = 32

    def __post_init__(self) -> None:
        n = len(self.class_shapes)
        if not (len(self.class_textures) == len(self.class_hues) == n):
            raise ValueError("SceneStyle: class_shapes, class_textures and class_hues need one entry per class")
        if len(set(zip(self.class_shapes, self.class_textures, strict=True))) != n:
            raise ValueError("SceneStyle: two classes share a (shape, texture) pair")
        if max(self.class_shapes) >= len(SHAPES) or max(self.class_textures) >= len(TEXTURES):
            raise ValueError("SceneStyle: unknown shape or texture index")

    @property
    def num_classes(self) -> int:
        """Number of classes the style defines."""
        return len(self.class_shapes)


def _draw_objects(
    rng: np.random.Generator,
    canvas: np.ndarray,
    shapes: np.ndarray,
    textures: np.ndarray,
    hues: np.ndarray,
    radius: np.ndarray,
    centre: tuple[np.ndarray, np.ndarray],
    period_px: tuple[float, float],
    active: np.ndarray | None = None,
) -> None:
    """Draws one object per sample (only where `active`) onto `canvas` in place."""
    if active is not None:
        # Inactive samples cost nothing: draw on the active ones only.
        index = np.flatnonzero(active)
        sub = canvas[index]
        _draw_objects(
            rng, sub, shapes[index], textures[index], hues[index], radius[index],
            (centre[0][index], centre[1][index]), period_px,
        )  # fmt: skip
        canvas[index] = sub
        return
    n, size = len(shapes), canvas.shape[-1]
    rows, cols = grid(n, size)
    angle = rng.uniform(0, 2 * np.pi, size=n)
    u, v = local_coords(rows, cols, centre[0], centre[1], radius, angle)
    mask = soft_mask(shape_distance(shapes, u, v), radius)
    period = rng.uniform(*period_px, size=n) / radius
    pattern = texture(textures, u, v, period, rng.uniform(0, 2 * np.pi, size=n))
    saturation = rng.uniform(0.45, 1.0, size=n)
    value = rng.uniform(0.6, 1.0, size=n)
    light = hsv_to_rgb(hues, saturation, value)
    dark = light * rng.uniform(0.15, 0.5, size=(n, 1)).astype(np.float32)
    colour = dark[:, :, None, None] + (light - dark)[:, :, None, None] * pattern[:, None]
    paint(canvas, mask, colour)


def render_scenes(rng: np.random.Generator, labels: np.ndarray, style: SceneStyle) -> np.ndarray:
    """Images (n, 3, size, size) float32 in [0, 1] for the given class labels."""
    labels = np.asarray(labels, dtype=np.int64)
    n, size = len(labels), style.size
    canvas = gradient_background(rng, n, size)
    shapes = np.asarray(style.class_shapes)[labels]
    textures = np.asarray(style.class_textures)[labels]
    hues = np.asarray(style.class_hues)[labels] + rng.normal(0, style.hue_noise, size=n)
    radius = rng.uniform(*style.radius, size=n).astype(np.float32)

    # Distractors first, so that the object of the class lies on top and may partly hide them.
    count = rng.integers(style.distractors[0], style.distractors[1] + 1, size=n)
    for k in range(style.distractors[1]):
        _draw_objects(
            rng,
            canvas,
            rng.integers(0, len(SHAPES), size=n),
            rng.integers(0, len(TEXTURES), size=n),
            rng.uniform(0, 1, size=n),
            (radius * rng.uniform(*style.distractor_scale, size=n)).astype(np.float32),
            (rng.uniform(2, size - 2, size=n), rng.uniform(2, size - 2, size=n)),
            style.period,
            active=k < count,
        )
    jitter = size / 2 - radius * 0.9
    centre = (
        size / 2 + rng.uniform(-1, 1, size=n) * jitter * 0.6,
        size / 2 + rng.uniform(-1, 1, size=n) * jitter * 0.6,
    )
    _draw_objects(rng, canvas, shapes, textures, hues, radius, centre, style.period)

    # Per-image exposure and contrast, then sensor noise.
    gain = rng.uniform(0.75, 1.15, size=(n, 1, 1, 1)).astype(np.float32)
    offset = rng.uniform(-0.08, 0.08, size=(n, 1, 1, 1)).astype(np.float32)
    canvas = canvas * gain + offset + rng.normal(0, style.noise, size=canvas.shape).astype(np.float32)
    return np.clip(canvas, 0.0, 1.0).astype(np.float32)


# CIFAR-10-like: 5 shapes x 2 textures, hues spread round the wheel.
CIFAR_STYLE = SceneStyle(
    class_shapes=(0, 0, 1, 1, 2, 2, 3, 3, 4, 4),
    class_textures=(0, 1, 0, 1, 0, 1, 0, 1, 0, 1),
    class_hues=tuple(((3 * c) % 10) / 10 for c in range(10)),
    hue_noise=0.08,
    radius=(6.0, 11.0),
    distractors=(1, 2),
    distractor_scale=(0.35, 0.7),
    period=(3.5, 6.0),
    noise=0.06,
)

# ImageNet-like: 5 shapes x 4 textures, smaller objects, more and larger distractors, more noise.
IMAGENET_STYLE = SceneStyle(
    class_shapes=tuple(c // 4 for c in range(20)),
    class_textures=tuple(c % 4 for c in range(20)),
    class_hues=tuple(((7 * c) % 20) / 20 for c in range(20)),
    hue_noise=0.1,
    radius=(5.0, 10.0),
    distractors=(1, 3),
    distractor_scale=(0.4, 0.75),
    period=(3.0, 5.5),
    noise=0.08,
)
