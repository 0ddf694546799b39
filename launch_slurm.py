"""Launch train_grpo.py on a Slurm allocation: N training nodes plus one node serving generation with vLLM.

Node roles: the allocation's last node runs `trl vllm-serve`; every other node runs `accelerate launch`,
rendezvousing at the first node. The trainer is pointed at the vLLM node through --vllm_server_host/--vllm_server_port,
so the recipe needs no host names. Inside an allocation this script starts the server, waits for its health check,
starts the trainers with `srun` (one job step per node), watches every step, and stops them all at the end. This
script is the glue: reasonrl/cluster/allocation.py reads the allocation, plan.py turns it into each node's command
(pure functions), supervisor.py runs and watches the steps (and says why one step per node, and where the failed
rank is read from).

    # inside `salloc --nodes 5 --gpus-per-node 8`, or from an sbatch script (slurm/justrl.sbatch):
    python launch_slurm.py --config recipes/justrl.yaml
    # print each node's command without running anything (works outside Slurm too):
    python launch_slurm.py --config recipes/justrl.yaml --nodes gpu[01-05] --gpus_per_node 8 --dry_run
    # inside the allocation: which GPUs Slurm gives each node's step, and which process or engine uses each
    python launch_slurm.py --config recipes/justrl.yaml --probe_gpus
    # extra arguments after `--` go to train_grpo.py:
    python launch_slurm.py --config recipes/justrl.yaml -- --output_dir /scratch/justrl --save_generation_steps 10
    # a 3-node cluster on this one machine (scripts/slurm_local.sh), CPU nodes:
    bash scripts/slurm_local.sh up 3 && export SLURM_CONF=$PWD/.cache/slurm/etc/slurm.conf
    salloc -N3 python launch_slurm.py --config recipes/tiny.yaml

GPU or CPU nodes, one command: with GPUs in the allocation (SLURM_GPUS_ON_NODE / --gpus-per-node, or
--gpus_per_node) each training node runs one process per GPU under accelerate_configs/zero3.yaml and the server
uses every GPU of its node (below). Each step asks srun for its node's GPUs (--gres=gpu:N), so the GPU ids are
Slurm's: it sets the step's CUDA_VISIBLE_DEVICES, and nothing here names a GPU. Without GPUs each training node runs
--cpu_processes_per_node processes (default 1: one process already uses every core) under accelerate_configs/cpu.yaml
(gloo; a DeepSpeed config gets --mixed_precision no), and the server runs in float32 with a KV cache of
--cpu_kv_cache_gib GiB (vLLM's CPU backend otherwise reserves 90% of the node's memory). Weights then reach the
server through <output_dir>/vllm_weights (reasonrl/generation/cpu_vllm.py), so output_dir must be on a filesystem every node sees, as
checkpoints already require.

Faults and restarts (reasonrl/cluster/supervisor.py): when a rank, a node or the server dies, every other step is
stopped at once and the launcher exits naming the node, the rank, the exit code, the step's log and the last
checkpoint; relaunching the same command resumes from that checkpoint. With --max_restarts K the launcher relaunches
in the same allocation itself, up to K times, never twice in a row for the same node:

    python launch_slurm.py --config recipes/justrl.yaml --max_restarts 3

Every GPU of the vLLM node generates: one `trl vllm-serve` (vLLM's own server since TRL 1.16) runs
GPUs / --vllm_tensor_parallel_size data-parallel engines of --vllm_tensor_parallel_size GPUs each (default 1: 8
engines on 8 GPUs). vLLM 0.31 runs a dense model's data-parallel ranks as independent engines behind one API
server, which spreads the requests; TRL's client syncs weights to all tp x dp workers (/get_world_size). The size
must divide the node's GPUs and the model's attention heads, and divide or be a multiple of its key-value heads
(checked from config.json when it can be read: 12 and 2 for the 1.5B models, so 1, 2 or 4). JustRL's own topology
was colocated (veRL's hybrid engine: every GPU trains and generates): --no_vllm_node (all nodes train, each
process with its own vLLM engine, --vllm_mode colocate).

Time limits (reasonrl/cluster/timelimit.py): before the job's limit training saves at a generation step and stops,
and a batch job submitted with --requeue (slurm/justrl.sbatch) requeues itself and resumes there:
    sbatch --time=48:00:00 slurm/justrl.sbatch        # stops 15 min before each limit, requeues, until the run is done
    scancel --batch --signal=USR1 <jobid>            # the same, now
"""

import argparse
import json
import os
import shlex
import sys

import yaml

from reasonrl.cluster.allocation import allocation_gpus, expand_nodelist, node_address, probe_gpus
from reasonrl.cluster.plan import node_commands, with_overrides
from reasonrl.cluster.supervisor import run


