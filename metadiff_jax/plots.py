"""Figures people would rather look at than read. Functions return matplotlib figures; callers save them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metadiff_jax.data.split import ClassIndexedSplit  # noqa: E402


def sample_grid(split: ClassIndexedSplit, rows: int = 8, columns: int = 10, seed: int = 0, title: str = "") -> plt.Figure:
    """`rows` random classes of `split`, each a row of its first `columns` images."""
    rng = np.random.default_rng(seed)
    classes = np.sort(rng.choice(split.num_classes, size=min(rows, split.num_classes), replace=False))
    columns = min(columns, int(split.class_sizes.min()))
    figure, axes = plt.subplots(len(classes), columns, figsize=(columns * 0.8, len(classes) * 0.8), squeeze=False)
    for row, class_index in enumerate(classes):
        for column in range(columns):
            image = split.images[split.class_starts[class_index] + column]
            axis = axes[row, column]
            axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row, 0].set_ylabel(f"class {class_index}", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def accuracy_per_step(curves: dict[str, np.ndarray], baselines: dict[str, float] | None = None, title: str = "") -> plt.Figure:
    """Query accuracy (%) along the reverse process, one line per method; horizontal lines for baselines.

    curves: name -> accuracy after each sampler step `(steps,)`, in [0, 1].
    """
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for name, curve in curves.items():
        axis.plot(np.arange(1, len(curve) + 1), 100 * np.asarray(curve), label=name)
    for name, value in (baselines or {}).items():
        axis.axhline(100 * value, linestyle="--", color="gray", linewidth=1)
        axis.annotate(name, (1, 100 * value), textcoords="offset points", xytext=(2, 3), fontsize=8, color="gray")
    axis.set_xlabel("denoising step (of the reverse process)")
    axis.set_ylabel("query accuracy (%)")
    axis.legend(fontsize=8, loc="lower right")
    axis.grid(alpha=0.3)
    if title:
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def training_loss(losses: dict[str, np.ndarray], title: str = "", window: int = 100) -> plt.Figure:
    """Per-step training losses, one line per run, smoothed by a moving average of `window` steps."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for name, values in losses.items():
        values = np.asarray(values, np.float64)
        width = max(1, min(window, len(values) // 5))
        smoothed = np.convolve(values, np.ones(width) / width, mode="valid")
        axis.plot(np.arange(width, len(values) + 1), smoothed, label=name)
    axis.set_xlabel("training step")
    axis.set_ylabel(f"loss (moving average over {window} steps)")
    axis.set_yscale("log")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    if title:
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def memory_against_steps(rows: list[dict]) -> plt.Figure:
    """Compiled temporary memory (MiB) of one outer step against inner steps (or T), one line per method."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    label = lambda row: row["method"] if row.get("inner_loop", "none") == "none" else f"{row['method']} ({row['inner_loop']})"
    for name in dict.fromkeys(label(row) for row in rows):
        points = sorted((row["inner_steps"], row["compiled_temp_bytes"] / 2**20) for row in rows if label(row) == name)
        axis.plot(*zip(*points), marker="o", label=name)
    axis.set_xscale("log")
    axis.set_yscale("log")  # MiB for MetaDiff, GiB for MAML: both visible
    axis.set_xlabel("inner steps (MAML, ANIL), T (MetaDiff) or sampler steps K (query loss)")
    axis.set_ylabel("compiled temporary memory (MiB)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def paired_differences(rows: list[dict], title: str = "") -> plt.Figure:
    """Paired accuracy differences against a reference (points, +- 95% CI), one panel per shot count.

    rows: dicts with `ablation`, `shots`, `paired_diff_points`, `paired_ci95_points` (None for the reference).
    """
    shots = sorted({row["shots"] for row in rows})
    per_panel = max(sum(row["shots"] == k for row in rows) for k in shots)
    figure, axes = plt.subplots(1, len(shots), figsize=(4.5 * len(shots), 0.3 * per_panel + 1.5), squeeze=False)
    for axis, k in zip(axes[0], shots):
        chosen = [row for row in rows if row["shots"] == k and row["paired_diff_points"] is not None]
        names = [row["ablation"] for row in chosen]
        axis.errorbar([row["paired_diff_points"] for row in chosen], range(len(chosen)), xerr=[row["paired_ci95_points"] for row in chosen], fmt="o", capsize=3)
        axis.axvline(0.0, color="gray", linewidth=1)
        axis.set_yticks(range(len(chosen)), names, fontsize=8)
        axis.invert_yaxis()
        axis.set_xlabel(f"{k}-shot accuracy difference (points)")
        axis.grid(alpha=0.3, axis="x")
    figure.suptitle(title)
    figure.tight_layout()
    return figure
