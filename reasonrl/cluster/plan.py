"""The cluster plan: pure functions from an allocation (host names, GPUs per node, the recipe) to what each node
runs, and the arithmetic of restarts and time limits. No subprocess, no network, no environment: everything a function
needs is an argument, so tests call each on literal inputs (tests/test_launch_slurm.py, tests/test_requeue.py).
What Slurm says about the allocation is read in reasonrl/cluster/allocation.py; the steps run in supervisor.py.
"""

import os
import re
import shlex

import yaml


def expand_hostlist(nodelist: str) -> list[str]:
    """Slurm's compact host list as host names, parsed as `scontrol show hostnames` expands it ("gpu[01-03,07],head",
    "gpu[01-02]-ib", "r[1-2]n[1-2]"): reasonrl/cluster/allocation.py's expand_nodelist uses it where scontrol is
    missing or refuses the list."""
    hosts = []
    for part in _split_top_level(nodelist):
        hosts += _expand_one(part)
    return hosts


def _split_top_level(text: str) -> list[str]:
    """Split at the commas that are outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise ValueError(f"host list {text!r}: unbalanced brackets")
    return [p for p in parts + [current] if p]


def _expand_one(name: str) -> list[str]:
    """One host expression with any number of bracket groups: the product of the groups, in Slurm's order."""
    match = re.search(r"\[([^\]]*)\]", name)
    if not match:
        return [name]
    prefix, suffix, names = name[:match.start()], name[match.end():], []
    for item in match.group(1).split(","):
        lo, _, hi = item.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"host list {name!r}: {item!r} is not a number or a range of numbers")
        for i in range(int(lo), int(hi or lo) + 1):
            names += _expand_one(f"{prefix}{i:0{len(lo)}d}{suffix}")
    return names


def server_parallelism(gpus: int, tp: int, heads: tuple[int, int] | None = None) -> int:
    """The vLLM node's data-parallel size: gpus // tp engines of tp GPUs each, so that every GPU of the node generates.

    tp must divide the node's GPUs and, as vLLM requires, the attention heads; the key-value heads are split or
    replicated, so tp must divide them or be a multiple of them (12 and 2 heads, the 1.5B models: tp 1, 2 or 4)."""
    if tp < 1 or gpus % tp:
        raise ValueError(f"--vllm_tensor_parallel_size {tp} does not divide the vLLM node's {gpus} GPUs; "
                         f"use one of {[t for t in range(1, gpus + 1) if gpus % t == 0]}")
    if heads:
        q, kv = heads
        if q % tp or (kv % tp and tp % kv):
            fits = [t for t in range(1, gpus + 1) if gpus % t == 0 and q % t == 0 and (kv % t == 0 or t % kv == 0)]
            raise ValueError(f"--vllm_tensor_parallel_size {tp}: the model has {q} attention heads and {kv} key-value "
                             f"heads, which vLLM cannot split {tp} ways; use one of {fits}")
    return gpus // tp


