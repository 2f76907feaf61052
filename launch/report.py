"""What a run reports: the printed summary of its data, its results table, and its files (results.json,
results.md, per_episode_accuracy.npz, plots), or, for `eval`, the check that it reproduces them."""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib

import jax
import numpy as np

from launch.errors import Irreproducible
from launch.workdir import package_versions, write_text
from metadiff_jax import evaluate, parallel, plots
from metadiff_jax.data import datasets, episodes


def say(message: str) -> None:
    if parallel.is_main_process():
        print(message, flush=True)


@dataclasses.dataclass
class Outcome:
    """Everything the evaluation stages produce, gathered for the report."""

    results: list = dataclasses.field(default_factory=list)  # evaluate.MethodResult rows, in order
    per_episode: dict = dataclasses.field(default_factory=dict)  # "<method>_<K>shot" -> accuracies `(E,)`
    test_hashes: dict = dataclasses.field(default_factory=dict)  # "<K>" -> sha256 of the test-episode list
    curves: dict = dataclasses.field(default_factory=dict)  # accuracy along the reverse process
    baselines: dict = dataclasses.field(default_factory=dict)  # horizontal lines beside the curves
    loss_curves: dict = dataclasses.field(default_factory=dict)
    feature_scale: float = 1.0

    def add(self, method: str, accuracies: np.ndarray, spec: episodes.EpisodeSpec, plan: episodes.EpisodePlan, reference=None) -> None:
        self.results.append(evaluate.summarize(method, accuracies, spec.ways, spec.shots, reference))
        self.per_episode[f"{method}_{spec.shots}shot"] = accuracies
        self.test_hashes[str(spec.shots)] = episodes.plan_hash(plan)


def describe(config, builder, mesh) -> None:
    """Prints where the run is and what data it reads."""
    identity = datasets.dataset_identity(builder)
    say(f"[mesh] {mesh.size} device(s) ({jax.devices()[0].platform}) in {jax.process_count()} process(es), parallel style {config.parallel.style}")
    rows = datasets.summary(builder)
    say(f"\n[dataset] {identity} in {builder.data_dir}\n| split | classes | images |\n|---|---|---|")
    say("\n".join(f"| {r['split']} | {r['classes']} | {r['images']} |" for r in rows))
    if config.dataset.name == "kanjivg_glyphs":
        say("[dataset] renders of real glyph stroke data from KanjiVG, not Omniglot")
    for difference in builder.info.metadata.get("differences_from_official", []):
        say(f"[dataset] NOT the official release: {difference}")


def table(outcome: Outcome) -> str:
    return evaluate.results_table(outcome.results, "prototypes")


def write(workdir: pathlib.Path, config, outcome: Outcome, identity: str, mesh) -> None:
    """results.json, results.md, per_episode_accuracy.npz and plots/, each written whole or not at all."""
    np.savez(workdir / "per_episode_accuracy.npz", **outcome.per_episode)
    plot_dir = workdir / "plots"
    if outcome.curves:
        title = f"{identity}: test accuracy along the reverse process"
        plots.accuracy_per_step(outcome.curves, outcome.baselines, title).savefig(plot_dir / "accuracy_per_step.png", dpi=110)
    if outcome.loss_curves:
        plots.training_loss(outcome.loss_curves, "MetaDiff training loss").savefig(plot_dir / "training_loss.png", dpi=110)
    text = table(outcome)
    write_text(workdir / "results.md", text + "\n")
    record = {
        "results": [dataclasses.asdict(r) for r in outcome.results],
        "method": config.method,
        "dataset": identity,
        "seed": config.seed,
        "feature_scale": outcome.feature_scale,
        "devices": mesh.size,
        "processes": jax.process_count(),
        "test_episodes_sha256": outcome.test_hashes,
        "config": json.loads(config.to_json()),
        "versions": package_versions(),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    write_text(workdir / "results.json", json.dumps(record, indent=2))
    say("\n" + text)
    say(f"\nWrote {workdir / 'results.json'}, {workdir / 'results.md'}, plots in {plot_dir}, TensorBoard logs in {workdir / 'tensorboard'}")


def check_reproduced(workdir: pathlib.Path, outcome: Outcome) -> None:
    """Prints the table evaluated again and compares it with results.json, field by field, exactly."""
    recorded = {(r["method"], r["shots"]): r for r in json.loads((workdir / "results.json").read_text())["results"]}
    say("\n" + table(outcome))
    differences = []
    for result in outcome.results:
        saved = recorded.get((result.method, result.shots))
        if saved != dataclasses.asdict(result):
            differences.append(f"{result.method} {result.shots}-shot: results.json has {saved}, evaluated again {dataclasses.asdict(result)}")
    if differences:
        raise Irreproducible("the evaluation does not reproduce results.json:\n" + "\n".join(differences))
    say(f"\nReproduces {workdir / 'results.json'} exactly ({len(outcome.results)} rows).")
