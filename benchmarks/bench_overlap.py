"""Wall time per generation step through a vLLM server, synchronous and overlapped (async_generation_steps: 1), on
this machine as a scale model of two machines: the server pinned to one core, the trainer to another (taskset), so
neither half borrows the other's core.

    python -m benchmarks.bench_overlap                      # 20 generation steps each; last line: the ratio
    python -m benchmarks.bench_overlap --num_iterations 1   # the tiny recipe as committed: the update half the rest
    python -m benchmarks.bench_overlap --steps 30 --curves --num_iterations 1   # validate every 5 steps, plot the curves
    python -m benchmarks.bench_overlap -- --vllm_importance_sampling_mode token_truncate   # train_grpo.py flags, both runs

The tiny recipe, with num_iterations 2 by default: each generation is used for two passes, so that here the update
(1 core) takes about as long as the generation (the other core), the case overlap is for.

One server (started once, its weights re-synced by each run at its first step) serves a synchronous run and then an
overlapped one of the same recipe. Each run's wall time per generation step is its train_runtime over its steps,
the first step excluded (its generation cannot overlap anything): (runtime - first step) / (steps - 1). The split
printed per run is train_grpo's per-phase metrics summed per step: generation (in the overlapped run: the time the
trainer still waited for the server), reward, update. With --curves both runs also validate the held-out split
(avg@4, every 5 steps) and docs/overlap_curves.png shows both curves against the generation step; validation time is
then inside the runtime, so the timing comes from the run without --curves.
"""

import argparse
import json
import os
import signal
import subprocess
import sys

from benchmarks.bench_vllm import free_port, logged_dicts, serve, stop_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(args, port: int, out_dir: str, overlap: bool) -> dict:
    """One run of the tiny recipe through the server at `port`, the trainer pinned to args.trainer_core."""
    tiny = args.tiny_dir
    cmd = ["taskset", "-c", str(args.trainer_core), "accelerate", "launch", "--num_processes", "1",
           "--main_process_port", str(free_port()), os.path.join(ROOT, "train_grpo.py"),
           "--config", os.path.join(ROOT, "recipes", "tiny.yaml"), "--prepare_kwargs", json.dumps({"tiny_dir": tiny}),
           "--model_name_or_path", f"{tiny}/sft", "--dataset_name", f"{tiny}/train.parquet",
           "--heldout_file", f"{tiny}/test.parquet", "--output_dir", out_dir,
           "--total_generation_steps", str(args.steps), "--prompts_per_step", str(args.prompts_per_step),
           "--num_iterations", str(args.num_iterations),
           "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none", "--log_completions", "false",
           "--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_host", "127.0.0.1",
           "--vllm_server_port", str(port), "--async_generation_steps", "1" if overlap else "0", *args.train_args]
    if args.curves:
        cmd += ["--validation_before_training", "true", "--validation_every_generation_steps", "5"]
    else:
        cmd += ["--validation_before_training", "false", "--validation_every_generation_steps", "0"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"))
    if done.returncode != 0:
        sys.exit(f"{'overlapped' if overlap else 'synchronous'} run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    logs = logged_dicts(done.stdout + done.stderr)
    updates = json.load(open(os.path.join(out_dir, "summary.json")))["global_step"] // args.steps
    steps = [logs[i:i + updates] for i in range(0, len(logs), updates)]
    split = {phase: [sum(x.get(f"time/{phase}_s", 0.0) for x in step) for step in steps]
             for phase in ("generation", "reward", "update")}
    runtime = json.load(open(os.path.join(out_dir, "summary.json")))["train_runtime_s"]
    first = sum(split[phase][0] for phase in split)
    return {"run": "overlapped" if overlap else "synchronous", "generation_steps": len(steps),
            "wall_s_per_step": round((runtime - first) / (len(steps) - 1), 3), "train_runtime_s": round(runtime, 1),
            **{f"{phase}_s_per_step": round(sum(v[1:]) / (len(v) - 1), 3) for phase, v in split.items()}}


def plot(curves: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run, points in curves.items():
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=run)  # already in %
    ax.set_xlabel("generation step")
    ax.set_ylabel("held-out avg@4 (%), tiny recipe")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="generation steps per run")
    parser.add_argument("--prompts_per_step", type=int, default=32, help="x 8 rollouts")
    parser.add_argument("--num_iterations", type=int, default=2, help="passes over each generation: 2 makes the "
                        "update about as long as the generation here (1, the tiny recipe's: half as long)")
    parser.add_argument("--curves", action="store_true", help="validate every 5 steps; plot docs/overlap_curves.png")
    parser.add_argument("--server_core", type=int, default=1)
    parser.add_argument("--trainer_core", type=int, default=0)
    parser.add_argument("--tiny_dir", default=".cache/tiny")
    parser.add_argument("--out_dir", default="outputs/bench_overlap")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: train_grpo.py flags for both runs")
    args = parser.parse_args()
    args.train_args = [a for a in args.train_args if a != "--"]
    from reasonrl.demo import tiny
    tiny.ensure_tiny_assets(args.tiny_dir)
    os.makedirs(args.out_dir, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped (SIGTERM)"))  # so that the server is stopped too
    port = free_port()
    proc, startup = serve(f"{args.tiny_dir}/sft", port, os.path.join(args.out_dir, "server.log"), args.server_core,
                          extra=("--enforce_eager", "true"))
    print(f"server healthy after {startup:.1f} s, pinned to core {args.server_core}; trainer pinned to core "
          f"{args.trainer_core}; load before the runs {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    try:
        for overlap in (False, True):
            rows.append(train(args, port, os.path.join(args.out_dir, "overlapped" if overlap else "synchronous"),
                              overlap))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        stop_server(proc)
    sync, over = rows
    for run in ("synchronous", "overlapped"):
        summary = json.load(open(os.path.join(args.out_dir, run, "summary.json")))
        print(f"{run}: greedy held-out {summary['accuracy_before']:.3f} -> {summary['accuracy_after']:.3f}")
    for row in rows:
        print(f"{row['run']}: {row['wall_s_per_step']:.2f} s per generation step; generation (waited) "
              f"{row['generation_s_per_step']:.2f} s, reward {row['reward_s_per_step']:.2f} s, update "
              f"{row['update_s_per_step']:.2f} s")
    if args.curves:
        curves = {}
        for run in ("synchronous", "overlapped"):
            with open(os.path.join(args.out_dir, run, "validation", "metrics.jsonl")) as f:
                curves[run] = [(m["generation_step"], m["scalars"]["validation/heldout/avg@4"]) for m in map(json.loads, f)]
            print(f"{run} held-out avg@4 by generation step: {curves[run]}")
        plot(curves, os.path.join(ROOT, "docs", "overlap_curves.png"))
        print("plot: docs/overlap_curves.png")
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(rows, f, indent=2)
    print(f"overlap speedup: {sync['wall_s_per_step'] / over['wall_s_per_step']:.2f}x")


if __name__ == "__main__":
    main()