def node_commands(hosts: list[str], config: str, recipe: dict, gpus_per_node: int, accelerate_config: str,
                  vllm_port: int = 8000, main_port: int = 29500, vllm_tp: int = 1, vllm_node: bool = True,
                  extra: list[str] | None = None, addresses: dict[str, str] | None = None, cpu: bool = False,
                  cpu_kv_cache_gib: int = 1, log_dir: str = "logs", server_args: list[str] | None = None,
                  heads: tuple[int, int] | None = None, deepspeed: bool = False) -> list[dict]:
    """One {host, role, rank, command, log, gpus} per node: the last host serves vLLM (if vllm_node), the others train.

    gpus_per_node: training processes per node (GPUs, or CPU processes when cpu). On GPU nodes the server runs
    gpus_per_node // vllm_tp data-parallel engines of vllm_tp GPUs (server_parallelism; heads: the model's, to check
    vllm_tp), and `gpus` is what each node's job step asks Slurm for: Slurm then sets CUDA_VISIBLE_DEVICES to the
    GPUs it assigned (None on CPU nodes). addresses: host -> address for the rendezvous and the server URL (default:
    the names). cpu: nodes without GPUs (float32 server, bounded KV). server_args: appended to `trl vllm-serve` (a
    later flag wins). deepspeed: accelerate_config is a DeepSpeed config (on CPU nodes it gets --mixed_precision no)."""
    if len(hosts) < (2 if vllm_node else 1):
        raise ValueError(f"need at least {2 if vllm_node else 1} nodes (got {hosts}); "
                         "with one node, start `trl vllm-serve` and accelerate by hand (README), or pass --no_vllm_node.")
    addresses = addresses or {}
    trainers, server = (hosts[:-1], hosts[-1]) if vllm_node else (hosts, None)
    plan = []
    if server:
        serve = ["trl", "vllm-serve", "--model", recipe["model_name_or_path"], "--tensor_parallel_size", str(vllm_tp)]
        if not cpu:  # every GPU of the node generates: TRL's client syncs weights to all tp x dp workers
            serve += ["--data_parallel_size", str(server_parallelism(gpus_per_node, vllm_tp, heads))]
        serve += ["--host", "0.0.0.0", "--port", str(vllm_port)]
        max_len = recipe.get("vllm_max_model_length")
        if cpu:  # vLLM's CPU backend: the trainer's fp32 weights, a KV cache of a fixed size, not 90% of the RAM;
            # eager: its torch.compile pass doubles a server's start-up (36 s -> 69 s for reasonrl/demo/tiny.py's model)
            # the context must hold a validation response too (reasonrl/trainer/validation.py)
            new_tokens = max(recipe.get("max_completion_length", 256), recipe.get("validation_max_new_tokens", 0)
                             if recipe.get("validation_benchmarks") else 0)
            max_len = max_len or (recipe.get("max_prompt_length", 1024) + new_tokens)
            # no chunked prefill: vLLM's CPU runner cannot split a seeded request's prefill (validation seeds them)
            serve += ["--dtype", "float32", "--enforce_eager", "true", "--no-enable-chunked-prefill"]
            serve = [f"VLLM_CPU_KVCACHE_SPACE={cpu_kv_cache_gib}"] + serve
        if max_len:
            serve += ["--max_model_len", str(max_len)]
        serve += list(server_args or [])
        plan.append({"host": server, "role": "vllm", "rank": None, "command": shlex.join(serve),
                     "log": os.path.join(log_dir, f"vllm-{server}.log"), "gpus": None if cpu else gpus_per_node})
    for rank, host in enumerate(trainers):
        launch = ["accelerate", "launch", "--config_file", accelerate_config,
                  "--num_machines", str(len(trainers)), "--machine_rank", str(rank),
                  "--main_process_ip", addresses.get(trainers[0], trainers[0]), "--main_process_port", str(main_port),
                  "--num_processes", str(len(trainers) * gpus_per_node)]
        if cpu and deepspeed:
            launch += ["--mixed_precision", "no"]  # DeepSpeed on CPUs: the recipe's dtype, no bf16 engine
        launch += ["train_grpo.py", "--config", config, "--use_vllm", "true"]
        if server:
            launch += ["--vllm_mode", "server", "--vllm_server_host", addresses.get(server, server),
                       "--vllm_server_port", str(vllm_port)]
        else:
            launch += ["--vllm_mode", "colocate"]
        plan.append({"host": host, "role": "train", "rank": rank, "command": shlex.join(launch + (extra or [])),
                     "log": os.path.join(log_dir, f"train{rank}-{host}.log"), "gpus": None if cpu else gpus_per_node})
    return plan


def with_overrides(recipe: dict, extra: list[str]) -> dict:
    """The recipe as train_grpo.py will see it: `-- --key value` / `--key=value` arguments override its keys (the
    launcher reads model_name_or_path, output_dir and the lengths from it)."""
    recipe, i = dict(recipe), 0
    while i < len(extra):
        arg = extra[i]
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            recipe[key] = yaml.safe_load(value)
        elif arg.startswith("--") and i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            recipe[arg[2:]] = yaml.safe_load(extra[i + 1])
            i += 1
        i += 1
    return recipe



