"""Launch train_grpo.py on a Slurm allocation: N training nodes plus one node serving generation with vLLM.

Node roles: the allocation's last node runs `trl vllm-serve`; every other node runs `accelerate launch`,
rendezvousing at the first node. The trainer is pointed at the vLLM node through --vllm_server_host/--vllm_server_port,
so the recipe needs no host names. Inside an allocation this script starts the server, waits for its health check,
starts the trainers with `srun` (one job step per node), watches every step, and stops them all at the end.

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

Faults: every job step is watched once a second. When any step exits non-zero (a killed rank, a dead node, a
reward past its time limit) or the server exits, every other step is cancelled at once (SIGTERM, then SIGKILL
after the cluster's KillWait), so no rank waits in a collective for its 30-minute watchdog. The launcher then exits
non-zero naming the node, the rank, the exit code, the step's log and the last checkpoint. The server's /health is
also polled during training (a hung server, or one dead inside a step that has not ended). Each step runs under
slurm/supervise.py, so no process a step started (vLLM's engine, torchrun's workers) outlives it. Relaunching the same
command starts a fresh server and resumes every process from that checkpoint, with the same data order. A server
that exits before it is healthy is reported at once; one that never gets healthy after --server_timeout_s.
With --max_restarts K the launcher does that relaunch itself, in the same allocation, up to K times: a `[launch]
RESTART` line names the cause, a later line its cost (from the failure seen to the first generation step after the
resume), and the last line lists them all. A node blamed for two faults in a row is not restarted on (the job stops
naming it, for `sbatch --exclude`). Every step's log is appended to, each attempt under an `[launch] attempt N` line.

    python launch_slurm.py --config recipes/justrl.yaml --max_restarts 3

Every GPU of the vLLM node generates: one `trl vllm-serve` (vLLM's own server since TRL 1.16) runs
GPUs / --vllm_tensor_parallel_size data-parallel engines of --vllm_tensor_parallel_size GPUs each (default 1: 8
engines on 8 GPUs). vLLM 0.31 runs a dense model's data-parallel ranks as independent engines behind one API
server, which spreads the requests; TRL's client syncs weights to all tp x dp workers (/get_world_size). The size
must divide the node's GPUs and the model's attention heads, and divide or be a multiple of its key-value heads
(checked from config.json when it can be read: 12 and 2 for the 1.5B models, so 1, 2 or 4). JustRL's own topology
was colocated (veRL's hybrid engine: every GPU trains and generates): --no_vllm_node (all nodes train, each
process with its own vLLM engine, --vllm_mode colocate).

Time limits (reasonrl/cluster/timelimit.py): before the job's limit training saves at a generation step and stops, and a batch job
submitted with --requeue (slurm/justrl.sbatch) requeues itself and resumes there:
    sbatch --time=48:00:00 slurm/justrl.sbatch        # stops 15 min before each limit, requeues, until the run is done
    scancel --batch --signal=USR1 <jobid>            # the same, now
"""

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request

import yaml

from reasonrl.cluster.allocation import allocation_gpus, expand_nodelist, node_address, probe_gpus
from reasonrl.cluster.plan import node_commands, restart_refusal, srun_command, with_overrides
from reasonrl.cluster.timelimit import TimeLimit
from reasonrl.run.plan import last_checkpoint



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


def failed_rank(log_path: str, start: int = 0) -> str | None:
    """What torch.distributed.run printed about the first failed process ("rank 1 (local_rank 0), exit code -9"),
    read from byte `start` on (a log holds every attempt's output: only the last attempt's failure counts)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")[-200_000:]
    except OSError:
        return None
    rank = re.search(r"rank\s*:\s*(\d+) \(local_rank: (\d+)\)", text)
    code = re.search(r"exitcode\s*:\s*(-?\d+)", text)
    if not rank:
        return None
    signal_name = ""
    if code and int(code.group(1)) < 0:
        try:
            signal_name = f" ({signal.Signals(-int(code.group(1))).name})"
        except ValueError:
            pass
    return (f"rank {rank.group(1)} (local rank {rank.group(2)})"
            + (f", exit code {code.group(1)}{signal_name}" if code else ""))


def tail(path: str, lines: int = 25, start: int = 0) -> str:
    """The last `lines` lines of a log, from byte `start` on."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return "".join(f.read().decode(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError as error:
        return f"(no log: {error})"


