"""The checkpointed outer loop that every meta-learner here shares (MetaDiff and the image-episode baselines).

`state, metrics = step_fn(state, batch, rng)` for a number of steps, with batches from a stream that is a
function of the step number (so a resumed run continues it exactly), divergence checks, checkpoints
(metadiff_jax.checkpoints), best-by-validation saves, and a stop on request with a checkpoint of the step
reached.
"""

from __future__ import annotations

from typing import Callable, Iterator

import jax
import numpy as np
import tqdm

from metadiff_jax import checkpoints as checkpoints_lib
from metadiff_jax import parallel


class Preempted(Exception):
    """Training stopped on request after saving a checkpoint of the step it reached."""

    def __init__(self, step: int, directory: str | None):
        self.step, self.directory = step, directory
        super().__init__(f"stopped at step {step}" + (f"; checkpoint saved in {directory}" if directory else ""))


class TrainingDiverged(RuntimeError):
    """A loss or gradient became NaN or Inf; the state kept is the last good one."""


def raise_if_diverged(state, metrics: dict | None = None, what: str = "Training") -> None:
    """The one divergence check of every loop here (MetaDiff's, the baselines', pretraining's).

    A state that records divergence (`diverged_at`, as diffusion.TrainState does: the step whose loss or
    gradient was not finite, whose update was skipped) is checked by it; any other state by
    `metrics["loss"]`. Raises TrainingDiverged naming the step and what to do.
    """
    scalar = parallel.host_value  # also reads values replicated over the devices of several hosts
    remedy = "Lower the learning rate or check the inputs for extreme values."
    if hasattr(state, "diverged_at"):
        diverged_at = int(scalar(state.diverged_at))
        if diverged_at >= 0:
            detail = f" (last loss {float(scalar(metrics['loss']))}, gradient norm {float(scalar(metrics['grad_norm']))})" if metrics else ""
            raise TrainingDiverged(
                f"{what} diverged at step {diverged_at}: the loss or a gradient was NaN or Inf{detail}. The state kept is "
                f"the last good one, after step {int(scalar(state.step))}. {remedy}"
            )
        return
    loss = float(scalar(metrics["loss"]))
    if not np.isfinite(loss):
        raise TrainingDiverged(f"{what} diverged by step {int(scalar(state.step))}: the loss is {loss}. {remedy}")


def checkpointed_loop(
    step_fn,
    state,
    batches_from: Callable[[int], Iterator],
    steps: int,
    rng,
    *,
    check: Callable[[object, dict], None],
    check_every: int = 100,
    checkpoints: checkpoints_lib.CheckpointPolicy | None = None,
    should_stop: Callable[[], bool] | None = None,
    validate: Callable[[object, int], float] | None = None,
    best_item: Callable[[object], object] = lambda state: state,
    place_state: Callable[[object], object] = lambda state: state,
    wait_each_step: bool = False,
    progress: bool = True,
    description: str = "Meta-training",
    patience: int | None = None,
):
    """The outer loop every meta-learner here shares: `state, metrics = step_fn(state, batch, rng)` for
    `steps` steps, with batches from `batches_from(first_step)` (a stream that is a function of the step
    number, so a resumed run continues it exactly) and `metrics["loss"]` recorded per step.

    `check(state, metrics)` raises if training diverged; it runs every `check_every` steps and before every
    save, so no checkpoint of a diverged state is written. With `checkpoints`, resumes from the latest
    checkpoint (its metadata and shapes checked first) and saves {state, rng, losses} every
    `checkpoints.every` steps; `validate(state, step)` at each save picks the `best_item(state)` kept in
    `<directory>_best`; `should_stop()` true saves and raises Preempted. `place_state` puts a restored or
    initial state where the step expects it (e.g. replicated over a mesh). With `validate` and `patience`,
    training stops early once `patience` validations in a row have not beaten the best one (the best is in
    `<directory>_best`). Returns (state, losses of the steps run).
    """
    losses = np.zeros(steps, np.float32)
    validation = np.full(steps, np.nan, np.float32)  # validation accuracy at the steps that had one
    first_step, manager, best = 0, None, None
    if checkpoints is not None:
        manager = checkpoints_lib.checkpoint_manager(checkpoints.directory, checkpoints.metadata, max_to_keep=checkpoints.keep)
        checkpoints_lib.check_metadata(manager, checkpoints.metadata)
        if validate is not None:
            best = checkpoints_lib.checkpoint_manager(
                checkpoints.directory + "_best", max_to_keep=1, best_fn=lambda metrics: metrics["validation_accuracy"], best_mode="max"
            )
        restored = checkpoints_lib.restore_latest(manager, {"state": state, "rng": rng, "losses": losses, "validation": validation})
        if restored is not None:
            record, first_step = restored
            state, rng = jax.tree_util.tree_map(jax.numpy.asarray, (record["state"], record["rng"]))
            kept = min(steps, len(record["losses"]))
            losses[:kept] = record["losses"][:kept]
            validation[:kept] = record["validation"][:kept]
    state = place_state(state)
    batches = batches_from(first_step)
    pending = []  # this run's losses not yet copied into `losses`: reading them every step would sync

    def flush() -> None:
        for index, loss in pending:
            losses[index] = parallel.host_value(loss)
        pending.clear()

    def stalled() -> bool:
        seen = np.flatnonzero(np.isfinite(validation))
        return patience is not None and len(seen) > 0 and int(np.sum(seen > seen[np.argmax(validation[seen])])) >= patience

    done = first_step
    try:
        with tqdm.trange(first_step, steps, initial=first_step, total=steps, desc=description, unit="step", disable=not progress) as bar:
            for step in bar:
                state, metrics = step_fn(state, next(batches), rng)
                pending.append((step, metrics["loss"]))
                if wait_each_step:
                    jax.block_until_ready(state)
                done = step + 1
                stop = should_stop is not None and should_stop()
                # The last step is always saved (and validated): a finished run's best is among all it saw.
                save = manager is not None and (stop or done % checkpoints.every == 0 or done == steps)
                if save or done % check_every == 0 or done == steps:
                    check(state, metrics)
                    bar.set_postfix(loss=f"{float(parallel.host_value(metrics['loss'])):.4f}")
                if save:
                    flush()
                    if best is not None:
                        validation[step] = accuracy = float(validate(state, done))
                        checkpoints_lib.save_record(best, done, best_item(state), {"validation_accuracy": accuracy})
                        bar.set_postfix(loss=f"{losses[step]:.4f}", validation=f"{accuracy:.4f}")
                    checkpoints_lib.save_record(manager, done, {"state": state, "rng": rng, "losses": losses, "validation": validation})
                if stop:
                    raise Preempted(done, checkpoints.directory if checkpoints else None)
                if stalled():
                    bar.write(f"{description}: stopped early at step {done}: {patience} validations without a better one")
                    break
        flush()
    finally:
        # Every way out (divergence, a signal, an error) waits for the saves in flight (orbax's close() does): a
        # process that exits while orbax still commits one loses it, and can hang at shutdown (seen on CI after a
        # divergence).
        for open_manager in (manager, best):
            if open_manager is not None:
                open_manager.close()
    return state, losses[: max(done, first_step)]
