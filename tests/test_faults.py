"""Faults inside training, without Slurm: a reward that hangs on one process, a vLLM server that stops answering.

    python -m pytest tests/test_faults.py -q

The multi-node faults (a killed rank, a killed server, a relaunch that resumes) are in tests/test_slurm.py.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from conftest import ROOT
from reasonrl.trainer.faults import bound_requests, time_limited

HANG_REWARD = '''
import os
import signal
import time


def hang_on_rank1(completions, **kwargs):
    if os.environ.get("RANK") == "1":
        time.sleep(3600)
    return [0.0] * len(completions)
'''


def test_time_limited_reward_returns_its_value_or_raises_naming_the_reward():
    def quick(completions, **kwargs):
        return [1.0] * len(completions)

    def slow(completions, **kwargs):
        time.sleep(30)

    assert time_limited(quick, 1.0)(["a", "b"]) == [1.0, 1.0]
    assert time_limited(quick, 1.0).__name__ == "quick"  # TRL logs rewards by __name__
    started = time.time()
    with pytest.raises(RuntimeError, match=r"reward 'slow' did not return within reward_timeout_s=0.5 s on rank 0"):
        time_limited(slow, 0.5)(["a"])
    assert time.time() - started < 5


def test_async_rewards_stay_async_and_are_bounded_too():
    import asyncio
    import inspect

    async def slow_async(completions, **kwargs):
        await asyncio.sleep(30)

    limited = time_limited(slow_async, 0.2)
    assert inspect.iscoroutinefunction(limited)
    with pytest.raises(RuntimeError, match="reward 'slow_async' did not return within reward_timeout_s=0.2 s"):
        asyncio.run(limited(["a"]))


class _Hung(BaseHTTPRequestHandler):
    """A vLLM server that is up (/health, /v1/models) but never answers a generation: it counts the POSTs it got."""

    posts = []

    def do_GET(self):
        body = b'{"data": [{"id": "tiny"}]}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.posts.append(self.path)
        time.sleep(30)

    def log_message(self, *args):
        pass


def test_a_generation_on_a_hung_server_fails_once_after_the_timeout_naming_server_and_key():
    """TRL's own client, bounded as ClipHigherGRPOTrainer bounds it: one request reaches the server (TRL's session
    would re-send it 5 times, ~6x the bound), the call fails after the timeout, not a multiple of it."""
    from conftest import require
    from trl.import_utils import is_vllm_available

    require(is_vllm_available(), "vLLM (TRL's VLLMClient imports it)")
    from trl.generation.vllm_client import VLLMClient

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hung)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    try:
        client = VLLMClient(base_url=f"http://{address}")
        bound_requests(client, 2.0)
        started = time.monotonic()
        with pytest.raises(RuntimeError) as error:
            client.generate(["1 + 1 ="], max_tokens=4)
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    print(f"[faults] hung server, vllm_request_timeout_s 2: failed after {elapsed:.2f} s, {len(_Hung.posts)} request")
    assert _Hung.posts == ["/v1/completions"]
    assert 2.0 <= elapsed < 4.0
    assert f"the vLLM server at http://{address} did not answer POST" in str(error.value)
    assert "ReadTimeout" in str(error.value) and "timeout 2.0 s (vllm_request_timeout_s)" in str(error.value)


@pytest.mark.slow
def test_a_reward_hanging_on_one_process_stops_both_processes_fast(tiny_assets, tmp_path):
    (tmp_path / "hang_reward.py").write_text(HANG_REWARD)
    config = yaml.safe_load(open(os.path.join(ROOT, "recipes", "tiny.yaml")))
    config.update(prepare_kwargs={"tiny_dir": os.path.dirname(tiny_assets["model"])}, model_name_or_path=tiny_assets["model"],
                  dataset_name=tiny_assets["train"], heldout_file=None, reward_funcs=["hang_reward.hang_on_rank1"],
                  reward_kwargs=None, reward_weights=[1.0], reward_timeout_s=5, output_dir=str(tmp_path / "out"),
                  report_to=[], log_completions=False, total_generation_steps=2)
    recipe = tmp_path / "hang.yaml"
    recipe.write_text(yaml.safe_dump(config))
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}:{ROOT}", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu.yaml",
           "--main_process_port", "29531", "train_grpo.py", "--config", str(recipe)]
    started = time.time()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, start_new_session=True)
    elapsed = time.time() - started
    text = out.stdout + out.stderr
    print(f"[faults] reward hanging on rank 1 (limit 5 s): both processes ended {elapsed:.0f} s after launch")
    assert out.returncode != 0, text[-3000:]
    assert "reward 'hang_on_rank1' did not return within reward_timeout_s=5 s on rank 1" in text, text[-3000:]
    assert elapsed < 300  # start-up (~1 min on 2 busy cores) + one generation + 5 s, not a collective's 30 minutes


SPAWNER = """
import subprocess, sys, time
child = subprocess.Popen(["sleep", "300"])
print(child.pid, flush=True)
time.sleep(300)
"""


def _gone(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/status").read().find("State:\tZ") >= 0
    except OSError:
        return True


@pytest.mark.parametrize("how", ["the command is killed", "the step is cancelled"])
def test_supervise_leaves_nothing_the_command_started(how):
    """slurm/supervise.py: a grandchild orphaned by its parent's death (vLLM's engine when its API server is killed)
    is stopped with the command, as is everything when the step gets SIGTERM (scancel)."""
    sup = subprocess.Popen([sys.executable, os.path.join(ROOT, "slurm", "supervise.py"), sys.executable, "-c", SPAWNER],
                           stdout=subprocess.PIPE, text=True)
    grandchild = int(sup.stdout.readline())
    command = int(open(f"/proc/{grandchild}/status").read().split("PPid:\t")[1].split()[0])
    os.kill(command if how == "the command is killed" else sup.pid,
            signal.SIGKILL if how == "the command is killed" else signal.SIGTERM)
    assert sup.wait(timeout=30) == (137 if how == "the command is killed" else 143)
    assert _gone(grandchild) and _gone(command)