# Every step's command runs under slurm/supervise.py: nothing it starts outlives it, whatever kills it.
SUPERVISE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slurm", "supervise.py")


class Steps:
    """The job steps this launcher started (one `srun` per node), watched and cancelled together."""

    def __init__(self, workdir: str):
        self.workdir, self.running = workdir, {}  # name -> (Popen, node dict)
        self.attempt, self.log_start = 1, {}  # log path -> byte where this attempt's output begins (logs are appended)

    def start(self, node: dict, env: dict | None = None) -> None:
        name = f"{node['role']}{'' if node['rank'] is None else node['rank']}"
        os.makedirs(os.path.dirname(os.path.abspath(node["log"])), exist_ok=True)
        log = open(node["log"], "ab+")
        self.log_start[node["log"]] = log.tell()
        log.seek(max(log.tell() - 1, 0))
        newline = b"" if log.read(1) in (b"", b"\n") else b"\n"  # a killed process may have cut its last line
        log.write(newline + f"[launch] attempt {self.attempt}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        cmd = srun_command(node, name) + [
            "bash", "-c", f"cd {shlex.quote(self.workdir)} && exec {shlex.quote(sys.executable)} "
                          f"{shlex.quote(SUPERVISE)} env {node['command']}"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        log.close()
        self.running[name] = (proc, node)
        print(f"[launch] {node['host']}: {'vLLM server' if node['role'] == 'vllm' else 'training node ' + str(node['rank'])}"
              f" -> log {node['log']}\n[launch]   {node['command']}", flush=True)

    def poll(self) -> tuple[str, int, dict] | None:
        """(name, exit code, node) of a step that has ended, removed from the running ones; None if none has."""
        for name, (proc, node) in list(self.running.items()):
            code = proc.poll()
            if code is not None:
                del self.running[name]
                return name, code, node
        return None

    def stop_all(self, grace_s: float = 30.0) -> None:
        """Cancel every running step: `scancel` of its step id where known (SIGTERM to every process of the step,
        SIGKILL after KillWait), SIGTERM to its srun otherwise; srun's left after grace_s are killed."""
        if not self.running:
            return
        job = os.environ.get("SLURM_JOB_ID")
        step_ids = {}
        if job:
            out = subprocess.run(["squeue", "-h", "-s", "-j", job, "-o", "%i %j"], capture_output=True, text=True)
            step_ids = {name: sid for sid, name in (line.split(maxsplit=1) for line in out.stdout.splitlines()
                                                    if len(line.split()) == 2)}
        for name, (proc, _) in self.running.items():
            if name in step_ids:
                subprocess.run(["scancel", "--quiet", step_ids[name]])
            else:
                proc.send_signal(signal.SIGTERM)
        deadline = time.time() + grace_s
        for name, (proc, _) in self.running.items():
            try:
                proc.wait(timeout=max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.running.clear()


def wait_for_server(steps: Steps, name: str, url: str, timeout_s: float) -> float:
    """Seconds until `url`/health/ answers 200; fails at once if the server's step exits, or after timeout_s."""
    start = time.time()
    proc, node = steps.running[name]
    log_start = steps.log_start.get(node["log"], 0)  # this attempt's part of the log
    while time.time() - start < timeout_s:
        code = proc.poll()
        if code is not None:
            del steps.running[name]
            raise RuntimeError(f"the vLLM server on {node['host']} exited with code {code} before it was healthy "
                               f"({time.time() - start:.0f} s); last lines of {node['log']}:\n{tail(node['log'], start=log_start)}")
        try:
            with urllib.request.urlopen(f"{url}/health/", timeout=5) as response:
                if response.status == 200:
                    return time.time() - start
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"the vLLM server on {node['host']} was not healthy at {url} after {timeout_s:.0f} s "
                       f"(--server_timeout_s); last lines of {node['log']}:\n{tail(node['log'], start=log_start)}")


def healthy(url: str, timeout_s: float = 10.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health/", timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


class Fault(Exception):
    """A job step died, or the server stopped answering: what died (`cause`, one line), the node blamed, and the
    last lines of that step's log from this attempt (`details`)."""

    def __init__(self, cause: str, host: str, details: str = "", restartable: bool = True):
        super().__init__(cause + (f". {details}" if details else ""))
        self.cause, self.host, self.restartable = cause, host, restartable


def data_order_lines(output_dir: str) -> int:
    """Generation steps recorded so far in <output_dir>/data_order/ (train_grpo.py appends one line per step and
    rank): a count that grows once training runs again after a restart."""
    folder = os.path.join(output_dir, "data_order")
    try:
        return sum(open(os.path.join(folder, name), "rb").read().count(b"\n") for name in os.listdir(folder))
    except OSError:
        return 0


def attempt(steps: Steps, plan: list[dict], server_url: str | None, server_timeout_s: float, poll_s: float,
            health_every_s: float, health_failures: int, restart: dict | None = None,
            limit: "TimeLimit | None" = None) -> None:
    """Start the server, wait for it, start the trainers and watch them all until every trainer has finished.
    Raises Fault for the first step that dies. restart: the restart this attempt follows; its costs are filled in
    (`server_s`, `first_step_s` from the trainers' start to the first generation step seen) and printed."""
    server = next((n for n in plan if n["role"] == "vllm"), None)

    def last_lines(node: dict) -> str:
        return f"Last lines of {node['log']}:\n{tail(node['log'], start=steps.log_start.get(node['log'], 0))}"

    if server:
        steps.start(server)
        try:
            seconds = wait_for_server(steps, "vllm", server_url, server_timeout_s)
        except RuntimeError as error:
            cause, _, details = str(error).partition("; last lines of ")
            raise Fault(cause, server["host"], "Last lines of " + details) from None
        print(f"[launch] vLLM server healthy at {server_url} after {seconds:.0f} s", flush=True)
        if restart:
            restart["server_s"] = seconds
    if limit and (too_short := limit.trainers_starting()):  # time limit: no time left to train
        raise Fault(too_short, "", restartable=False)
    for node in plan:
        if node["role"] == "train":
            steps.start(node)
    trainers_started = time.time()
    failures, next_check = 0, time.time() + health_every_s
    while any(n["role"] == "train" for _, n in steps.running.values()):
        if limit:
            limit.check(steps)  # time limit: past the margin (or on SIGUSR1) training saves and stops; requeue, exit
        if restart and "first_step_s" not in restart and data_order_lines(restart["output_dir"]) > restart["lines"]:
            restart["first_step_s"] = time.time() - trainers_started
            print(f"[launch] restart {restart['number']} cost {restart_cost(restart):.0f} s from the failure seen to "
                  f"the first generation step after the resume: stop {restart['stop_s']:.0f} s, server start "
                  f"{restart.get('server_s', 0):.0f} s, trainer start-up to that step {restart['first_step_s']:.0f} s",
                  flush=True)
        if server and time.time() >= next_check:
            failures = 0 if healthy(server_url) else failures + 1
            next_check = time.time() + health_every_s
            if failures >= health_failures:
                raise Fault(f"the vLLM server on {server['host']} stopped answering {server_url}/health ({failures} "
                            f"checks in a row, {health_every_s:g} s apart)", server["host"], last_lines(server))
        ended = steps.poll()
        if ended is None:
            time.sleep(poll_s)
            continue
        name, code, node = ended
        if node["role"] == "vllm":
            raise Fault(f"the vLLM server on {node['host']} exited with code {code} during training", node["host"],
                        last_lines(node))
        if code != 0:
            which = failed_rank(node["log"], steps.log_start.get(node["log"], 0)) or "a process (no rank reported)"
            cause = f"training node {node['rank']} ({node['host']}): {which}; its job step exited with code {code}"
            if server and not healthy(server_url, 5.0):  # a trainer that failed on a dead server: the server first
                raise Fault(f"the vLLM server on {server['host']} is not answering {server_url}/health, and {cause}",
                            server["host"], last_lines(node))
            raise Fault(cause, node["host"], last_lines(node))
        print(f"[launch] training node {node['rank']} ({node['host']}) finished", flush=True)


def restart_cost(restart: dict) -> float:
    """Seconds from the failure seen to the first generation step after the resume (stop + server + trainers)."""
    return restart["stop_s"] + restart.get("server_s", 0) + restart.get("first_step_s", float("nan"))


def run(plan: list[dict], output_dir: str, server_url: str | None, server_timeout_s: float, max_restarts: int = 0,
        poll_s: float = 1.0, health_every_s: float = 5.0, health_failures: int = 3,
        stop_margin_s: float | None = None, time_limit_read_s: float = 30.0) -> list[dict]:
    """Start the server, wait for it, start the trainers, and watch them all until they finish; returns the restarts.

    During training the server's /health is also checked every health_every_s: `health_failures` failures in a row
    (a server process dead inside a step that has not ended yet, or hung) count as a dead server. A fault stops
    every step; up to max_restarts times (unless the same node failed just before) the whole job restarts in the
    allocation: a fresh server, every trainer resuming from the newest complete checkpoint (train_grpo.py finds it in
    output_dir). Each restart prints a line with its cause, then one with its cost; the last line sums them up."""
    steps = Steps(os.getcwd())
    started, restarts = time.time(), []

    def fail(message: str) -> None:
        t = time.time()
        steps.stop_all()
        checkpoint = last_checkpoint(output_dir)
        sys.exit(f"[launch] FAILED: {message}\n[launch] every other job step was stopped "
                 f"({time.time() - t:.0f} s after the failure was seen, {t - started:.0f} s into the run). "
                 f"Last checkpoint: {checkpoint or 'none yet (a relaunch starts over)'}. "
                 "Relaunch the same command to resume from it." + restart_summary(restarts))

    signal.signal(signal.SIGTERM, lambda *_: fail("the launcher received SIGTERM (job cancelled or time limit)"))
    # time limit: save, stop, requeue (not a failure)
    limit = TimeLimit.of_job(output_dir, stop_margin_s, time_limit_read_s)
    signal.signal(signal.SIGUSR1, limit.on_signal)
    try:
        restart = None
        while True:
            try:
                attempt(steps, plan, server_url, server_timeout_s, poll_s, health_every_s, health_failures, restart,
                        limit)
                break
            except Fault as fault:
                seen = time.time()
                refusal = (restart_refusal(fault.host, [r["host"] for r in restarts], max_restarts)
                           if fault.restartable else "")
                if refusal is not None:
                    fail(f"{fault}\n[launch] {refusal}" if refusal else str(fault))
                steps.stop_all()
                cause = fault.cause
                restart = {"number": len(restarts) + 1, "host": fault.host, "cause": cause, "output_dir": output_dir,
                           "stop_s": time.time() - seen, "lines": data_order_lines(output_dir)}
                restarts.append(restart)
                checkpoint = last_checkpoint(output_dir)
                print(f"[launch] RESTART {restart['number']} of at most {max_restarts} (--max_restarts): {cause}\n"
                      f"[launch]   every step stopped in {restart['stop_s']:.1f} s; "
                      f"{'a fresh server, and ' if server_url else ''}every trainer resumes from "
                      f"{checkpoint or 'the start (no checkpoint yet)'}", flush=True)
                steps.attempt += 1
    finally:
        steps.stop_all()
    print(f"[launch] done in {time.time() - started:.0f} s; outputs in {output_dir}" + restart_summary(restarts),
          flush=True)
    return restarts


def restart_summary(restarts: list[dict]) -> str:
    """The restarts of this launch, one line each with its cause and cost ("" when there were none)."""
    if not restarts:
        return ""
    lines = [f"\n[launch] {len(restarts)} restart(s), "
             f"{sum(restart_cost(r) for r in restarts if 'first_step_s' in r):.0f} s lost to them in all:"]
    for r in restarts:
        cost = f"{restart_cost(r):.0f} s" if "first_step_s" in r else "cost unknown (no generation step after it)"
        lines.append(f"[launch]   {r['number']}. {r['cause']}: {cost}")
    return "\n".join(lines)


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
