"""Look-alike characters: one shape under two codepoints (口/ロ, 工/エ, 力/カ, 一/ー, 夕/タ, 俱/倶, ...).

A few-shot split must never put two look-alikes in different splits: a "novel" test class would then be a
base class under another name. They are found by comparing canonical renders, not from a list:

- the canonical render of a character is its KanjiVG strokes, undistorted, scaled so that the longer side
  of their bounding box fills a 32 x 32 grid (aspect kept), drawn with a thin pen;
- A covers B within r pixels when that share of A's ink lies within r pixels of B's ink; two characters
  look alike when each covers the other: both ways >= 0.95 within 1 pixel, or, where both have at most 3
  strokes (a small difference of style is a large share of a simple glyph, as in 力/カ), >= 0.88 within
  2 pixels;
- look-alike pairs are joined into groups (connected components), which the dataset splits keep whole.

The thresholds were set by looking at the pairs they find: the five pairs above are found, and the largest
group holds a few dozen dense characters whose 32 x 32 renders differ by a pixel or two (the 門 family),
which are kept together too. Coverage counts are sums of 0/1 products, exact in float64 whatever the BLAS,
so the groups, and the splits made from them, are the same on every machine.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw

from metadiff_jax.data import glyph_render

GRID = 32
_SUPERSAMPLE = 4
_PEN = 4  # pixels of the supersampled canvas: one grid pixel
STRICT = (1, 0.95)  # (radius in grid pixels, coverage both ways) for every pair
SIMPLE = (2, 0.88)  # the looser test for pairs of simple glyphs
SIMPLE_MAX_STROKES = 3


def canonical_render(strokes) -> np.ndarray:
    """Undistorted strokes, bounding box scaled to the grid, aspect kept: bool `(GRID, GRID)`."""
    points = np.concatenate(strokes)
    low, high = points.min(axis=0), points.max(axis=0)
    span = max(float(np.max(high - low)), 1.0)
    canvas = GRID * _SUPERSAMPLE
    scale = (canvas - 16) / span
    centre = (low + high) / 2.0
    image = Image.new("L", (canvas, canvas), 0)
    pen = ImageDraw.Draw(image)
    for stroke in strokes:
        line = (glyph_render._polyline(stroke) - centre) * scale + canvas / 2.0
        pen.line([(float(x), float(y)) for x, y in line], fill=255, width=_PEN)
    return np.asarray(image).reshape(GRID, _SUPERSAMPLE, GRID, _SUPERSAMPLE).max(axis=(1, 3)) > 0


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Every pixel within `radius` (Euclidean, on the grid) of an ink pixel; no wrap-around."""
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    size = mask.shape[0]
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius:
                out |= padded[radius + dy : radius + dy + size, radius + dx : radius + dx + size]
    return out


def _mutual_coverage(masks: np.ndarray, radius: int, block: int = 1024) -> np.ndarray:
    """min(cover(A, B), cover(B, A)) for every pair: float64 `(n, n)`."""
    ink = masks.reshape(len(masks), -1).astype(np.float64)
    near = np.stack([dilate(m, radius) for m in masks]).reshape(len(masks), -1).astype(np.float64)
    counts = ink.sum(axis=1)
    cover = np.empty((len(masks), len(masks)))
    for start in range(0, len(masks), block):
        rows = slice(start, start + block)
        cover[rows] = (ink[rows] @ near.T) / counts[rows, None]  # integer counts: exact in float64
    return np.minimum(cover, cover.T)


def lookalike_pairs(masks: np.ndarray, stroke_counts: np.ndarray) -> np.ndarray:
    """Pairs (i, j), i < j, of look-alike canonical renders: int `(pairs, 2)`."""
    alike = _mutual_coverage(masks, STRICT[0]) >= STRICT[1]
    simple = np.asarray(stroke_counts) <= SIMPLE_MAX_STROKES
    if simple.sum() > 1:
        chosen = np.flatnonzero(simple)
        loose = _mutual_coverage(masks[chosen], SIMPLE[0]) >= SIMPLE[1]
        alike[np.ix_(chosen, chosen)] |= loose
    return np.argwhere(np.triu(alike, k=1))


def lookalike_groups(codepoints, svg_dir=None) -> list[list[int]]:
    """The codepoints joined into groups of look-alikes (connected components of the look-alike pairs),
    every codepoint in exactly one group (most alone); each group sorted, groups in order of their first."""
    return [list(group) for group in _groups(tuple(int(c) for c in codepoints), str(svg_dir or glyph_render.kanjivg_dir()))]


@functools.lru_cache(maxsize=4)
def _groups(codepoints: tuple[int, ...], svg_dir: str) -> tuple[tuple[int, ...], ...]:
    # Cached: a builder asks for the groups of its classes twice (to split them, and to record them).
    strokes = [glyph_render.load_strokes(svg_dir, c) for c in codepoints]
    masks = np.stack([canonical_render(s) for s in strokes])
    parent = list(range(len(codepoints)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in lookalike_pairs(masks, np.array([len(s) for s in strokes])):
        parent[max(root(i), root(j))] = min(root(i), root(j))
    groups: dict[int, list[int]] = {}
    for i, codepoint in enumerate(codepoints):
        groups.setdefault(root(i), []).append(codepoint)
    return tuple(sorted((tuple(sorted(group)) for group in groups.values()), key=lambda group: group[0]))
