"""Handwriting-like renders of KanjiVG stroke data, byte-identical on every machine.

KanjiVG (https://kanjivg.tagaini.net, CC BY-SA 3.0, shipped in the PyPI package `kanjivg`) draws each
character as an ordered list of strokes, each stroke a chain of cubic Bezier segments in a 109 x 109 box.
A "drawer" is one render of a character: every stroke is moved, turned, scaled and wobbled on its own,
then the whole glyph goes through a small random affine warp and is drawn with a random pen width.

Reproducibility across machines is by construction, not by luck:
- randomness comes only from uniform draws of a counter-based generator (Philox) keyed by
  (seed, codepoint, drawer), so a render depends on nothing else (not on the other characters built,
  the worker that drew it, or the order of work);
- the geometry uses only +, -, * and / on float64, elementwise (no BLAS, no libm sin/cos, no reductions
  whose order SIMD could change): rotations are Cayley transforms R(a) = [[1-a^2, -2a], [2a, 1-a^2]] / (1+a^2);
- strokes are drawn with Pillow at a supersampled size and reduced by an integer box filter.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import pathlib
import re
from typing import Sequence

import numpy as np
from fontTools.pens.recordingPen import RecordingPen
from fontTools.svgLib.path import parse_path
from PIL import Image, ImageDraw

VIEWBOX = 109.0
# Points at which each cubic segment is evaluated before drawing it as a polyline.
# Written with products only: numpy's power may call a vectorised libm that differs between CPUs.
_CURVE_T = np.arange(9) / 8.0
_CURVE_S = 1.0 - _CURVE_T
_BERNSTEIN = np.stack(
    [_CURVE_S * _CURVE_S * _CURVE_S, 3.0 * _CURVE_T * _CURVE_S * _CURVE_S, 3.0 * _CURVE_T * _CURVE_T * _CURVE_S, _CURVE_T * _CURVE_T * _CURVE_T],
    axis=1,
)  # (9, 4)
_PATH_RE = re.compile(r'<path[^>]*\sd="([^"]+)"')
_BASE_FILE_RE = re.compile(r"^([0-9a-f]{5})\.svg$")


@dataclasses.dataclass(frozen=True)
class JitterConfig:
    """How far one drawer departs from the KanjiVG strokes (lengths in units of the 109-unit box)."""

    stroke_shift: float = 2.5  # per-stroke translation, uniform in +-stroke_shift
    stroke_turn: float = 0.07  # per-stroke Cayley rotation parameter (about +-8 degrees)
    stroke_scale: float = 0.10  # per-stroke scale 1 +- stroke_scale about the stroke's midpoint
    point_wobble: float = 1.6  # every Bezier point moved independently, uniform in +-point_wobble
    glyph_turn: float = 0.08  # whole-glyph Cayley rotation parameter (about +-9 degrees)
    glyph_scale: tuple[float, float] = (0.82, 1.0)  # per-axis scale range
    glyph_shear: float = 0.15
    glyph_shift: float = 5.0
    pen_width: tuple[float, float] = (1.3, 2.6)  # in output pixels at 28 x 28 (scaled with the size)
    # Harder renders (all off by default, and then no random number is drawn for them, so the renders of
    # the configs that leave them off do not change):
    stroke_dropout: float = 0.0  # each stroke left out with this probability (one always stays)
    clutter_strokes: int = 0  # up to this many distractor strokes (random cubic curves) on top
    clutter_span: float = 40.0  # a distractor's extent, in box units
    ink: tuple[float, float] = (1.0, 1.0)  # ink intensity, a fraction of white, drawn per render
    noise: float = 0.0  # pixel noise, uniform in +-noise grey levels (of 255), drawn per pixel


# The far end of the difficulty scale of `hard_jitter` (its level 1): every knob of JitterConfig turned up.
_HARDEST = JitterConfig(
    stroke_shift=6.0,
    stroke_turn=0.18,
    stroke_scale=0.3,
    point_wobble=3.5,
    glyph_turn=0.2,
    glyph_scale=(0.6, 1.0),
    glyph_shear=0.3,
    glyph_shift=10.0,
    stroke_dropout=0.2,
    clutter_strokes=3,
    ink=(0.5, 1.0),
    noise=60.0,
)


def hard_jitter(level: float) -> JitterConfig:
    """Renders harder by one number: level 0 is JitterConfig(), level 1 every knob at _HARDEST, linear
    between (the distractor count rounded to a whole number)."""
    if level < 0:
        raise ValueError(f"difficulty level must be 0 or more, got {level}.")
    easy, hard = JitterConfig(), _HARDEST

    def between(name):
        a, b = getattr(easy, name), getattr(hard, name)
        if isinstance(a, tuple):
            return tuple(x + level * (y - x) for x, y in zip(a, b))
        return a + level * (b - a)

    values = {field.name: between(field.name) for field in dataclasses.fields(JitterConfig)}
    values["clutter_strokes"] = int(round(values["clutter_strokes"]))
    values["pen_width"] = easy.pen_width
    return JitterConfig(**values)


def kanjivg_dir() -> pathlib.Path:
    """The folder of SVG files installed by the `kanjivg` package."""
    try:
        files = importlib.metadata.files("kanjivg")
    except importlib.metadata.PackageNotFoundError as error:
        raise RuntimeError(
            "The stroke data package `kanjivg` is not installed; install it with "
            "`pip install -r requirements.txt` (it ships the SVG files the default dataset is drawn from)."
        ) from error
    for file in files or ():
        if file.suffix == ".svg":
            return pathlib.Path(file.locate()).parent
    raise RuntimeError("The `kanjivg` package is installed but holds no SVG files; reinstall it.")


def list_codepoints(svg_dir: pathlib.Path) -> list[int]:
    """Every distinct character of KanjiVG, as sorted codepoints (variant files like 04e14-Kaisho skipped)."""
    codepoints = []
    for path in svg_dir.iterdir():
        match = _BASE_FILE_RE.match(path.name)
        if match:
            codepoints.append(int(match.group(1), 16))
    return sorted(codepoints)


def svg_path(svg_dir: pathlib.Path, codepoint: int) -> pathlib.Path:
    return svg_dir / f"{codepoint:05x}.svg"


def stroke_paths_only(svg_text: str) -> str:
    """The file reduced to its stroke paths, all that `parse_strokes` reads (a quarter of the bytes): what a
    machine that only reads an already built dataset needs of KanjiVG to list its classes."""
    return "".join(f'<path d="{d}"/>\n' for d in _PATH_RE.findall(svg_text))


def parse_strokes(svg_text: str) -> list[np.ndarray]:
    """Strokes of one KanjiVG file, each a chain of cubic Bezier points `(1 + 3 * segments, 2)`.

    Consecutive segments share their end points, so moving a point moves both segments and the stroke
    stays connected. Straight segments become cubics with control points at thirds.
    """
    strokes = []
    for d in _PATH_RE.findall(svg_text):
        pen = RecordingPen()
        parse_path(d, pen)
        points: list[tuple[float, float]] = []
        for operator, args in pen.value:
            if operator == "moveTo":
                if points:
                    raise ValueError(f"KanjiVG stroke with several sub-paths is not supported: {d!r}")
                points.append(args[0])
            elif operator == "curveTo":
                points.extend(args)
            elif operator == "lineTo":
                (x0, y0), (x1, y1) = points[-1], args[0]
                points.extend([(x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 3), (x0 + 2 * (x1 - x0) / 3, y0 + 2 * (y1 - y0) / 3), (x1, y1)])
            elif operator in ("endPath", "closePath"):
                continue
            else:
                raise ValueError(f"Unexpected path operator {operator!r} in KanjiVG stroke {d!r}")
        if len(points) >= 4:
            strokes.append(np.asarray(points, dtype=np.float64))
    if not strokes:
        raise ValueError("SVG file holds no strokes")
    return strokes


@functools.lru_cache(maxsize=None)
def load_strokes(svg_dir: str, codepoint: int) -> tuple[np.ndarray, ...]:
    text = svg_path(pathlib.Path(svg_dir), codepoint).read_text(encoding="utf-8")
    return tuple(parse_strokes(text))


def drawer_rng(seed: int, codepoint: int, drawer: int) -> np.random.Generator:
    """The generator of one render: Philox keyed by (seed, codepoint, drawer), independent of all else."""
    key = np.array([seed, (codepoint << 16) | drawer], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key))


def _uniform(rng: np.random.Generator, half_width: float, size=None):
    return (rng.random(size) * 2.0 - 1.0) * half_width


def _rotate(x: np.ndarray, y: np.ndarray, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Cayley rotation by parameter a (angle 2 atan a), with only rational arithmetic."""
    denominator = 1.0 + a * a
    cos, sin = (1.0 - a * a) / denominator, 2.0 * a / denominator
    return x * cos - y * sin, x * sin + y * cos


