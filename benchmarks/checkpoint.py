"""What checkpointing costs the outer loop: asynchronous orbax saves against no saves at all.

    python -m benchmarks.checkpoint

MetaDiff at d = 512 (TCUNet, 807,745 parameters; a checkpoint holds them, the EMA and Adam's two moments,
about 13 MB), 5-way 1-shot, batch 8, T = 1000, on random class-grouped features. Rows: `train.train_denoiser`
for STEPS steps without checkpoints and with a checkpoint every 100 steps (median of 3 runs each, a fresh
directory each run, compile included in both), and one save of that state timed in two parts: the call
that training waits for (`save_call_ms`: copying to host, starting the write) and until the write has
committed (`save_commit_ms`), which happens in the background while training goes on.
"""

from __future__ import annotations

import shutil
import tempfile
import time

import jax
import numpy as np

from benchmarks import common, report
from metadiff_jax import checkpoints, denoiser, diffusion, schedule, train
from metadiff_jax.data import datasets, episodes

DIM, BATCH, STEPS, EVERY = 512, 8, 2000, 100


def main() -> None:
    model = denoiser.make_denoiser("tcunet", DIM)
    noise = schedule.linear_schedule(1000)
    spec = episodes.EpisodeSpec(5, 1, 15)
    features = np.random.default_rng(0).standard_normal((64 * 100, DIM)).astype(np.float32)
    split = datasets.ClassIndexedSplit(features, np.arange(65, dtype=np.int64) * 100, "random/train")
    params = denoiser.init_params(model, jax.random.PRNGKey(0))
    config = train.TrainConfig(steps=STEPS, batch_size=BATCH)
    scratch = tempfile.mkdtemp()
    rows = []
    for saves in (0, STEPS // EVERY):
        def run():
            directory = tempfile.mkdtemp(dir=scratch)
            policy = checkpoints.CheckpointPolicy(directory, every=EVERY, keep=3) if saves else None
            state, _ = train.train_denoiser(model, noise, params, split, spec, config, progress=False, checkpoints=policy)
            jax.block_until_ready(state)
            shutil.rmtree(directory)

        seconds = common.median_seconds(run, repeats=3)
        rows.append({"case": f"{STEPS} steps, {'a checkpoint every %d steps' % EVERY if saves else 'no checkpoints'}", "saves": saves,
                     "ms_per_step": round(1e3 * seconds / STEPS, 3), "save_call_ms": None, "save_commit_ms": None})
        print(rows[-1], flush=True)

    state = diffusion.init_state(params, diffusion.make_optimizer())
    record = {"state": state, "rng": jax.random.PRNGKey(0), "losses": np.zeros(STEPS, np.float32)}
    calls, commits = [], []
    for repeat in range(5):
        manager = checkpoints.checkpoint_manager(f"{scratch}/single{repeat}", max_to_keep=1)
        start = time.perf_counter()
        checkpoints.save_record(manager, 1, record)
        called = time.perf_counter()
        manager.wait_until_finished()
        calls.append(called - start)
        commits.append(time.perf_counter() - start)
        manager.close()
    rows.append({"case": "one save of the whole train state", "saves": 1, "ms_per_step": None,
                 "save_call_ms": round(1e3 * float(np.median(calls)), 1), "save_commit_ms": round(1e3 * float(np.median(commits)), 1)})
    print(rows[-1], flush=True)
    shutil.rmtree(scratch)
    report.publish(
        "checkpoint",
        rows,
        "Checkpointing cost",
        f"MetaDiff d = {DIM}, batch {BATCH}, T = 1000, random features; {STEPS} steps with and without an asynchronous "
        f"orbax checkpoint every {EVERY} steps (median of 3 runs, compile included), and one save timed to the end of "
        "the call training waits for and to its commit (median of 5).",
    )


if __name__ == "__main__":
    main()