def model_heads(model: str) -> tuple[int, int] | None:
    """(attention heads, key-value heads) from the model's config.json: a local folder, else the Hub cache; None when
    neither has it (the launcher then cannot check the tensor-parallel size before the server starts)."""
    path = os.path.join(model, "config.json")
    if not os.path.isfile(path):
        try:
            from huggingface_hub import try_to_load_from_cache
            path = try_to_load_from_cache(model, "config.json")
        except Exception:  # not a Hub id, or no huggingface_hub: nothing to read
            path = None
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    config = json.load(open(path))
    config = config.get("text_config", config)  # multimodal configs nest the language model's
    if "num_attention_heads" not in config:
        return None
    return config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]


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
    parser.add_argument("--gpus_per_node", type=int, default=None,
                        help="default: the allocation's (SLURM_GPUS_ON_NODE); none -> CPU nodes")
    parser.add_argument("--cpu_processes_per_node", type=int, default=1, help="training processes per CPU node")
    parser.add_argument("--cpu_kv_cache_gib", type=int, default=1, help="the vLLM server's KV cache on a CPU node")
    parser.add_argument("--accelerate_config", default=None,
                        help="default: accelerate_configs/zero3.yaml on GPU nodes, accelerate_configs/cpu.yaml on CPU nodes")
    parser.add_argument("--vllm_port", type=int, default=8000)
    parser.add_argument("--main_port", type=int, default=29500)
    parser.add_argument("--vllm_tensor_parallel_size", type=int, default=1,
                        help="GPUs per vLLM engine; the server runs (node's GPUs / this) data-parallel engines")
    parser.add_argument("--no_vllm_node", action="store_true", help="all nodes train; vLLM colocated")
    parser.add_argument("--server_args", default="", help="extra arguments for `trl vllm-serve`, one string")
    parser.add_argument("--server_timeout_s", type=float, default=1200,
                        help="stop when the server is not healthy after this many seconds")
    parser.add_argument("--max_restarts", type=int, default=0,
                        help="after a fault, restart the whole job in this allocation (fresh server, resume from the "
                             "newest checkpoint) up to this many times; never twice in a row for the same node")
    parser.add_argument("--log_dir", default=None, help="one log per node; default <output_dir>/logs")
    parser.add_argument("--stop_margin_s", type=float, default=None,
                        help="ask training to save and stop this long before the job's time limit, then requeue; "
                             "default: a quarter of the limit, 30 s to 15 min (stop_margin_s)")
    parser.add_argument("--time_limit_read_s", type=float, default=30.0,
                        help="re-read the job's TimeLimit (scontrol show job) this often, in seconds")
    parser.add_argument("--dry_run", action="store_true", help="print each node's command and exit")
    parser.add_argument("--probe_gpus", action="store_true",
                        help="inside the allocation: start each node's step with a probe, print the GPUs Slurm gave "
                             "it and which process or engine uses each, check that every GPU is used once, and exit")
    args = parser.parse_args(argv)
    if args.max_restarts < 0:
        parser.error(f"--max_restarts {args.max_restarts}: must be 0 (stop at the first fault) or more")
    if not args.nodes:
        parser.error("no nodes: run inside a Slurm allocation (salloc/sbatch) or pass --nodes")
    if not os.path.isfile(args.config):
        parser.error(f"--config {args.config}: no such file")
    with open(args.config) as f:
        recipe = with_overrides(yaml.safe_load(f) or {}, extra)
    gpus = args.gpus_per_node if args.gpus_per_node is not None else allocation_gpus()
    if gpus is None and args.dry_run:
        gpus = 8  # planning a GPU cluster from anywhere
    cpu = not gpus
    accelerate_config = args.accelerate_config or ("accelerate_configs/cpu.yaml" if cpu else "accelerate_configs/zero3.yaml")
    check_accelerate_config(accelerate_config)
    hosts = expand_nodelist(args.nodes)
    addresses = {} if args.dry_run else {h: node_address(h) for h in hosts}
    output_dir = str(recipe.get("output_dir", "outputs"))
    try:
        plan = node_commands(hosts, args.config, recipe, args.cpu_processes_per_node if cpu else gpus,
                             accelerate_config, args.vllm_port, args.main_port, args.vllm_tensor_parallel_size,
                             not args.no_vllm_node, extra, addresses, cpu, args.cpu_kv_cache_gib,
                             args.log_dir or os.path.join(output_dir, "logs"), shlex.split(args.server_args),
                             model_heads(str(recipe.get("model_name_or_path", ""))),
                             "deepspeed" in open(accelerate_config).read().lower())
    except ValueError as error:
        parser.error(str(error))
    if args.dry_run:
        for node in plan:
            print(json.dumps(node))
        return plan
    if args.probe_gpus:
        if cpu or not os.environ.get("SLURM_JOB_ID"):
            parser.error("--probe_gpus runs inside an allocation with GPUs (salloc/sbatch --gpus-per-node N)")
        return probe_gpus(plan, args.vllm_tensor_parallel_size)
    server = next((n for n in plan if n["role"] == "vllm"), None)
    url = f"http://{addresses.get(server['host'], server['host'])}:{args.vllm_port}" if server else None
    print(f"[launch] {len(hosts)} nodes ({'CPU' if cpu else f'{gpus} GPUs each'}): "
          f"{sum(n['role'] == 'train' for n in plan)} training, {1 if server else 0} vLLM server; output_dir {output_dir}",
          flush=True)
    run(plan, output_dir, url, args.server_timeout_s, args.max_restarts, stop_margin_s=args.stop_margin_s,
        time_limit_read_s=args.time_limit_read_s)
    return plan


if __name__ == "__main__":
    main()
