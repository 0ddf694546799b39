"""Launch train_grpo.py on a Slurm allocation: N training nodes plus one node serving generation with vLLM.

Node roles: the allocation's last node runs `trl vllm-serve`; every other node runs `accelerate launch` with one
process per GPU, rendezvousing at the first node. The trainer is pointed at the vLLM node through
--vllm_server_host/--vllm_server_port, so the recipe needs no host names. Inside an allocation this script
starts the server, waits for its health check, starts the trainers with `srun`, and stops the server at the end.

    # inside `salloc --nodes 5 --gpus-per-node 8` or an sbatch script:
    python launch_slurm.py --config recipes/justrl.yaml
    # print each node's command without running anything (works outside Slurm too):
    python launch_slurm.py --config recipes/justrl.yaml --nodes gpu[01-05] --gpus_per_node 8 --dry_run
    # extra arguments after `--` go to train_grpo.py:
    python launch_slurm.py --config recipes/justrl.yaml -- --output_dir /scratch/justrl --save_generation_steps 10

vLLM and tensor parallelism: `trl vllm-serve` refuses data parallelism for dense models, so the server uses
--vllm_tensor_parallel_size GPUs of its node (it must divide the model's attention heads: 12 for the 1.5B models). When one server cannot keep up with the trainers, run the recipe with `--vllm_mode colocate`
(every training GPU generates its own share, as veRL's hybrid engine does) on all nodes instead: --no_vllm_node.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request

import yaml


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compact host list ("gpu[01-03,07],head") as host names, without scontrol."""
    hosts = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", nodelist):
        match = re.fullmatch(r"(.*)\[(.*)\]", part)
        if not match:
            hosts.append(part)
            continue
        prefix, ranges = match.groups()
        for item in ranges.split(","):
            lo, _, hi = item.partition("-")
            for i in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{prefix}{i:0{len(lo)}d}")
    return hosts


def node_commands(hosts: list[str], config: str, recipe: dict, gpus_per_node: int, accelerate_config: str,
                  vllm_port: int = 8000, main_port: int = 29500, vllm_tp: int = 1, vllm_node: bool = True,
                  extra: list[str] | None = None) -> list[dict]:
    """One {host, role, command} per node: the last host serves vLLM (if vllm_node), the others train."""
    if len(hosts) < (2 if vllm_node else 1):
        raise ValueError(f"need at least {2 if vllm_node else 1} nodes (got {hosts}); "
                         "with one node, start `trl vllm-serve` and accelerate by hand (README).")
    trainers, server = (hosts[:-1], hosts[-1]) if vllm_node else (hosts, None)
    plan = []
    if server:
        model = recipe["model_name_or_path"]
        serve = ["trl", "vllm-serve", "--model", model, "--tensor_parallel_size", str(vllm_tp),
                 "--host", "0.0.0.0", "--port", str(vllm_port)]
        if recipe.get("vllm_max_model_length"):
            serve += ["--max_model_len", str(recipe["vllm_max_model_length"])]
        gpus = ",".join(str(i) for i in range(vllm_tp))
        plan.append({"host": server, "role": "vllm", "command": f"CUDA_VISIBLE_DEVICES={gpus} " + shlex.join(serve)})
    for rank, host in enumerate(trainers):
        launch = ["accelerate", "launch", "--config_file", accelerate_config,
                  "--num_machines", str(len(trainers)), "--machine_rank", str(rank),
                  "--main_process_ip", trainers[0], "--main_process_port", str(main_port),
                  "--num_processes", str(len(trainers) * gpus_per_node),
                  "train_grpo.py", "--config", config]
        if server:
            launch += ["--vllm_mode", "server", "--vllm_server_host", server, "--vllm_server_port", str(vllm_port)]
        else:
            launch += ["--vllm_mode", "colocate"]
        plan.append({"host": host, "role": f"train rank {rank}", "command": shlex.join(launch + (extra or []))})
    return plan


def wait_for_server(host: str, port: int, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/health/", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(10)
    raise TimeoutError(f"vLLM server on {host}:{port} not healthy after {timeout_s:.0f} s; see its log.")


def check_accelerate_config(path: str) -> None:
    """--accelerate_config must be an Accelerate config file: checked before any node starts."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "accelerate_configs")
    known = ", ".join(f"accelerate_configs/{f}" for f in sorted(os.listdir(folder)) if f.endswith(".yaml"))
    if not os.path.isfile(path):
        raise SystemExit(f"--accelerate_config {path}: no such file; use one of {known} (or your own)")
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except yaml.YAMLError as error:
        raise SystemExit(f"--accelerate_config {path}: not valid YAML ({error})") from None
    if not isinstance(config, dict) or "distributed_type" not in config:
        raise SystemExit(f"--accelerate_config {path}: not an Accelerate config (no distributed_type key); "
                         f"use one of {known}, or write one with `accelerate config --config_file {path}`")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="recipe YAML for train_grpo.py")
    parser.add_argument("--nodes", default=os.environ.get("SLURM_JOB_NODELIST"), help="host list (Slurm syntax)")
    parser.add_argument("--gpus_per_node", type=int, default=int(os.environ.get("SLURM_GPUS_ON_NODE", "8")))
    parser.add_argument("--accelerate_config", default="accelerate_configs/zero3.yaml")
    parser.add_argument("--vllm_port", type=int, default=8000)
    parser.add_argument("--main_port", type=int, default=29500)
    parser.add_argument("--vllm_tensor_parallel_size", type=int, default=1)
    parser.add_argument("--no_vllm_node", action="store_true", help="all nodes train; vLLM colocated")
    parser.add_argument("--server_timeout_s", type=float, default=1200)
    parser.add_argument("--dry_run", action="store_true", help="print each node's command and exit")
    args = parser.parse_args(argv)
    check_accelerate_config(args.accelerate_config)
    if not args.nodes:
        parser.error("no nodes: run inside a Slurm allocation or pass --nodes")
    with open(args.config) as f:
        recipe = yaml.safe_load(f)
    plan = node_commands(expand_nodelist(args.nodes), args.config, recipe, args.gpus_per_node,
                         args.accelerate_config, args.vllm_port, args.main_port, args.vllm_tensor_parallel_size,
                         not args.no_vllm_node, extra)
    if args.dry_run:
        for node in plan:
            print(json.dumps(node))
        return plan

    srun = lambda host, cmd: subprocess.Popen(["srun", "--nodes=1", "--ntasks=1", f"--nodelist={host}",
                                               "bash", "-c", f"cd {shlex.quote(os.getcwd())} && {cmd}"])
    server = next((n for n in plan if n["role"] == "vllm"), None)
    server_proc = srun(server["host"], server["command"]) if server else None
    try:
        if server:
            wait_for_server(server["host"], args.vllm_port, args.server_timeout_s)
        trainers = [srun(n["host"], n["command"]) for n in plan if n["role"] != "vllm"]
        codes = [p.wait() for p in trainers]
    finally:
        if server_proc:
            server_proc.terminate()
    if any(codes):
        sys.exit(f"training failed on ranks {[i for i, c in enumerate(codes) if c]}; relaunch to resume.")
    return plan


if __name__ == "__main__":
    main()