def srun_command(node: dict, name: str) -> list[str]:
    """`srun` for the job step of one node. --gres=gpu:N where the node has GPUs: Slurm picks the node's N allocated
    GPUs and sets the step's CUDA_VISIBLE_DEVICES and SLURM_STEP_GPUS to them (one step per node: none is shared).
    --overlap: steps share the allocation's CPUs; --kill-on-bad-exit: a task that dies ends its own step (why one step
    per node, not one for all training nodes: reasonrl/cluster/supervisor.py)."""
    return ["srun", "--nodes=1", "--ntasks=1", f"--nodelist={node['host']}", f"--job-name={name}", "--overlap",
            *([f"--gres=gpu:{node['gpus']}"] if node.get("gpus") else []), "--kill-on-bad-exit=1"]


def gpu_use(node: dict, gpus: list[str], vllm_tp: int) -> list[list[str]]:
    """The GPUs of each process (a training node: one per local rank) or engine (the vLLM node: vllm_tp each) of a
    node's step, given the GPU ids Slurm gave the step in CUDA_VISIBLE_DEVICES order: Accelerate gives local rank i the
    i-th visible GPU; vLLM gives data-parallel engine e the visible GPUs e*tp .. e*tp+tp-1."""
    if len(gpus) != node["gpus"]:
        raise ValueError(f"{node['host']} ({node['role']}): its step received {len(gpus)} GPUs "
                         f"({','.join(gpus) or 'none'}) but the plan runs {node['gpus']}")
    size = vllm_tp if node["role"] == "vllm" else 1
    return [gpus[i:i + size] for i in range(0, len(gpus), size)]



def unused_or_shared(use: dict[str, list[list[str]]], allocated: dict[str, list[str]]) -> list[str]:
    """What breaks "every allocated GPU used by exactly one process or engine", node by node (empty when none does)."""
    problems = []
    for host in sorted(set(use) | set(allocated)):
        used = [g for group in use.get(host, []) for g in group]
        if twice := sorted({g for g in used if used.count(g) > 1}):
            problems.append(f"{host}: GPUs {twice} used twice")
        if idle := [g for g in allocated.get(host, []) if g not in used]:
            problems.append(f"{host}: GPUs {idle} allocated but idle")
        if foreign := [g for g in used if g not in allocated.get(host, [])]:
            problems.append(f"{host}: GPUs {foreign} used but not allocated to the job")
    return problems



def restart_refusal(host: str, earlier_hosts: list[str], max_restarts: int) -> str | None:
    """Why a fault on `host` is not restarted, or None to restart. earlier_hosts: the nodes blamed for the faults
    restarted so far, in order. A node that fails twice in a row is likely faulty: restarting on it again would
    spend the restarts on one bad node, so the job stops and names it."""
    if max_restarts == 0:
        return ""
    if len(earlier_hosts) >= max_restarts:
        return f"not restarted: all {max_restarts} restarts used (--max_restarts)."
    if earlier_hosts and earlier_hosts[-1] == host:
        return (f"not restarted: {host} failed twice in a row (a faulty node?); resubmit without it, e.g. "
                f"`sbatch --exclude={host} ...`.")
    return None


# ---------------------------------------------------------------- time limits: save, stop, requeue (issue 20)

def slurm_seconds(text: str) -> int | None:
    """A Slurm duration in seconds: sbatch's and scontrol's forms ("3" minutes, "1:30", "02:00:00", "2-00:00:00",
    "1-12", "1-12:30"); None for UNLIMITED, INFINITE or NOT_SET."""
    if text.upper() in ("UNLIMITED", "INFINITE", "NOT_SET", "NONE", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        h, m, sec = (parts + [0, 0])[:3]
        return ((int(days) * 24 + h) * 60 + m) * 60 + sec
    if len(parts) == 1:  # minutes
        return parts[0] * 60
    if len(parts) == 2:  # minutes:seconds
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


def stop_margin_s(limit_s: float) -> float:
    """How long before a job's time limit the launcher asks training to save and stop: a quarter of the limit, at
    least 30 s and at most 15 min. A request waits for the generation step in progress (about 5 min in JustRL's
    run: 11.5k A800-hours on 32 GPUs over 4,380 steps), then the save; a 48 h job gives 15 min, a 3 min test job 45 s."""
    return min(900.0, max(30.0, limit_s / 4))
