"""docs/findings.md's comparison table is benchmarks/results/headline.json's pooled rows, number for number.

The table is written by hand from the json (`python tests/test_findings_table.py` prints it); this pins
that no number in it drifts from the run that made it.
"""

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
START, END = "<!-- comparison-table:start -->", "<!-- comparison-table:end -->"
NAMES = {
    "prototypes": "prototypes (Classifier-Baseline)",
    "prototypes_power": "prototypes of power-transformed features",
    "logistic": "logistic regression, L2-normalised features (RFS-simple)",
    "finetuned": "fine-tuned cosine head",
    "ridge": "ridge map, prototype to class mean",
    "anil_features": "ANIL on normalised features (head only)",
    "regressor": "one-step regressor (MetaDiff's network, no diffusion)",
    "metadiff": "**MetaDiff, default** (lr 1e-4)",
    "metadiff_published": "MetaDiff as published (configs/paper.py's settings; this run's features)",
    "metadiff_chosen_on_validation": "**MetaDiff, learning rate chosen on validation**",
}


def row_name(method: str) -> str:
    rate = re.fullmatch(r"metadiff_learning_rate_(\d)e(\d)", method)
    return f"MetaDiff, lr {rate[1]}e-{rate[2]}" if rate else NAMES.get(method, method)


def render(rows: list[dict]) -> str:
    signed = lambda value, width: f"{value:+.2f} +- {width:.2f}"
    lines = [
        "| method | shots | validation (%) | test accuracy (%) | paired diff, episodes (points) | per-seed diffs | seed-level t-interval | rival |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in (r for r in rows if r["seed"] == "pooled"):
        paired = row["paired_diff_points"] is not None
        cells = [
            row_name(row["method"]),
            str(row["shots"]),
            f"{row['validation_percent']:.2f}",
            f"{row['accuracy_percent']:.2f} +- {row['ci95_percent']:.2f}",
            signed(row["paired_diff_points"], row["paired_ci95_points"]) if paired else "",
            ", ".join(f"{d:+.2f}" for d in row["per_seed_diff_points"]) if paired else "",
            signed(row["paired_diff_points"], row["seed_t_ci95_points"]) if paired and row["seed_t_ci95_points"] is not None else "",
            row["paired_against"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_rows() -> list[dict]:
    return json.loads((ROOT / "benchmarks" / "results" / "headline.json").read_text())


def test_findings_comparison_table_is_the_headline_jsons_pooled_rows():
    findings = (ROOT / "docs" / "findings.md").read_text()
    table = findings[findings.index(START) + len(START) : findings.index(END)].strip()
    expected = render(headline_rows())
    assert table == expected, f"docs/findings.md's comparison table differs from headline.json's; it should read:\n{expected}"


def test_findings_names_the_seeds_and_code_version_the_table_was_made_with():
    rows = headline_rows()
    seeds = sorted({row["seed"] for row in rows if row["seed"] != "pooled"})
    versions = {row["code_version"] for row in rows}
    assert len(versions) == 1, f"headline.json mixes code versions {versions}"
    findings = (ROOT / "docs" / "findings.md").read_text()
    intro = " ".join(findings[: findings.index(START)].split())  # the words, whatever the line breaks
    assert f"code version {versions.pop()}" in intro
    assert f"seeds {', '.join(map(str, seeds))}" in intro or f"seeds {seeds[0]}-{seeds[-1]}" in intro


if __name__ == "__main__":
    print(render(headline_rows()))
