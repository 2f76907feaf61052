"""The picture of the default dataset in docs/datasets.md: renders of its training classes at its difficulty, and one
class at every difficulty level the calibration measured.

    python -m benchmarks.glyph_samples

Writes docs/glyph_samples.png and benchmarks/results/glyph_samples.json (what the picture shows). Renders
in memory, with the dataset's own seed and codepoints; nothing is built or read from disk.
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import report  # noqa: E402
from configs import default  # noqa: E402
from metadiff_jax.data import glyph_render, glyphs  # noqa: E402

CLASSES, DRAWERS = 8, 10
LEVELS = (0.0, 0.75, 1.0, 1.1, 1.25, 1.5)


def main() -> None:
    dataset = next(c for c in glyphs.KanjivgGlyphs.BUILDER_CONFIGS if c.name == default.get_config().dataset.config)
    train = glyphs.split_codepoints(dataset, glyph_render.list_codepoints(glyph_render.kanjivg_dir()))["train"]
    svg = str(glyph_render.kanjivg_dir())
    chosen = train[:: len(train) // CLASSES][:CLASSES]
    rows = [glyph_render.render_character(svg, c, DRAWERS, 28, dataset.seed, dataset.jitter)[..., 0] for c in chosen]
    example = chosen[0]
    level_rows = [glyph_render.render_character(svg, example, DRAWERS, 28, dataset.seed, glyph_render.hard_jitter(level))[..., 0] for level in LEVELS]
    figure, axes = plt.subplots(2, 1, figsize=(DRAWERS * 0.75, (CLASSES + len(LEVELS)) * 0.75 + 1.2), gridspec_kw={"height_ratios": [CLASSES, len(LEVELS)]})
    for axis, images, labels, title in (
        (
            axes[0],
            rows,
            [f"U+{c:04X}" for c in chosen],
            f"kanjivg_glyphs/{dataset.name}: {CLASSES} training classes, {DRAWERS} renders each (difficulty {dataset.difficulty})",
        ),
        (axes[1], level_rows, [f"{level:g}" for level in LEVELS], f"one class (U+{example:04X}) at each difficulty level of the calibration"),
    ):
        axis.imshow(np.concatenate([np.concatenate(list(r), axis=1) for r in images], axis=0), cmap="gray", vmin=0, vmax=255)
        axis.set_yticks(np.arange(len(labels)) * 28 + 14, labels)
        axis.set_xticks([])
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(report.ROOT / "docs" / "glyph_samples.png", dpi=100)
    record = {
        "dataset": f"kanjivg_glyphs/{dataset.name}",
        "difficulty": dataset.difficulty,
        "codepoints": chosen,
        "levels": list(LEVELS),
        **report.this_process(report.ROOT),
    }
    (report.ROOT / "benchmarks" / "results" / "glyph_samples.json").write_text(json.dumps(record, indent=2) + "\n")
    print("Wrote docs/glyph_samples.png")


if __name__ == "__main__":
    main()
