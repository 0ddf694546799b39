"""Slurm's GPU assignment reaches launch_slurm.py's plan: a 3-node cluster on this machine with 8 stand-in GPUs per
node declared to Slurm (scripts/slurm_local.sh, SLURM_LOCAL_GPUS=8), no CUDA, no model.

    python -m pytest tests/test_slurm_gpus.py -q        # needs root (apt-get, slurmd, mknod); ~30 s on 2 cores

`launch_slurm.py --probe_gpus` starts each node's job step as a run does and prints the GPUs Slurm gave it: every
GPU of every node is used by exactly one training process or vLLM engine (under salloc and under slurm/justrl.sbatch),
with Slurm's ids (GPUs 4-7 when another job holds 0-3), and a plan that leaves allocated GPUs idle is refused naming
them. Skipped where Slurm cannot be
installed, except under CI, where that fails (tests/conftest.py).
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT, require
from test_slurm import _free_base_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    can_install = os.geteuid() == 0 and shutil.which("apt-get")
    require(shutil.which("srun") is not None or bool(can_install), "Slurm is not installed and cannot be (needs root)")
    directory = str(tmp_path_factory.mktemp("slurm_gpus"))
    env = dict(os.environ, SLURM_LOCAL_DIR=directory, SLURM_LOCAL_PORT=str(_free_base_port(4)), SLURM_LOCAL_GPUS="8")
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_") or k.startswith("SLURM_LOCAL_")}
    up = subprocess.run(["bash", "scripts/slurm_local.sh", "up", "3"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert up.returncode == 0, up.stdout + up.stderr
    env["SLURM_CONF"] = os.path.join(directory, "etc", "slurm.conf")
    yield env
    down = subprocess.run(["bash", "scripts/slurm_local.sh", "down"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.time() + 15  # a daemon SIGKILLed by `down` may take a moment to disappear
    while (left := [line for line in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True,
                                                    text=True).stdout.splitlines() if directory in line]):
        assert time.time() < deadline, f"daemons left after slurm_local.sh down: {left}"
        time.sleep(0.5)


def _probe(env, salloc_gpus: int, *launcher_args):
    """`salloc -N3 --gpus-per-node=<salloc_gpus> launch_slurm.py --probe_gpus ...` on the tiny recipe: (exit code,
    the JSON row of each node, the rest of the output)."""
    cmd = ["salloc", "-N3", f"--gpus-per-node={salloc_gpus}", "--time=2", sys.executable, "launch_slurm.py",
           "--config", "recipes/tiny.yaml", "--probe_gpus", *launcher_args]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return out.returncode, rows, out.stdout + out.stderr


def test_every_gpu_of_every_node_is_used_once_with_slurm_s_ids(gpu_cluster):
    code, rows, text = _probe(gpu_cluster, 8, "--vllm_tensor_parallel_size", "2")
    assert code == 0, text
    every = "0,1,2,3,4,5,6,7"
    assert [(r["host"], r["role"], r["node"], r["CUDA_VISIBLE_DEVICES"], r["SLURM_STEP_GPUS"]) for r in rows] == [
        ("node3", "vllm", "node3", every, every), ("node1", "train", "node1", every, every),
        ("node2", "train", "node2", every, every)]
    assert rows[0]["use"] == [["0", "1"], ["2", "3"], ["4", "5"], ["6", "7"]]  # 4 engines of TP 2
    assert rows[1]["use"] == rows[2]["use"] == [[str(i)] for i in range(8)]  # local rank i on GPU i
    assert "[probe] 24 GPUs on 3 nodes, each used by exactly one training process or vLLM engine" in text


def test_the_batch_job_s_steps_get_every_gpu_of_their_node(gpu_cluster, tmp_path):
    """slurm/justrl.sbatch as submitted (its #SBATCH lines, the launcher in the batch step on the first node)."""
    out = tmp_path / "job.out"
    job = subprocess.run(["sbatch", "-N3", "--gpus-per-node=8", "--time=2", "--wait", f"--output={out}",
                          "slurm/justrl.sbatch", "--config", "recipes/tiny.yaml", "--probe_gpus"],
                         cwd=ROOT, env=gpu_cluster, capture_output=True, text=True, timeout=120)
    text = out.read_text()
    assert job.returncode == 0, job.stdout + job.stderr + text
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert [(r["host"], r["SLURM_STEP_GPUS"], len(r["use"])) for r in rows] == [
        ("node3", "0,1,2,3,4,5,6,7", 8), ("node1", "0,1,2,3,4,5,6,7", 8), ("node2", "0,1,2,3,4,5,6,7", 8)]
    assert "[probe] 24 GPUs on 3 nodes, each used by exactly one training process or vLLM engine" in text


def test_the_gpus_another_job_holds_are_not_used(gpu_cluster):
    """A job holding GPUs 0-3 of every node: the launcher's steps get 4-7 from Slurm, not a range counted from 0."""
    blocker = subprocess.run(["sbatch", "-N3", "--gpus-per-node=4", "--time=2", "--parsable", "--output=/dev/null",
                              "--wrap", "sleep 100"],
                             cwd=ROOT, env=gpu_cluster, capture_output=True, text=True)
    assert blocker.returncode == 0, blocker.stderr
    job = blocker.stdout.strip()
    try:
        deadline = time.time() + 30
        while subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], env=gpu_cluster, capture_output=True,
                             text=True).stdout.strip() != "RUNNING":
            assert time.time() < deadline, "the blocking job did not start"
            time.sleep(0.5)
        code, rows, text = _probe(gpu_cluster, 4)
        assert code == 0, text
        assert {r["SLURM_STEP_GPUS"] for r in rows} == {r["CUDA_VISIBLE_DEVICES"] for r in rows} == {"4,5,6,7"}
        assert rows[0]["use"] == [["4"], ["5"], ["6"], ["7"]]  # TP 1: 4 engines
        assert "[probe] 12 GPUs on 3 nodes" in text
    finally:
        subprocess.run(["scancel", job], env=gpu_cluster)


def test_a_plan_that_leaves_allocated_gpus_idle_is_refused_naming_them(gpu_cluster):
    code, rows, text = _probe(gpu_cluster, 8, "--gpus_per_node", "6")
    assert code == 1, text
    assert [r["SLURM_STEP_GPUS"] for r in rows] == ["0,1,2,3,4,5"] * 3  # Slurm gave each step the 6 it asked for
    assert ("[probe] FAILED: node1: GPUs ['6', '7'] allocated but idle; node2: GPUs ['6', '7'] allocated but idle; "
            "node3: GPUs ['6', '7'] allocated but idle") in text
