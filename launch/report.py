"""What a run reports: the printed summary of its data, its results table, and its files (results.json,
results.md, per_episode_accuracy.npz, plots), or, for `eval`, the check that it reproduces them."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import pathlib
import time

import jax
import numpy as np

from launch import provenance
from launch.errors import Irreproducible
from launch.workdir import package_versions, write_text
from metadiff_jax import evaluate, parallel, plots
from metadiff_jax.data import datasets, episodes


def say(message: str) -> None:
    if parallel.is_main_process():
        print(message, flush=True)


def stage_name(what: str, shots: int) -> str:
    """The name of one shot count's stage of `what` (a learner or rival): its log label, its key in results.json's
    stage_seconds, read back by the benchmarks."""
    return f"{what} {shots}-shot"


@dataclasses.dataclass
class Outcome:
    """Everything the evaluation stages produce, gathered for the report."""

    per_episode: dict = dataclasses.field(default_factory=dict)  # "<method>_<K>shot" -> test accuracies `(E,)`
    specs: dict = dataclasses.field(default_factory=dict)  # K -> EpisodeSpec
    test_hashes: dict = dataclasses.field(default_factory=dict)  # "<K>" -> sha256 of the test-episode list
    selected: dict = dataclasses.field(default_factory=dict)  # "<K>" -> method -> {choice, validation_accuracy}
    curves: dict = dataclasses.field(default_factory=dict)  # accuracy along the reverse process
    baselines: dict = dataclasses.field(default_factory=dict)  # horizontal lines beside the curves
    loss_curves: dict = dataclasses.field(default_factory=dict)
    feature_scale: float = 1.0
    stage_seconds: dict = dataclasses.field(default_factory=dict)  # stage -> wall seconds in this run

    @contextlib.contextmanager
    def timed(self, stage: str):
        """Adds the wall time of the block to stage_seconds[stage] (results.json; benchmarks.main_job reads it)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[stage] = round(self.stage_seconds.get(stage, 0.0) + time.perf_counter() - start, 2)

    def add(self, method: str, accuracies: np.ndarray, spec: episodes.EpisodeSpec, plan: episodes.EpisodePlan) -> None:
        self.per_episode[f"{method}_{spec.shots}shot"] = np.asarray(accuracies)
        self.specs[spec.shots] = spec
        self.test_hashes[str(spec.shots)] = episodes.plan_hash(plan)

    def choose(self, shots: int, method: str, choice: dict, validation_accuracy: float) -> None:
        """Records a row's hyperparameters and its accuracy on validation episodes, where they were chosen."""
        self.selected.setdefault(str(shots), {})[method] = {"choice": choice, "validation_accuracy": validation_accuracy}

    def strongest_rival(self, shots: int) -> str | None:
        """The non-diffusion row with the best validation accuracy (chosen on validation, like everything)."""
        rivals = {m: s["validation_accuracy"] for m, s in self.selected.get(str(shots), {}).items() if m != "metadiff"}
        return max(rivals, key=rivals.get) if rivals else None

    @property
    def results(self) -> list:
        """evaluate.MethodResult rows in order of shots, each paired against its shot's strongest rival."""
        rows = []
        for key, accuracies in self.per_episode.items():
            method, shots = key.rsplit("_", 1)
            spec = self.specs[int(shots.removesuffix("shot"))]
            reference = self.strongest_rival(spec.shots)
            paired = None if reference in (None, method) else self.per_episode[f"{reference}_{spec.shots}shot"]
            rows.append(evaluate.summarize(method, accuracies, spec.ways, spec.shots, paired))
        return sorted(rows, key=lambda r: r.shots)

    def paired_against(self) -> dict:
        return {str(k): self.strongest_rival(k) for k in self.specs}


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
    """The run's table: with rivals, each row paired against its shot count's strongest rival on validation."""
    validation = {(m, int(k)): s["validation_accuracy"] for k, chosen in outcome.selected.items() for m, s in chosen.items()}
    reference = {int(k): rival for k, rival in outcome.paired_against().items()}
    return evaluate.results_table(outcome.results, reference, validation)


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
        # Per shot count: each row's hyperparameters and validation accuracy, and the rival paired against.
        "selected_on_validation": outcome.selected,
        "paired_against": outcome.paired_against(),
        # Wall seconds of each stage in the run that wrote this file (a stage restored from its checkpoint: its restore).
        "stage_seconds": outcome.stage_seconds,
        "config": json.loads(config.to_json()),
        **provenance.made_by(config),
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
