"""The ablation suite: its registry (configs/ablations.py) and README's command run to completion.

First in the suite's order on purpose: README's command is the longest test, and pytest-xdist's workers take
tests in file order, so starting it first lets the other worker run the rest beside it.
"""

import json
import pathlib
import subprocess
import sys

import pytest
from test_main import TINY, _fake_run, run_main

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def main_run_to_ablate(tmp_path_factory, small_data_dir):
    """A finished quick-config run at one shot, its evaluations all on 20 episodes (one compiled evaluator)."""
    workdir = tmp_path_factory.mktemp("ablated") / "run"
    one_shot = ["--config.episodes.shots=(1,)", "--config.rivals.rows=()", "--config.metadiff.timesteps=100"]  # the quick config's T
    one_shot += ["--config.rivals.validation_episodes=20", "--config.checkpoint.validation_episodes=20"]
    completed = run_main("--workdir", str(workdir), f"--config.dataset.data_dir={small_data_dir}", *TINY, *one_shot)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return workdir


# Entries that change only a number the main run's own code path reads (the learning rate, the network's
# depth): they train exactly as the main run does, so running them here would test nothing new. The learning
# rate's entries ran through this command in the 5-seed comparison (benchmarks.headline).
NUMBER_ONLY_KEYS = {frozenset({"metadiff.learning_rate"}), frozenset({"metadiff.tcunet.depth"})}


def one_ablation_per_set_of_keys() -> list[str]:
    """The first registered ablation of each distinct set of keys it changes: entries that differ from another
    only in a value (the learning-rate grid, DDIM's step counts) take the same code path, so one of each runs
    here, and the untrained denoiser; test_every_ablation_changes_only_metadiff_keys_and_none_repeats_another builds every entry's config."""
    from configs import default
    from launch import ablate

    first = {}
    for name in ablate.available():
        keys = frozenset(ablate.ablated_config(default.get_config(), name)[1])
        if keys not in NUMBER_ONLY_KEYS:
            first.setdefault(keys, name)
    return [*first.values(), "untrained_denoiser"]  # metadiff.steps = 0 skips training: a path of its own


