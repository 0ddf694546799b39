"""Time per generation step of the tiny recipe on this machine with each generation backend: transformers' generate
(the demo's default), vLLM colocated in every training process, and a `trl vllm-serve` server.

    python -m benchmarks.bench_vllm                                 # 2 training processes, 20 generation steps per backend
    python -m benchmarks.bench_vllm --processes 1 --steps 10 --backends colocate server

Each backend trains the tiny recipe from the same warm start (built into --tiny_dir if missing) for --steps generation
steps. A step's generation time is train_grpo's `time/generation_s` metric (sampling only; rewards and updates
excluded) summed over the step's optimizer updates; the first step (engine warm-up) is left out of the mean. The server
gets its own core budget from the OS like any process; with 2 training processes on a 2-core machine it competes
with them. Engine start-up is reported separately: colocate pays it inside the run, the server before it.
"""

import argparse
import ast
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logged_dicts(text: str) -> list[dict]:
    """The metric dicts the trainer prints, one per optimizer update with logging_steps 1."""
    out = []
    for line in text.splitlines():
        start = line.find("{'loss'")
        if start >= 0:
            try:
                out.append({k: float(v) for k, v in ast.literal_eval(line[start:line.rindex("}") + 1]).items()})
            except (ValueError, SyntaxError):
                continue
    return out


def train(args, backend: str, port: int | None, out_dir: str) -> dict:
    tiny = args.tiny_dir
    cmd = ["accelerate", "launch", "--num_processes", str(args.processes), "--main_process_port", str(free_port())]
    if args.processes > 1:
        cmd += ["--config_file", os.path.join(ROOT, "accelerate_configs", "cpu.yaml")]
    cmd += [os.path.join(ROOT, "train_grpo.py"), "--config", os.path.join(ROOT, "recipes", "tiny.yaml"),
            "--prepare_kwargs", json.dumps({"tiny_dir": tiny}), "--model_name_or_path", f"{tiny}/sft",
            "--dataset_name", f"{tiny}/train.parquet",
            "--heldout_file", "", "--output_dir", out_dir, "--total_generation_steps", str(args.steps),
            "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none", "--log_completions", "false",
            "--validation_before_training", "false", "--validation_every_generation_steps", "0"]  # generation only
    if backend == "colocate":
        cmd += ["--use_vllm", "true", "--vllm_mode", "colocate"]
    elif backend == "server":
        cmd += ["--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_host", "127.0.0.1",
                "--vllm_server_port", str(port)]
    start = time.time()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    wall = time.time() - start
    if done.returncode != 0:
        sys.exit(f"{backend} run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    logs = logged_dicts(done.stdout + done.stderr)
    per_step = [sum(x.get("time/generation_s", 0.0) for x in logs[i:i + 2]) for i in range(0, len(logs), 2)]
    return {"backend": backend, "processes": args.processes, "generation_steps": len(per_step),
            "generation_s_per_step": round(statistics.mean(per_step[1:]), 3),
            "first_step_s": round(per_step[0], 3), "run_wall_s": round(wall, 1)}


def serve(model: str, port: int, log_path: str, core: int | None = None, extra: tuple = ()):
    """`trl vllm-serve` in its own process group (pinned to `core` when given, as benchmarks/bench_overlap.py runs
    it); returns (process, seconds until healthy)."""
    import requests

    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    pin = []
    if core is not None:
        pin, env["VLLM_CPU_OMP_THREADS_BIND"] = ["taskset", "-c", str(core)], str(core)
    start = time.time()
    proc = subprocess.Popen([*pin, "trl", "vllm-serve", "--model", model, "--dtype", "float32", "--host", "127.0.0.1",
                             "--port", str(port), "--no-enable-chunked-prefill", *extra], env=env,
                            stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    while time.time() - start < 900:
        if proc.poll() is not None:
            sys.exit(f"vLLM server exited; see {log_path}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, time.time() - start
        except requests.ConnectionError:
            pass
        time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    sys.exit(f"vLLM server not healthy after 900 s; see {log_path}")


def stop_server(proc) -> None:
    """SIGTERM to the server's process group, SIGKILL after 30 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="generation steps per backend")
    parser.add_argument("--processes", type=int, default=2, help="training processes")
    parser.add_argument("--backends", nargs="+", default=["transformers", "colocate", "server"])
    parser.add_argument("--tiny_dir", default=".cache/tiny")
    parser.add_argument("--out_dir", default="outputs/bench_vllm")
    args = parser.parse_args()
    from reasonrl.demo import tiny
    tiny.ensure_tiny_assets(args.tiny_dir)
    os.makedirs(args.out_dir, exist_ok=True)
    rows = []
    for backend in args.backends:
        out = os.path.join(args.out_dir, backend)
        if backend != "server":
            rows.append(train(args, backend, None, out))
        else:
            port = free_port()
            proc, startup = serve(f"{args.tiny_dir}/sft", port, os.path.join(args.out_dir, "server.log"))
            try:
                rows.append({**train(args, backend, port, out), "server_startup_s": round(startup, 1)})
            finally:
                stop_server(proc)
        print(json.dumps(rows[-1]), flush=True)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
