"""Every GPU measurement of the project in one prepared script, for a lent GPU's ~15 minutes.

    python -m benchmarks.device --prepare              # here, with a package index: fill .device/ (below)
    python -m benchmarks.device --dry-run              # here, on the CPU: the same script at tiny sizes
    python -m benchmarks.device --data-dir .device/data   # on the GPU machine (command below)

Parts (`--parts`, comma-separated; all by default), in this order:
  kernels         MetaDiff's outer step against the global batch, sampling 600 / 6,000 episodes x 1,000
                  steps, the ResNet-12 84 px pretraining step in float32 and bfloat16, and the query-loss step
                  (BENCHMARKS.md's gpu_train_step, gpu_sampler, gpu_pretrain, gpu_query_loss sections)
  main_job        the default main job end to end on the built default dataset, each stage timed
  image_learners  ProtoNet, MAML, first-order MAML, ANIL and Meta-SGD on the default dataset at 1 and 5 shots,
                  each trained to its stopping rule (validation stops rising); per-episode test accuracies
                  saved for the headline table (device_image_learners_per_episode.npz)
  mini_imagenet   configs/mini_imagenet_resnet12.py on full-size fake miniImageNet pickles (38,400 / 9,600 /
                  12,000 images of random pixels, the real format), one pretraining epoch and the rest of the
                  job, each stage timed, pretraining's images/s: the real path at scale
Each part writes benchmarks/results/device_<part>.json (the kernels part its four gpu_* files) and its
section of BENCHMARKS.md, unless --dry-run, which writes only under --out.

The GPU machine's Python (3.12) has jax, flax, optax, orbax and chex but not tensorflow-datasets,
ml-collections, tensorboardX or their needs, no package index and no KanjiVG: `--prepare` downloads those
wheels for CPython 3.12 on x86-64 Linux into .device/wheels and copies the built default dataset into
.device/data (together about 30 MiB; .device/ is ignored by git, the device tool's `carry` takes it).
There, with `carry: [".device"]`:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/wheels/*.whl && \
    PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 -m benchmarks.device --data-dir .device/data
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import report

PARTS = ("kernels", "main_job", "image_learners", "mini_imagenet")
IMAGE_LEARNERS = ("protonet", "maml", "fomaml", "anil", "metasgd")
# What the GPU machine lacks (tensorflow-datasets and what it needs without TensorFlow, ml-collections,
# tensorboardX), pinned as requirements.txt pins them where it names them.
WHEELS = (
    "tensorflow-datasets==4.9.10",
    "array-record==0.8.6",
    "ml-collections==1.1.0",
    "tensorboardX==2.6.5",
    "importlib_resources==7.1.0",
    "dm-tree",
    "immutabledict",
    "promise",
    "simple-parsing",
    "docstring-parser",
    "tensorflow-metadata",
    "googleapis-common-protos",
    "termcolor",
    "toml",
)
# Tiny sizes for --dry-run: the same code paths, in seconds on a CPU. Of the rivals the dry run keeps the one
# that trains (a denoiser, the regressor); the others run in the tests.
DRY_RIVALS = "--config.rivals.rows=('regressor',)"
DRY_MAIN_JOB = [
    "--config.pretrain.epochs=1",
    "--config.pretrain.validation_episodes=10",
    "--config.metadiff.steps=20",
    "--config.metadiff.timesteps=50",
    "--config.episodes.test_episodes=10",
    "--config.episodes.shots=(1,)",
    "--config.rivals.validation_episodes=10",
    "--config.rivals.anil.steps=10",
    "--config.checkpoint.validation_episodes=10",
    DRY_RIVALS,
]
DRY_IMAGE_LEARNERS = [
    "--config.baseline.steps=2",
    "--config.baseline.inner_steps=1",
    "--config.baseline.unroll=False",
    "--config.baseline.validate_every=1",
    "--config.baseline.validation_episodes=4",
    "--config.episodes.test_episodes=4",
    "--config.episodes.shots=(1,)",
]


def run_job(config: str, workdir: pathlib.Path, overrides: list[str]) -> dict:
    """`python -m launch.main` as a user runs it; its results.json, with the wall seconds beside it."""
    command = [sys.executable, "-m", "launch.main", "--config", config, "--workdir", str(workdir), *overrides]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=report.ROOT, check=True)
    results = json.loads((workdir / "results.json").read_text())
    return {**results, "wall_seconds": time.perf_counter() - start}


def stage_rows(part: str, results: dict) -> list[dict]:
    rows = [{"part": part, "stage": stage, "seconds": seconds} for stage, seconds in results["stage_seconds"].items()]
    return rows + [{"part": part, "stage": "total (wall)", "seconds": round(results["wall_seconds"], 1)}]


def kernels(dry_run: bool) -> dict[str, list[dict]]:
    from benchmarks import gpu, gpu_query_loss

    if dry_run:
        return {
            "gpu_train_step": gpu.train_step_rows(dims=(16,), batches=(8,), steps=2),
            "gpu_sampler": gpu.sampler_rows(dims=(16,), counts=(4,), timesteps=50),
            "gpu_pretrain": gpu.pretrain_rows(names=("resnet12",), batch=8, size=16, steps=1, width=4),
            "gpu_query_loss": gpu_query_loss.rows(dim=16, sampler_steps=(2,), repeats=1, inner_loops=("remat",)),
        }
    return {
        "gpu_train_step": gpu.train_step_rows(),
        "gpu_sampler": gpu.sampler_rows(),
        "gpu_pretrain": gpu.pretrain_rows(),
        "gpu_query_loss": gpu_query_loss.rows(),
    }


def main_job(data_dir: pathlib.Path, scratch: pathlib.Path, dry_run: bool) -> tuple[list[dict], dict]:
    config = "configs/quick.py" if dry_run else "configs/default.py"
    results = run_job(config, scratch / "main_job", [f"--config.dataset.data_dir={data_dir}", *(DRY_MAIN_JOB if dry_run else [])])
    return stage_rows("main_job", results), {}


def image_learners(data_dir: pathlib.Path, scratch: pathlib.Path, dry_run: bool) -> tuple[list[dict], dict]:
    rows, per_episode = [], {}
    dataset = ["--config.dataset.config=small"] if dry_run else []
    # The dry run trains one of each kind (prototypes; the gradient family, which differ only in settings).
    for method in ("protonet", "fomaml") if dry_run else IMAGE_LEARNERS:
        workdir = scratch / method
        results = run_job(
            f"configs/baselines/{method}.py", workdir, [f"--config.dataset.data_dir={data_dir}", *dataset, *(DRY_IMAGE_LEARNERS if dry_run else [])]
        )
        with np.load(workdir / "per_episode_accuracy.npz") as accuracies:
            per_episode.update({key: accuracies[key] for key in accuracies.files})
        for result in results["results"]:
            shots = result["shots"]
            training = json.loads((workdir / f"{method}_{shots}shot_validation.json").read_text())
            rows.append(
                {
                    "method": method,
                    "dataset": results["dataset"],
                    "shots": shots,
                    "steps_run": training["steps_run"],
                    "best_step": training["best_step"],
                    "accuracy_pct": round(100 * result["accuracy"], 2),
                    "ci95_pct": round(100 * result["ci95"], 2),
                    "train_and_test_seconds": results["stage_seconds"][f"{method} {shots}-shot"],
                }
            )
            print(rows[-1], flush=True)
    return rows, per_episode


def mini_imagenet(scratch: pathlib.Path, dry_run: bool) -> tuple[list[dict], dict]:
    from metadiff_jax.data import fake_files

    classes, per_class = ((6, 5, 5), 16) if dry_run else ((64, 16, 20), 600)
    manual = scratch / "mini_imagenet_files"
    start = time.perf_counter()
    fake_files.mini_imagenet_pickles(manual, classes=classes, per_class=per_class)
    written = time.perf_counter() - start
    overrides = [
        f"--config.dataset.data_dir={scratch / 'mini_imagenet_data'}",
        f"--config.dataset.manual_dir={manual}",
        "--config.dataset.strict=False",  # random pixels, not the official files
        "--config.pretrain.epochs=1",
    ]
    config = "configs/mini_imagenet_resnet12.py" + (":quick" if dry_run else "")
    results = run_job(config, scratch / "mini_imagenet", [*overrides, *([DRY_RIVALS] if dry_run else [])])
    rows = [{"part": "mini_imagenet", "stage": "write fake pickles", "seconds": round(written, 1)}, *stage_rows("mini_imagenet", results)]
    train_images = classes[0] * per_class
    for row in rows:
        if row["stage"] == "pretrain":
            row["images_per_s"] = round(train_images / row["seconds"], 1)  # one epoch, validation encoding included
    return rows, {}


def prepare(data_dir: pathlib.Path) -> None:
    """Fills .device/: the wheels the GPU machine lacks (CPython 3.12, x86-64 Linux) and the built default dataset."""
    folder = report.ROOT / ".device"
    wheels = folder / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28)] + ["--platform=manylinux2014_x86_64"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version=3.12",
            "--implementation=cp",
            *platforms,
            "-d",
            str(wheels),
            *WHEELS,
        ],
        check=True,
    )
    built = data_dir / "kanjivg_glyphs" / "mini_28px"
    if not built.is_dir():
        raise SystemExit(f"{built} is missing: build the default dataset first (python -m launch.main --config configs/default.py ...).")
    shutil.copytree(built, folder / "data" / "kanjivg_glyphs" / "mini_28px", dirs_exist_ok=True)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"{folder}: {size / 2**20:.1f} MiB (the device tool carries at most 64 MiB with the working tree)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--data-dir", type=pathlib.Path, help="the tfds folder holding the built default dataset (on the GPU: .device/data)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on any machine (the small glyph dataset); results only under --out")
    parser.add_argument("--out", type=pathlib.Path, help="with --dry-run: where its json goes (default: a temporary folder)")
    parser.add_argument("--prepare", action="store_true", help="download the wheels and copy the built dataset into .device/, then stop")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.data_dir or pathlib.Path.home() / "tensorflow_datasets")
        return
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
    if {"main_job", "image_learners"} & set(parts) and args.data_dir is None:
        parser.error("main_job and image_learners read the built default dataset: give --data-dir (on the GPU machine, .device/data)")
    out = args.out or pathlib.Path(tempfile.mkdtemp(prefix="device_dry_run_"))
    timings = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        for part in parts:
            start = time.perf_counter()
            if part == "kernels":
                for name, rows in kernels(args.dry_run).items():
                    publish(name, rows, {}, args.dry_run, out)
            else:
                rows, per_episode = {
                    "main_job": lambda: main_job(args.data_dir, scratch, args.dry_run),
                    "image_learners": lambda: image_learners(args.data_dir, scratch, args.dry_run),
                    "mini_imagenet": lambda: mini_imagenet(scratch, args.dry_run),
                }[part]()
                publish(f"device_{part}", rows, per_episode, args.dry_run, out)
            timings.append((part, time.perf_counter() - start))
            print(f"[device] {part} took {timings[-1][1]:.0f} s", flush=True)
    print("[device] " + ", ".join(f"{part} {seconds:.0f} s" for part, seconds in timings) + (f"; dry run written to {out}" if args.dry_run else ""))


TITLES = {
    "gpu_train_step": ("GPU: MetaDiff outer step against the global batch", "5-way 1-shot, TCUNet, T = 1000, Adam + EMA + NaN guard."),
    "gpu_sampler": ("GPU: sampling episodes x 1000 DDPM steps", "5-way 1-shot, deterministic DDPM mean, all episodes vmapped in one call."),
    "gpu_pretrain": (
        "GPU: ResNet-12 pretraining step, 84 x 84, batch 128",
        "64 classes (miniImageNet's base set), SGD Nesterov, on-device shift and flip; float32 and bfloat16 compute (parameters float32).",
    ),
    "gpu_query_loss": (
        "GPU: the query-loss step against K",
        "d = 640, 8 episodes of 5-way 1-shot with 15 queries a class, T = 1000; XLA's compiled temporary bytes.",
    ),
    "device_main_job": (
        "GPU: the default main job, stage by stage",
        "configs/default.py on the built kanjivg_glyphs/mini_28px (renders of glyph stroke data), wall seconds per stage.",
    ),
    "device_image_learners": (
        "GPU: image-level learners on the default dataset",
        "Conv-4 from scratch on image episodes of kanjivg_glyphs/mini_28px (renders of glyph stroke data), trained until "
        "validation stops rising (configs/default.py's baseline section), tested on the main job's 600 fixed test "
        "episodes, accuracy +- 95% CI.",
    ),
    "device_mini_imagenet": (
        "GPU: the miniImageNet ResNet-12 path at full size, on fake files",
        "configs/mini_imagenet_resnet12.py with one pretraining epoch on 38,400 / 9,600 / 12,000 images of random "
        "pixels in the real pickle format: it measures speed only, the accuracies mean nothing.",
    ),
}


def publish(name: str, rows: list[dict], per_episode: dict, dry_run: bool, out: pathlib.Path) -> None:
    if dry_run:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
        if per_episode:
            np.savez(out / f"{name}_per_episode.npz", **per_episode)
        print(f"[dry run] {name}: {len(rows)} rows", flush=True)
        return
    title, notes = TITLES[name]
    report.publish(
        name, rows, title, notes + " Made by `python -m benchmarks.device` on the lent GPU.", module="benchmarks.device", per_episode=per_episode or None
    )


if __name__ == "__main__":
    main()
