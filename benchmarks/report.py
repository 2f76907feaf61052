"""Shared by every benchmark: print a table, write benchmarks/results/<name>.json, update BENCHMARKS.md.

Each benchmark owns one section of BENCHMARKS.md, between `<!-- <name>:start -->` and `<!-- <name>:end -->`;
a rerun replaces that section (command, date, machine, table) and leaves the others as they are.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import sys

import numpy as np

from launch.provenance import describe_reused, this_process
from metadiff_jax.evaluate import markdown_table

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Every benchmark imports this module as it starts: its rows record the code it started with, not the code on
# disk when it publishes, hours later.
this_process(ROOT)


def machine() -> str:
    import jax

    devices = jax.devices()
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} on {len(devices)} x {devices[0].device_kind}"


def publish(
    name: str,
    rows: list[dict],
    title: str,
    notes: str = "",
    module: str | None = None,
    full_rows: list[dict] | None = None,
    per_episode: dict | None = None,
    command: str | None = None,
    reused: list[dict] | None = None,
) -> None:
    """Prints the table, writes the JSON rows and replaces this benchmark's section of BENCHMARKS.md.

    Every JSON row records the commit and code version it was made at (launch/provenance.py) and the command
    that made it: `command`, or by default this process's module and arguments. `module` is the benchmark
    module that produced the rows, when it is not `benchmarks.<name>`; `full_rows` are written to the JSON
    instead of `rows` when they hold more than the table shows; `per_episode` (name -> per-episode
    accuracies, behind the paired differences) is written to `<name>_per_episode.npz`. `reused` (from
    provenance.check_finished_runs), when given, is recorded in every JSON row as `reused_runs` and, when not
    empty, named at the end of the notes.
    """
    if reused:
        notes = f"{notes.strip()} {describe_reused(reused)}".strip()
    table = markdown_table(rows)
    print(table)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    if per_episode is not None:
        np.savez(results / f"{name}_per_episode.npz", **per_episode)
    command = command or f"python -m {module or 'benchmarks.' + name} {' '.join(sys.argv[1:])}".rstrip()
    made_by = {**this_process(ROOT), "command": command, **({} if reused is None else {"reused_runs": reused})}
    (results / f"{name}.json").write_text(json.dumps([{**row, **made_by} for row in full_rows or rows], indent=2) + "\n")
    section = (
        f"<!-- {name}:start -->\n## {title}\n\n"
        f"`python -m {module or 'benchmarks.' + name}` on {datetime.date.today().isoformat()}, {machine()}, commit {made_by['commit']}.\n\n"
        + (notes.strip() + "\n\n" if notes else "")
        + table
        + f"\n<!-- {name}:end -->"
    )
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEvery figure here was written by the command above it.\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