def jitter_strokes(strokes: Sequence[np.ndarray], rng: np.random.Generator, jitter: JitterConfig) -> list[np.ndarray]:
    """One drawer's strokes in box units: per-stroke shift/turn/scale/wobble, then a glyph-wide affine."""
    centre = VIEWBOX / 2.0
    turn = _uniform(rng, jitter.glyph_turn)
    scale_x, scale_y = jitter.glyph_scale[0] + rng.random(2) * (jitter.glyph_scale[1] - jitter.glyph_scale[0])
    shear = _uniform(rng, jitter.glyph_shear)
    shift_x, shift_y = _uniform(rng, jitter.glyph_shift, 2)
    out = []
    for points in strokes:
        first, last = points[0], points[-1]
        mid_x, mid_y = (first[0] + last[0]) / 2.0, (first[1] + last[1]) / 2.0
        stroke_scale = 1.0 + _uniform(rng, jitter.stroke_scale)
        x, y = _rotate((points[:, 0] - mid_x) * stroke_scale, (points[:, 1] - mid_y) * stroke_scale, _uniform(rng, jitter.stroke_turn))
        dx, dy = _uniform(rng, jitter.stroke_shift, 2)
        wobble = _uniform(rng, jitter.point_wobble, points.shape)
        x = x + mid_x + dx + wobble[:, 0] - centre
        y = y + mid_y + dy + wobble[:, 1] - centre
        x, y = x + shear * y, y
        x, y = _rotate(x * scale_x, y * scale_y, turn)
        out.append(np.stack([x + centre + shift_x, y + centre + shift_y], axis=1))
    return out


