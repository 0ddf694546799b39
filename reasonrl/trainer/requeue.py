"""Stop at a generation-step boundary when asked, after a checkpoint: how a run outlives a job's time limit.

launch_slurm.py asks (before the job's time limit, or on SIGUSR1) by writing <output_dir>/stop_requested; every
training process checks for that file at the end of each generation step (`updates_per_generation_step` optimizer
updates), the processes agree through one all-reduce of a flag (a shared filesystem may show the file to one node
before another), then all save a checkpoint at that step and leave the training loop; train_grpo.py exits 0
with a `[stop]` line. The launcher then requeues the job, and the relaunch resumes from that checkpoint with the
data order of an uninterrupted run: at most the generation step in progress when the request came is done anyway,
none is lost.

    echo '{}' > outputs/tiny/stop_requested     # stop a running `train_grpo.py --config recipes/tiny.yaml` cleanly
"""

import json
import os
import time

STOP_FILE = "stop_requested"


def stop_path(output_dir: str) -> str:
    return os.path.join(output_dir, STOP_FILE)


def request_stop(output_dir: str, why: str) -> None:
    """Ask the run in output_dir to save and stop at its next generation-step boundary (written atomically)."""
    os.makedirs(output_dir, exist_ok=True)
    tmp = stop_path(output_dir) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"why": why, "time": time.time()}, f)
    os.replace(tmp, stop_path(output_dir))


def clear_stop_request(output_dir: str) -> None:
    """Forget an earlier request (a relaunch starts without one)."""
    try:
        os.remove(stop_path(output_dir))
    except FileNotFoundError:
        pass


def stop_callback(accelerator, output_dir: str, updates_per_step: int):
    """A TrainerCallback that, at a generation-step boundary where any process sees the stop file, makes every
    process save a checkpoint and stop. Its `stopped_at` is that global step (None while running)."""
    import torch
    from transformers import TrainerCallback

    path = stop_path(output_dir)

    class StopOnRequest(TrainerCallback):
        stopped_at, saved_in_s = None, None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % updates_per_step or state.global_step >= state.max_steps:
                return control
            seen = torch.tensor([float(os.path.exists(path))], device=accelerator.device)
            if accelerator.reduce(seen, reduction="sum").item() > 0:  # one tiny collective per generation step
                self.stopped_at, self._since = state.global_step, time.time()
                control.should_save = control.should_training_stop = True
            return control

        def on_save(self, args, state, control, **kwargs):
            if self.stopped_at is not None:
                self.saved_in_s = time.time() - self._since
            return control

    return StopOnRequest()
