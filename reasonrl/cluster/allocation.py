"""What the allocation holds, asked of Slurm: its hosts (scontrol show hostnames), their addresses (NodeAddr), its GPUs
per node (the environment, else the job's TresPerNode), and which GPUs each node's job step gets (--probe_gpus: a
probe step per node, checked against `scontrol show job -d`). launch_slurm.py reads these; the plan
(reasonrl/cluster/plan.py) computes from them.
"""

import json
import os
import re
import shutil
import subprocess
import sys

from reasonrl.cluster.plan import expand_hostlist, gpu_use, srun_command, unused_or_shared


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compact host list as host names: `scontrol show hostnames` where Slurm is installed, else the same
    expansion here ("gpu[01-03,07],head", "gpu[01-02]-ib", "r[1-2]n[1-2]")."""
    if shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()
    return expand_hostlist(nodelist)


def node_address(host: str) -> str:
    """The address to reach `host` at: its NodeAddr in Slurm (node names need not resolve), else the name itself."""
    if shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "node", "-o", host], capture_output=True, text=True)
        match = re.search(r"\bNodeAddr=(\S+)", out.stdout)
        if out.returncode == 0 and match:
            return match.group(1)
    return host


def allocation_gpus() -> int | None:
    """GPUs per node of the current allocation: from Slurm's environment (--gpus-per-node), else the job's
    TresPerNode (--gres=gpu:8); None when it names none."""
    for key in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        match = re.search(r"(\d+)$", os.environ.get(key, ""))  # "8" or "h100:8"
        if match:
            return int(match.group(1))
    job = os.environ.get("SLURM_JOB_ID")
    if job and shutil.which("scontrol"):
        out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
        match = re.search(r"TresPerNode=\S*?gpu(?::[\w.-]+)?:(\d+)", out)
        if match:
            return int(match.group(1))
    return None


# What a probe step prints: the node Slurm ran it on and the GPUs Slurm gave it.
PROBE = 'echo "$SLURMD_NODENAME ${CUDA_VISIBLE_DEVICES-} ${SLURM_STEP_GPUS-}"'


def probe_steps(plan: list[dict]) -> dict[str, dict]:
    """Each node's job step as the run starts it (srun_command), running PROBE instead of its command (seconds, no
    model): host -> {node, CUDA_VISIBLE_DEVICES, SLURM_STEP_GPUS} as Slurm set them."""
    procs = {n["host"]: subprocess.Popen(srun_command(n, "probe") + ["bash", "-c", PROBE], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True) for n in plan}
    steps = {}
    for host, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        fields = out.strip().split(" ")
        if proc.returncode != 0 or len(fields) != 3:
            raise RuntimeError(f"the probe step on {host} failed (exit code {proc.returncode}): "
                               f"{out.strip()} {err.strip()}")
        steps[host] = dict(zip(("node", "CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS"), fields))
    return steps


def allocated_gpu_ids(job_id: str) -> dict[str, list[str]]:
    """node -> the GPU indices the job holds there, from `scontrol show job -d`
    ("Nodes=n[1-2] CPU_IDs=0 Mem=0 GRES=gpu:8(IDX:0-7)")."""
    out = subprocess.run(["scontrol", "show", "job", "-d", job_id], capture_output=True, text=True).stdout
    held = {}
    for nodes, idx in re.findall(r"\bNodes=(\S+) .*?GRES=\S*?gpu\S*?\(IDX:([\d,-]+)\)", out):
        ids = [str(i) for part in idx.split(",") for i in range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)]
        held.update({host: ids for host in expand_nodelist(nodes)})
    return held


def probe_gpus(plan: list[dict], vllm_tp: int) -> list[dict]:
    """Start each node's step with a probe, map its GPUs to processes and engines, check them against the job's
    allocation and print one JSON line per node; exits non-zero naming any GPU used twice, idle or not the job's."""
    rows = []
    try:
        steps = probe_steps(plan)
        for node in plan:
            step = steps[node["host"]]
            ids = (step["SLURM_STEP_GPUS"] or step["CUDA_VISIBLE_DEVICES"]).split(",")
            rows.append({"host": node["host"], "role": node["role"], "rank": node["rank"], **step,
                         "use": gpu_use(node, [i for i in ids if i], vllm_tp)})
            print(json.dumps(rows[-1]), flush=True)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
        sys.exit(f"[probe] FAILED: {error}")
    allocated = allocated_gpu_ids(os.environ.get("SLURM_JOB_ID", ""))
    problems = unused_or_shared({r["host"]: r["use"] for r in rows}, allocated)
    if problems:
        sys.exit("[probe] FAILED: " + "; ".join(problems))
    print(f"[probe] {sum(len(v) for v in allocated.values())} GPUs on {len(allocated)} nodes, each used by exactly "
          "one training process or vLLM engine", flush=True)
    return rows
