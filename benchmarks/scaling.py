"""Data-parallel outer step on 1, 2, 4 and 8 fake CPU devices (the GPU numbers are in benchmarks.gpu).

    python -m benchmarks.scaling

Fake devices (jax_num_cpu_devices) share this machine's cores, so this measures the overhead of
sharding the step over a ('data',) mesh, not a speedup. MetaDiff outer step, TCUNet at d = 512,
5-way 1-shot, a global batch of 64 episodes split evenly over the devices, in both parallel styles (jit with
shardings; the per-device shard_map program with lax.pmean). Each row runs in its own process.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys

from benchmarks import report

DIM, BATCH, STEPS = 512, 64, 100


def measure(devices: int, style: str) -> dict:
    import jax

    jax.config.update("jax_num_cpu_devices", devices)
    import jax.numpy as jnp

    from benchmarks import common
    from metadiff_jax import denoiser, diffusion, parallel, schedule

    mesh = parallel.make_mesh()
    model = denoiser.make_denoiser("tcunet", DIM)
    optimizer = diffusion.make_optimizer()
    step = parallel.data_parallel_step(functools.partial(diffusion.make_train_step, model, schedule.linear_schedule(1000), optimizer), mesh, style)
    state = parallel.put_replicated(diffusion.init_state(denoiser.init_params(model, jax.random.PRNGKey(0)), optimizer), mesh)
    batch = parallel.put_sharded(common.random_train_batch(BATCH, DIM), mesh)
    key = jnp.asarray(jax.random.PRNGKey(1))
    state, _ = step(state, batch, key)
    # Each step waited for: with more fake devices than cores, several steps in flight can leave every pool
    # thread waiting in a different step's all-reduce (seen here as a rendezvous timeout).
    seconds, state = common.seconds_per_step(step, state, (batch, key), STEPS, wait_each=True)
    return {
        "devices": len(jax.devices()),
        "style": style,
        "fake_cpu_devices": True,
        "global_batch": BATCH,
        "dim": DIM,
        "ms_per_step": round(1e3 * seconds, 3),
        "episodes_per_s": round(BATCH / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, help="measure one row in this process")
    parser.add_argument("--style", default="jit", choices=("jit", "shard_map"), help="with --devices: the parallel style")
    args = parser.parse_args()
    if args.devices:
        print(json.dumps(measure(args.devices, args.style)))
        return
    rows = []
    for devices in (1, 2, 4, 8):
        for style in ("jit", "shard_map"):
            command = [sys.executable, "-m", "benchmarks.scaling", "--devices", str(devices), "--style", style]
            output = subprocess.run(command, cwd=report.ROOT, check=True, capture_output=True, text=True)
            rows.append(json.loads(output.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    report.publish(
        "scaling",
        rows,
        "Data-parallel outer step on fake CPU devices",
        "Fake devices share the same 2 cores: this is the cost of sharding over a ('data',) mesh, not a speedup. "
        f"MetaDiff outer step, d = {DIM}, global batch {BATCH}, median of 3 runs of {STEPS} steps, each step waited for "
        "(several in flight can deadlock fake devices' all-reduce on 2 cores). For a real "
        "accelerator see the GPU sections below.",
    )


if __name__ == "__main__":
    main()
