"""Procedural face-like images after UTKFace: an elliptical face with a skin tone (the race-like
group), eyes, brows and mouth, hair, over a cluttered background. The gender-like label shows
in the hair length (long vs short, overlapping distributions), in a beard shadow that some
label-0 faces carry and in the lips' tint; the last two change the skin by a factor, so their
contrast shrinks on darker skin. Together with the training split's light-skinned majority
this leaves a small CNN least accurate on the darkest tone (in a check here: ~74 % on tone 4
against 87-94 % on the others) — a fairness gap to repair."""

from __future__ import annotations

import numpy as np

from .render import gradient_background, grid, paint, soft_mask

# Skin tones from light (group 0) to dark (group 3), RGB in [0, 1].
SKIN_TONES = np.array(
    [[0.94, 0.81, 0.70], [0.80, 0.62, 0.48], [0.60, 0.43, 0.31], [0.38, 0.26, 0.19]], dtype=np.float32
)
# Mostly dark hair, as in most photographs; a few lighter shades.
HAIR_COLOURS = np.array(
    [[0.08, 0.06, 0.05], [0.20, 0.13, 0.08], [0.35, 0.22, 0.12], [0.62, 0.48, 0.25], [0.45, 0.18, 0.08]],
    dtype=np.float32,
)
HAIR_WEIGHTS = np.array([0.35, 0.3, 0.15, 0.12, 0.08])


def _ellipse(rows, cols, cy, cx, ry, rx) -> np.ndarray:
    """Signed distance-like value (< 0 inside) of axis-aligned ellipses, in pixels."""
    dy = (rows - cy[:, None, None]) / ry[:, None, None]
    dx = (cols - cx[:, None, None]) / rx[:, None, None]
    return ((np.sqrt(dx * dx + dy * dy) - 1.0) * np.minimum(ry, rx)[:, None, None]).astype(np.float32)


def _mask(distance: np.ndarray) -> np.ndarray:
    return soft_mask(distance, np.ones(len(distance), dtype=np.float32))


def render_faces(rng: np.random.Generator, labels: np.ndarray, groups: np.ndarray, size: int = 32) -> np.ndarray:
    """Faces (n, 3, size, size) float32 in [0, 1]; `labels` 0/1 (gender-like), `groups` 0-3 (tone)."""
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    n = len(labels)
    f32 = np.float32
    rows, cols = grid(n, size)
    canvas = gradient_background(rng, n, size)
    # Background clutter: a few blurry blobs.
    for _ in range(3):
        blob = _mask(_ellipse(rows, cols, rng.uniform(0, size, n), rng.uniform(0, size, n),
                              rng.uniform(2, 7, n), rng.uniform(2, 7, n)))  # fmt: skip
        paint(canvas, blob * rng.uniform(0, 0.6, (n, 1, 1)).astype(f32), rng.uniform(0, 1, (n, 3)).astype(f32))

    cy = size * 0.53 + rng.normal(0, 1.2, n)
    cx = size * 0.5 + rng.normal(0, 1.5, n)
    ry = rng.uniform(9.0, 11.5, n)
    rx = ry * rng.uniform(0.72, 0.85, n)
    skin = SKIN_TONES[groups] * rng.uniform(0.9, 1.08, (n, 1)).astype(f32) + rng.normal(0, 0.025, (n, 3)).astype(f32)
    hair = HAIR_COLOURS[rng.choice(len(HAIR_COLOURS), size=n, p=HAIR_WEIGHTS)]
    hair = hair * rng.uniform(0.8, 1.2, (n, 1)).astype(f32)

    # Hair length in face heights below the crown; the label shifts its distribution.
    length = np.where(labels == 1, rng.normal(0.75, 0.4, n), rng.normal(0.4, 0.35, n)).clip(0.0, 1.6)
    back = _mask(_ellipse(rows, cols, cy + ry * 0.1, cx, ry * 1.22, rx * 1.5))
    below = rows > (cy - ry * 0.45 + length * ry)[:, None, None]
    hair_mask = back * ~below
    paint(canvas, hair_mask, hair)

    face = _mask(_ellipse(rows, cols, cy, cx, ry, rx))
    paint(canvas, face, skin)
    # Fringe: the crown of the head, hair over the top of the face.
    fringe_line = cy - ry * rng.uniform(0.45, 0.65, n)
    fringe = face * (rows < fringe_line[:, None, None])
    paint(canvas, fringe, hair)

    # Beard shadow on some label-0 faces. It darkens the skin by a factor, so its contrast —
    # like that of the lips below — shrinks with the skin's lightness.
    beard = (labels == 0) & (rng.uniform(0, 1, n) < 0.6)
    shadow = face * (rows > (cy + ry * 0.4)[:, None, None]) * beard[:, None, None]
    paint(canvas, shadow, skin * 0.72)

    # Eyes, brows and mouth, placed relative to the face.
    eye_y = cy - ry * 0.12
    for side in (-1.0, 1.0):
        ex = cx + side * rx * 0.42
        eye = _mask(_ellipse(rows, cols, eye_y, ex, np.full(n, 1.1), np.full(n, 1.5)))
        paint(canvas, eye, np.full((n, 3), 0.06, dtype=f32))
        brow = _mask(_ellipse(rows, cols, eye_y - 2.4, ex, np.full(n, 0.6), np.full(n, 2.0)))
        paint(canvas, brow * 0.8, hair)
    mouth = _mask(_ellipse(rows, cols, cy + ry * 0.5, cx, np.full(n, 0.7), rx * rng.uniform(0.25, 0.4, n)))
    lips = np.where(
        (labels == 1)[:, None], np.array([1.2, 0.75, 0.8], dtype=f32), np.array([0.8, 0.72, 0.7], dtype=f32)
    )
    paint(canvas, mouth, np.clip(skin * lips, 0, 1))

    gain = rng.uniform(0.75, 1.15, size=(n, 1, 1, 1)).astype(f32)
    canvas = canvas * gain + rng.normal(0, 0.05, size=canvas.shape).astype(f32)
    return np.clip(canvas, 0.0, 1.0).astype(f32)
