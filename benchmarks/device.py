"""Every GPU measurement of the project in one prepared script, for a lent GPU's ~15 minutes.

    python -m benchmarks.device --prepare              # here, with a package index: fill .device/ (below)
    python -m benchmarks.device --dry-run              # here, on the CPU: the same script at tiny sizes
    python -m benchmarks.device --data-dir .device/data   # on the GPU machine (command below)

Parts (`--parts`, comma-separated; all by default), in this order:
  kernels         MetaDiff's outer step against the global batch, sampling 600 / 6,000 episodes x 1,000
                  steps, the ResNet-12 84 px pretraining step in float32 and bfloat16, and the query-loss step
                  (BENCHMARKS.md's gpu_train_step, gpu_sampler, gpu_pretrain, gpu_query_loss sections)
  main_job        the default main job end to end on the built default dataset, each stage timed
  image_learners  ProtoNet, MAML, first-order MAML, ANIL and Meta-SGD on the default dataset at 1 and 5 shots
                  (or the runs --learners names), as parallel processes sharing the GPU (at most
                  --learners-at-once at a time, the next starting as one stops), each trained to its
                  stopping rule (validation stops rising) or until --learner-seconds, when the unfinished are
                  stopped and saved and reported with the steps they reached; per-episode test accuracies of
                  the finished saved for the headline table (device_image_learners_per_episode.npz). The runs
                  live in runs/device_image_learners/: a rerun resumes them
  mini_imagenet   configs/mini_imagenet_resnet12.py on full-size fake miniImageNet pickles (38,400 / 9,600 /
                  12,000 images of random pixels, the real format), one pretraining epoch and the rest of the
                  job, each stage timed, pretraining's images/s: the real path at scale
Each part writes benchmarks/results/device_<part>.json (the kernels part its four gpu_* files) and its
section of BENCHMARKS.md, unless --dry-run, which writes only under --out. With --return-to DIR, after each
part everything published so far is packed into DIR/device_results.tgz, so a command stopped at its time
limit still returns the parts it finished. A lent GPU's 15 minutes hold about one part per call: measured
on an H200, the image learners' MAML and Meta-SGD were still rising after 470 s (ten runs sharing it) and
after 500 s (five).

The GPU machine's Python (3.12) has jax, flax, optax, orbax and chex but not tensorflow-datasets,
ml-collections, tensorboardX or their needs, no package index and no KanjiVG. `--prepare` fills .device/
(ignored by git; the device tool's `carry` takes it, at most 64 MiB with the working tree): the wheels for
CPython 3.12 on x86-64 Linux (promise, which has none, built here), tensorflow-datasets' wheel without the
data files of its own dataset definitions (2.6 MB: the tree must fit), the built default dataset, and
kanjivg_site.tar.xz: KanjiVG's stroke paths alone with its package record (2.3 MB, not the 22 MB wheel),
since the dataset builder lists its classes from them. There, with `carry: [".device"]`:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/wheels/*.whl && \
    tar xJf .device/kanjivg_site.tar.xz -C /tmp/site && \
    PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 -m benchmarks.device --data-dir .device/data --return-to $OUT --parts image_learners

and here, `tar xzf <the returned device_results.tgz>` in the repository's root. With image_learners,
device_learner_runs.tgz.00, .01, ... come back too (parts of at most 15 MiB: the tool returns no file over
16 MiB): the run folders, with each run's newest and best checkpoints. Unpacked in the repository's root
(`cat device_learner_runs.tgz.* | tar xz`), `python -m benchmarks.device --parts image_learners --data-dir
.device/data --learners <the unfinished> --learner-seconds <as long as it takes>` resumes them on this
machine (slowly: a MAML step takes 0.75 s here at 1 shot alone, 4.3 s at 5 shots beside another job) or on the next lent GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

import numpy as np

from benchmarks import image_baselines, report

PARTS = ("kernels", "main_job", "image_learners", "mini_imagenet")
# Where the image learners' runs live, in the repository (ignored by git): kept between calls on a warm GPU
# machine, and returned with --return-to so that this machine can resume them.
LEARNER_RUNS = "runs/device_image_learners"
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
    "simple-parsing",
    "docstring-parser",
    "tensorflow-metadata",
    "googleapis-common-protos",
    "termcolor",
    "toml",
)
# Published as source only: built into a (pure-Python) wheel here.
SOURCE_ONLY = ("promise==2.3",)
# tensorflow-datasets' folders of dataset definitions: their data files (label lists, checksums, citations)
# serve only those datasets, and leaving them out of the wheel keeps what travels under the device tool's 64 MiB.
TFDS_DEFINITION_FOLDERS = (
    "audio", "datasets", "image_classification", "object_detection", "question_answering", "rl_unplugged", "scripts",
    "structured", "summarization", "text", "translate", "url_checksums", "video", "vision_language",
)
CARRY_LIMIT_MIB = 64
# What the device tool returns from $OUT: no file over 16 MiB, 64 MiB in all (device_results.tgz and a log beside).
RETURN_PART_MIB = 15
RETURN_TOTAL_MIB = 56
# Tiny sizes for --dry-run: the same code paths, in seconds on a CPU. Of the rivals the dry run keeps the one
# that trains (a denoiser, the regressor); the others run in the tests.
DRY_RIVALS = "--config.rivals.rows=('regressor',)"
# The test suite's tiny main job (tests/test_main.py's TINY) at one shot, so that the suite's compilation
# cache serves this dry run's programs too.
DRY_MAIN_JOB = [
    "--config.pretrain.epochs=1",
    "--config.pretrain.validation_episodes=20",
    "--config.metadiff.steps=30",
    "--config.metadiff.timesteps=50",
    "--config.episodes.test_episodes=20",
    "--config.episodes.shots=(1,)",
    "--config.rivals.validation_episodes=30",
    "--config.rivals.anil.steps=20",
    DRY_RIVALS,
]
DRY_IMAGE_LEARNERS = [
    "--config.baseline.steps=2",
    "--config.baseline.inner_steps=1",
    "--config.baseline.unroll=False",
    "--config.baseline.validate_every=1",
    "--config.baseline.validation_episodes=4",
    "--config.episodes.test_episodes=4",
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


def image_learners(
    data_dir: pathlib.Path, learner_dir: pathlib.Path, runs: list[tuple[str, int]], dry_run: bool, seconds: float, at_once: int | None = None
) -> tuple[list[dict], dict]:
    """The (learner, shots) runs as parallel `launch.main` processes on the one GPU, at most `at_once` at a
    time (all by default; the next starts as one stops), each in learner_dir/<method>_<shots>shot; after
    `seconds` the unfinished get SIGTERM, which saves them, and those not yet started stay unstarted: the same
    command, there or on any machine holding the folder, resumes them."""
    overrides = [f"--config.dataset.data_dir={data_dir}", *(["--config.dataset.config=small", *DRY_IMAGE_LEARNERS] if dry_run else [])]
    at_once = min(at_once or len(runs), len(runs))
    # Each process takes an equal share of the GPU's memory, not the 75 % JAX takes by default.
    env = {**os.environ, "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 / at_once:.3f}"}
    workdirs = {(method, shots): image_baselines.run_folder(learner_dir, method, shots) for method, shots in runs}
    pending, running, spans = list(runs), {}, {}
    deadline = time.perf_counter() + seconds
    while (pending or running) and time.perf_counter() < deadline:
        while pending and len(running) < at_once:
            method, shots = pending.pop(0)
            workdir = workdirs[method, shots]
            command = image_baselines.learner_command(method, shots, workdir, overrides)
            print("$", " ".join(command), flush=True)
            workdir.mkdir(parents=True, exist_ok=True)
            log = (workdir / "log.txt").open("a")
            spans[method, shots] = [time.perf_counter(), None, validation_record(workdir, method, shots)["steps_run"]]
            running[method, shots] = (subprocess.Popen(command, cwd=report.ROOT, stdout=log, stderr=subprocess.STDOUT, env=env), log)
        for run, (process, log) in list(running.items()):
            if process.poll() is not None:
                spans[run][1] = time.perf_counter()
                log.close()
                del running[run]
        time.sleep(0.2)
    for run, (process, log) in running.items():
        if process.poll() is None:
            process.terminate()
        process.wait()
        spans[run][1] = time.perf_counter()
        log.close()
    rows, per_episode = learner_rows(runs, workdirs)
    for row in rows:
        # This call's rate: with one run at a time a lone process's, else its share of the GPU.
        start, stop, steps_before = spans.get((row["method"], row["shots"]), (None, None, None))
        row["seconds_this_call"] = round(stop - start, 1) if start is not None else 0.0
        row["steps_per_s"] = round((row["steps_run"] - steps_before) / (stop - start), 2) if start is not None else None
    return rows, per_episode


def validation_record(workdir: pathlib.Path, method: str, shots: int) -> dict:
    """A run's validation record (launch/stages.py writes it at every check); before its first, no steps."""
    record_path = workdir / f"{method}_{shots}shot_validation.json"
    return json.loads(record_path.read_text()) if record_path.exists() else {"steps_run": 0, "validations_this_run": []}