def test_readmes_ablation_command_runs_each_kind_of_ablation_pairs_each_with_the_main_run_and_resumes(main_run_to_ablate, tmp_path):
    """README's command, `python -m launch.ablate --main RUN --workdir DIR`, over one ablation of each kind
    against a finished quick-config run: each runs to its table row or is skipped with a message."""
    workdir = main_run_to_ablate
    suite = tmp_path / "ablations"
    names = one_ablation_per_set_of_keys()
    assert {"published", "untrained_denoiser", "anchor_prototypes_sees_prototypes", "sampler_ddim_10", "steps_x3"} <= set(names)
    command = [sys.executable, "-m", "launch.ablate", "--main", str(workdir), "--workdir", str(suite)]
    completed = subprocess.run([*command, "--only", ",".join(names)], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    assert "[pretrain] done earlier" in completed.stdout  # the main run's backbone is reused
    assert "[metadiff 1-shot] done earlier" in completed.stdout  # and its denoisers, where only evaluation changes
    assert "[metadiff 1-shot] metadiff.steps = 0: evaluating the untrained denoiser" in completed.stdout
    # The quick config has the default's denoiser and T = 100: these two change nothing there.
    skipped = {"anchor_prototypes_sees_prototypes", "timesteps_100"}
    for name in skipped:
        assert f"] {name}: skipped, the main run already has its settings" in completed.stdout
    ran = [name for name in names if name not in skipped]
    rows = {r["ablation"]: r for r in json.loads((suite / "ablations.json").read_text())}
    assert set(rows) == {"main", *ran} and all(row["shots"] == 1 for row in rows.values())
    main_accuracy = json.loads((workdir / "results.json").read_text())["results"]
    main_1shot = next(r for r in main_accuracy if (r["method"], r["shots"]) == ("metadiff", 1))
    assert rows["main"]["accuracy_percent"] == round(100 * main_1shot["accuracy"], 2)
    for name in ran:
        assert rows[name]["paired_diff_points"] == pytest.approx(rows[name]["accuracy_percent"] - rows["main"]["accuracy_percent"], abs=0.02)
    steps = json.loads((suite / "steps_x3" / "run.json").read_text())["config"]["metadiff"]["steps"]
    assert steps == 3 * 30  # relative to the main run's 30 steps
    assert (suite / "ablations.png").read_bytes()[:4] == b"\x89PNG"
    again = subprocess.run([*command, "--only", "sampler_ddim_10,untrained_denoiser,timesteps_100"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("done earlier") == 2 and again.stdout.count("skipped") == 1
    unknown = subprocess.run([*command, "--only", "no_such_ablation"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "unknown ablation no_such_ablation" in unknown.stderr


def test_every_ablation_changes_only_metadiff_keys_and_none_repeats_another():
    """Each entry sets keys that exist and changes the default config under metadiff.* only; no two entries
    make the same config, and only the one that names the default's own denoiser is a no-op against it."""
    from configs import ablations, default
    from launch import ablate

    configs = {}
    for name in ablate.available():
        config, changed = ablate.ablated_config(default.get_config(), name)
        assert all(key.startswith("metadiff.") for key in changed), name
        assert bool(changed) != (name == "anchor_prototypes_sees_prototypes"), name
        configs[name] = config.to_json()
    assert len(set(configs.values())) == len(configs)
    assert len(ablations.ABLATIONS) == len(configs) and all(entry.doc for entry in ablations.ABLATIONS.values())


def test_ablation_table_refuses_a_run_made_on_another_dataset(tmp_path):
    from launch import ablate

    _fake_run(tmp_path / "main", "metadiff", [0.8, 0.6, 1.0, 0.6])
    (tmp_path / "suite").mkdir()
    _fake_run(tmp_path / "suite" / "ema_off", "metadiff", [0.6] * 4)
    assert [r["ablation"] for r in ablate.table(tmp_path / "main", tmp_path / "suite", ["ema_off"])] == ["main", "ema_off"]
    _fake_run(tmp_path / "suite" / "sampler_ddim_10", "metadiff", [0.6] * 4, dataset="kanjivg_glyphs/84px:2.0.0")
    with pytest.raises(SystemExit, match="was made on kanjivg_glyphs/84px:2.0.0"):
        ablate.table(tmp_path / "main", tmp_path / "suite", ["sampler_ddim_10"])


def test_the_published_ablation_is_configs_papers_metadiff_on_the_main_runs_features():
    """Applied to the default, `published` gives every metadiff.* key configs/paper.py has (scale, EMA, steps,
    evaluation included), and nothing outside metadiff."""
    from configs import default, paper
    from launch import ablate

    config, changed = ablate.ablated_config(default.get_config(), "published")
    assert json.loads(config.metadiff.to_json()) == json.loads(paper.paper_config("mini_imagenet", "conv4").metadiff.to_json())
    assert {"metadiff.unit_scale_targets", "metadiff.ema_decay", "metadiff.ema_start", "metadiff.steps", "metadiff.patience"} <= set(changed)
    assert (config.metadiff.steps, config.metadiff.patience, config.metadiff.unit_scale_targets) == (30_000, None, False)


def test_differing_keys_names_changed_added_and_removed_keys_at_any_depth():
    import ml_collections

    from metadiff_jax import config_dict

    a = ml_collections.ConfigDict({"seed": 0, "metadiff": {"steps": 10, "tcunet": {"anchor": "prototypes"}}, "gone": 1})
    b = {"seed": 0, "metadiff": {"steps": 20, "tcunet": {"anchor": "prototypes", "new": None}}}
    assert config_dict.flattened(a) == {"seed": 0, "metadiff.steps": 10, "metadiff.tcunet.anchor": "prototypes", "gone": 1}
    # A key one side lacks differs even where the other holds None.
    assert config_dict.differing_keys(a, b) == ["gone", "metadiff.steps", "metadiff.tcunet.new"]
    assert config_dict.differing_keys(a, a) == []