def _polyline(points: np.ndarray) -> np.ndarray:
    """Cubic Bezier chain `(1 + 3n, 2)` evaluated at fixed parameters: `(8n + 1, 2)` points."""
    segments = (points.shape[0] - 1) // 3
    rows = []
    for k in range(segments):
        p0, p1, p2, p3 = points[3 * k], points[3 * k + 1], points[3 * k + 2], points[3 * k + 3]
        b = _BERNSTEIN[:, :, None]
        curve = b[:, 0] * p0 + b[:, 1] * p1 + b[:, 2] * p2 + b[:, 3] * p3
        rows.append(curve if k == 0 else curve[1:])
    return np.concatenate(rows, axis=0)


def supersample_factor(size: int) -> int:
    """Draw on a canvas of at least 112 pixels so that thin pens stay smooth after the box filter."""
    return max(1, -(-112 // size))


def draw(strokes: Sequence[np.ndarray], size: int, pen_width_px: float) -> np.ndarray:
    """Draw strokes (box units) as white ink on black: uint8 `(size, size)`."""
    factor = supersample_factor(size)
    canvas_size = size * factor
    to_canvas = canvas_size / VIEWBOX
    width = max(1, int(round(pen_width_px * factor)))
    radius = width / 2.0
    canvas = Image.new("L", (canvas_size, canvas_size), 0)
    pen = ImageDraw.Draw(canvas)
    for points in strokes:
        line = _polyline(points) * to_canvas
        coords = [(float(x), float(y)) for x, y in line]
        pen.line(coords, fill=255, width=width, joint="curve")
        for x, y in (coords[0], coords[-1]):
            pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    pixels = np.asarray(canvas, dtype=np.uint32).reshape(size, factor, size, factor)
    block_sum = pixels.sum(axis=(1, 3))  # integer sums: exact whatever the summation order
    area = factor * factor
    return ((block_sum + area // 2) // area).astype(np.uint8)


def _harder(strokes: list[np.ndarray], rng: np.random.Generator, jitter: JitterConfig) -> list[np.ndarray]:
    """Stroke dropout and distractor strokes (box units), drawing random numbers only for knobs that are on."""
    if jitter.stroke_dropout > 0:
        kept = rng.random(len(strokes)) >= jitter.stroke_dropout
        kept[int(rng.random() * len(strokes))] = True
        strokes = [stroke for stroke, keep in zip(strokes, kept) if keep]
    if jitter.clutter_strokes > 0:
        for _ in range(int(rng.random() * (jitter.clutter_strokes + 1))):
            start = rng.random(2) * VIEWBOX
            steps = _uniform(rng, jitter.clutter_span / 3.0, (3, 2))
            points = [start]
            for step in steps:  # a sum written out: no reduction whose order could vary
                points.append(points[-1] + step)
            strokes.append(np.stack(points))
    return strokes


def _finish(image: np.ndarray, rng: np.random.Generator, jitter: JitterConfig) -> np.ndarray:
    """Ink intensity and pixel noise, in integer grey levels."""
    if jitter.ink != (1.0, 1.0):
        ink = int(round(255 * (jitter.ink[0] + rng.random() * (jitter.ink[1] - jitter.ink[0]))))
        image = (image.astype(np.int64) * ink + 127) // 255
    if jitter.noise > 0:
        noise = np.round(_uniform(rng, jitter.noise, image.shape)).astype(np.int64)
        image = np.clip(image.astype(np.int64) + noise, 0, 255)
    return image.astype(np.uint8)


def render_drawer(
    strokes: Sequence[np.ndarray], size: int, seed: int, codepoint: int, drawer: int, jitter: JitterConfig = JitterConfig()
) -> np.ndarray:
    """One drawer of one character: uint8 `(size, size)`."""
    rng = drawer_rng(seed, codepoint, drawer)
    pen_width = jitter.pen_width[0] + rng.random() * (jitter.pen_width[1] - jitter.pen_width[0])
    drawn = _harder(jitter_strokes(strokes, rng, jitter), rng, jitter)
    return _finish(draw(drawn, size, pen_width * size / 28.0), rng, jitter)


def render_character(svg_dir: str, codepoint: int, drawers: int, size: int, seed: int, jitter: JitterConfig = JitterConfig()) -> np.ndarray:
    """All drawers of one character: uint8 `(drawers, size, size, 1)`. Picklable for worker processes."""
    strokes = load_strokes(svg_dir, codepoint)
    images = [render_drawer(strokes, size, seed, codepoint, drawer, jitter) for drawer in range(drawers)]
    return np.stack(images)[..., None]