def learner_rows(runs: list[tuple[str, int]], workdirs: dict) -> tuple[list[dict], dict]:
    """A row per (learner, shots): its test accuracy if it finished, else how far validation had got."""
    rows, per_episode = [], {}
    for method, shots in runs:
        workdir = workdirs[method, shots]
        training = validation_record(workdir, method, shots)
        best = max(training["validations_this_run"], key=lambda check: check["validation_accuracy"], default=None)
        row = {
            "method": method,
            "shots": shots,
            "finished": (workdir / "results.json").exists(),
            "steps_run": training["steps_run"],
            "best_step": training.get("best_step"),
            "best_validation_pct": round(100 * best["validation_accuracy"], 2) if best else None,
            "accuracy_pct": None,
            "ci95_pct": None,
        }
        if row["finished"]:
            results = json.loads((workdir / "results.json").read_text())
            (result,) = results["results"]
            # The episode list's hash travels with the row, so that its per-episode accuracies can be paired with
            # another run's even when the run folder does not come back.
            row.update(
                accuracy_pct=round(100 * result["accuracy"], 2),
                ci95_pct=round(100 * result["ci95"], 2),
                dataset=results["dataset"],
                test_episodes_sha256=results["test_episodes_sha256"][str(shots)],
            )
            with np.load(workdir / "per_episode_accuracy.npz") as accuracies:
                per_episode[f"{method}_{shots}shot"] = accuracies[f"{method}_{shots}shot"]
        rows.append(row)
        print(row, flush=True)
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
    """Fills .device/ with what the GPU machine lacks (module docstring) and checks that it travels."""
    folder = report.ROOT / ".device"
    wheels = folder / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28)] + ["--platform=manylinux2014_x86_64"]
    pip = [sys.executable, "-m", "pip"]
    target = ["--python-version=3.12", "--implementation=cp", *platforms]
    subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", *target, "-d", str(wheels), *WHEELS], check=True)
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), *SOURCE_ONLY], check=True)
    for wheel in wheels.glob("tensorflow_datasets-*.whl"):
        strip_dataset_definitions(wheel)
    built = data_dir / "kanjivg_glyphs" / "mini_28px"
    if not built.is_dir():
        raise SystemExit(f"{built} is missing: build the default dataset first (python -m launch.main --config configs/default.py ...).")
    shutil.copytree(built, folder / "data" / "kanjivg_glyphs" / "mini_28px", dirs_exist_ok=True)
    kanjivg_site(folder / "kanjivg_site.tar.xz")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=report.ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    size = sum((report.ROOT / path).stat().st_size for path in tracked if path and (report.ROOT / path).is_file())
    size += sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    print(f"{folder} and the tracked files: {size / 2**20:.1f} MiB (the device tool carries at most {CARRY_LIMIT_MIB} MiB)")
    if size > CARRY_LIMIT_MIB * 2**20:
        raise SystemExit(f"error: {size / 2**20:.1f} MiB would not travel; remove what .device/ holds beyond the above (an older dataset version?).")


def strip_dataset_definitions(wheel: pathlib.Path) -> None:
    """Rewrites the tensorflow-datasets wheel without the non-Python files of its dataset definitions."""
    kept = wheel.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(kept, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            parts = entry.filename.split("/")
            if len(parts) > 2 and parts[1] in TFDS_DEFINITION_FOLDERS and not entry.filename.endswith(".py"):
                continue
            target.writestr(entry, source.read(entry.filename))
    kept.replace(wheel)


def kanjivg_site(archive: pathlib.Path) -> None:
    """KanjiVG as the dataset builder reads it on a machine that only loads the built dataset: each character's
    stroke paths (glyph_render.stroke_paths_only) and the package's record, packed to unpack into site-packages."""
    import importlib.metadata

    from metadiff_jax.data import glyph_render

    source = glyph_render.kanjivg_dir()
    distribution = importlib.metadata.distribution("kanjivg")
    info = f"kanjivg-{distribution.version}.dist-info"
    with tempfile.TemporaryDirectory() as site:
        site = pathlib.Path(site)
        (site / source.name).mkdir()
        names = [glyph_render.svg_path(source, codepoint).name for codepoint in glyph_render.list_codepoints(source)]
        for name in names:
            (site / source.name / name).write_text(glyph_render.stroke_paths_only((source / name).read_text(encoding="utf-8")), encoding="utf-8")
        (site / info).mkdir()
        (site / info / "METADATA").write_text(distribution.read_text("METADATA"))
        (site / info / "RECORD").write_text("".join(f"{source.name}/{name},,\n" for name in names) + f"{info}/METADATA,,\n{info}/RECORD,,\n")
        with tarfile.open(archive, "w:xz") as packed:
            packed.add(site / source.name, source.name)
            packed.add(site / info, info)
    print(f"{archive}: {len(names)} characters' stroke paths, {archive.stat().st_size / 2**20:.1f} MiB")


def pack(members: dict[str, pathlib.Path], archive: pathlib.Path) -> None:
    """A .tgz of path -> its name inside, so that `tar xzf` in the repository's root puts each in place.
    Written under a temporary name first: a command stopped mid-pack leaves the last whole one."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as packed:
        for name, path in sorted(members.items()):
            packed.add(path, name)
    partial.replace(archive)


def return_published(written: list[pathlib.Path], folder: pathlib.Path) -> None:
    """The files the parts so far wrote, under their paths in the repository (benchmarks/results/...,
    BENCHMARKS.md), in folder/device_results.tgz."""
    pack({"BENCHMARKS.md" if path.name == "BENCHMARKS.md" else f"benchmarks/results/{path.name}": path for path in written}, folder / "device_results.tgz")


def return_learner_runs(learner_dir: pathlib.Path, folder: pathlib.Path) -> list[pathlib.Path]:
    """The learners' run folders, in parts folder/device_learner_runs.tgz.00, .01, ... of at most
    RETURN_PART_MIB each (the device tool returns no file over 16 MiB), under runs/device_image_learners/:
    `cat device_learner_runs.tgz.* | tar xz` here, and the same command resumes the unfinished on this machine.
    Of each run's progress checkpoints only the newest travels: it is what a resumed run starts from, and the
    older two of the three kept would double what comes back. Returns the parts."""
    progress_folders = [folder for folder in learner_dir.rglob("*_progress") if folder.is_dir()]
    newest = {folder: max((int(step.name) for step in folder.iterdir() if step.name.isdigit()), default=0) for folder in progress_folders}
    files = [path for path in learner_dir.rglob("*") if path.is_file() and not superseded_checkpoint(path, newest)]
    whole = folder / "device_learner_runs.tgz"
    pack({f"{LEARNER_RUNS}/{path.relative_to(learner_dir)}": path for path in files}, whole)
    for stale in folder.glob("device_learner_runs.tgz.*"):
        stale.unlink()
    parts = []
    with whole.open("rb") as packed:
        while chunk := packed.read(RETURN_PART_MIB * 2**20):
            parts.append(folder / f"device_learner_runs.tgz.{len(parts):02d}")
            parts[-1].write_bytes(chunk)
    whole.unlink()
    size = sum(part.stat().st_size for part in parts)
    print(f"[device] learner runs: {len(parts)} part(s), {size / 2**20:.1f} MiB in {folder}", flush=True)
    if size > RETURN_TOTAL_MIB * 2**20:
        print(f"[device] warning: {size / 2**20:.1f} MiB is over the {RETURN_TOTAL_MIB} MiB the device tool returns; run fewer learners a call", flush=True)
    return parts


def superseded_checkpoint(path: pathlib.Path, newest: dict[pathlib.Path, int]) -> bool:
    """Whether path lies in a progress checkpoint older than its folder's newest step (newest: folder -> step)."""
    return any(step.parent in newest and step.name.isdigit() and int(step.name) < newest[step.parent] for step in path.parents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--data-dir", type=pathlib.Path, help="the tfds folder holding the built default dataset (on the GPU: .device/data)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on any machine (the small glyph dataset); results only under --out")
    parser.add_argument("--out", type=pathlib.Path, help="with --dry-run: where its json goes (default: a temporary folder)")
    parser.add_argument("--prepare", action="store_true", help="download the wheels and copy the built dataset into .device/, then stop")
    parser.add_argument("--return-to", type=pathlib.Path, help="after each part, pack what it wrote into DIR/device_results.tgz (the device tool: $OUT)")
    parser.add_argument(
        "--learner-seconds", type=float, default=480, help="image_learners: wall seconds before the unfinished runs are stopped (saved, resumable) and reported"
    )
    parser.add_argument(
        "--learners-at-once",
        type=int,
        help="image_learners: at most this many runs share the GPU at a time, the next starting as one stops (default: all)",
    )
    parser.add_argument(
        "--learners",
        help="image_learners: the runs, comma-separated METHOD or METHOD:SHOTS (default: all five at 1 and 5 shots; the dry run protonet:1,fomaml:1)",
    )
    args = parser.parse_args()
    try:
        learner_runs = image_baselines.parse_learners(args.learners or ("protonet:1,fomaml:1" if args.dry_run else ",".join(image_baselines.LEARNERS)))
    except ValueError as error:
        parser.error(str(error))
    if args.learners_at_once is not None and args.learners_at_once < 1:
        parser.error(f"--learners-at-once {args.learners_at_once}: give 1 or more (the runs sharing the GPU at a time)")
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
    timings, written = [], []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        learner_dir = (scratch if args.dry_run else report.ROOT) / LEARNER_RUNS
        for part in parts:
            start = time.perf_counter()
            if part == "kernels":
                for name, rows in kernels(args.dry_run).items():
                    written += publish(name, rows, {}, args.dry_run, out)
            else:
                rows, per_episode = {
                    "main_job": lambda: main_job(args.data_dir, scratch, args.dry_run),
                    "image_learners": lambda: image_learners(
                        args.data_dir, learner_dir, learner_runs, args.dry_run, args.learner_seconds, args.learners_at_once
                    ),
                    "mini_imagenet": lambda: mini_imagenet(scratch, args.dry_run),
                }[part]()
                written += publish(f"device_{part}", rows, per_episode, args.dry_run, out)
            if args.return_to:
                return_published(written, args.return_to)
                if part == "image_learners":
                    return_learner_runs(learner_dir, args.return_to)
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
        "episodes, accuracy +- 95% CI. The runs (all ten, or those --learners names) share the GPU as parallel processes; a run not finished within "
        "--learner-seconds has no accuracy, only the steps it reached and its best validation so far (100 episodes). "
        "steps_per_s: the outer steps this call ran over its wall seconds, compilation included (with --learners-at-once 1 a "
        "lone process's rate, else its share of the GPU).",
    ),
    "device_mini_imagenet": (
        "GPU: the miniImageNet ResNet-12 path at full size, on fake files",
        "configs/mini_imagenet_resnet12.py with one pretraining epoch on 38,400 / 9,600 / 12,000 images of random "
        "pixels in the real pickle format: it measures speed only, the accuracies mean nothing.",
    ),
}


def publish(name: str, rows: list[dict], per_episode: dict, dry_run: bool, out: pathlib.Path) -> list[pathlib.Path]:
    """Writes the part's rows (a dry run: under `out` only); returns the files written."""
    results = out if dry_run else report.ROOT / "benchmarks" / "results"
    if dry_run:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
        if per_episode:
            np.savez(out / f"{name}_per_episode.npz", **per_episode)
        print(f"[dry run] {name}: {len(rows)} rows", flush=True)
    else:
        title, notes = TITLES[name]
        report.publish(
            name, rows, title, notes + " Made by `python -m benchmarks.device` on the lent GPU.", module="benchmarks.device", per_episode=per_episode or None
        )
    written = [results / f"{name}.json", *([results / f"{name}_per_episode.npz"] if per_episode else [])]
    return written + ([] if dry_run else [report.ROOT / "BENCHMARKS.md"])


if __name__ == "__main__":
    main()
