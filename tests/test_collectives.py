"""Collective timeouts and validation that cannot stall (issue 20, item 3): ddp_timeout reaches the CPU (gloo) process
group, a server validation longer than it does not end the run, and no vLLM engine's validation changes training.

    python -m pytest -q tests/test_collectives.py            # the slow ones need vLLM for the engine tests
"""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
import yaml

from conftest import ROOT
from test_vllm import needs_vllm  # the `server` fixture (conftest.py): one `trl vllm-serve` for the session
from reasonrl.trainer import validation as val

# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize("ddp_timeout, beat", [(1800, 10.0), (7200, 10.0), (15, 3.0), (5, 1.0)])
def test_heartbeat_stays_well_inside_the_collective_timeout(ddp_timeout, beat):
    assert val.heartbeat_s(ddp_timeout) == beat


@pytest.mark.parametrize("max_num_seqs, round_size, rounds, in_flight", [
    (256, 100, 32, 2),      # JustRL: 100 problems a round, vLLM's default max_num_seqs on most GPUs
    (1024, 100, 32, 10),    # vLLM's default on H100/H200-class GPUs
    (64, 100, 32, 1),       # a round larger than the server's batch: one at a time, as before
    (4096, 100, 32, 32),
    (None, 100, 32, 32),    # the server does not say: all at once
])
def test_rounds_in_flight_fill_the_servers_batch(max_num_seqs, round_size, rounds, in_flight):
    assert val.rounds_in_flight(max_num_seqs, round_size, rounds) == in_flight


class FakeClient:
    """TRL's VLLMClient's generate/get_server_info; a completion names its seed and prompt. `meet` makes every call
    wait until that many calls are in flight together (a BrokenBarrierError if they never are)."""

    def __init__(self, tok, max_num_seqs=None, meet=1):
        self.tok, self.max_num_seqs, self.calls = tok, max_num_seqs, []
        self.barrier = threading.Barrier(meet, timeout=30) if meet > 1 else None

    def get_server_info(self):
        return {"scheduler_config": {"max_num_seqs": self.max_num_seqs}}

    def generate(self, prompts, n, temperature, top_p, max_tokens, logprobs, generation_kwargs):
        self.calls.append((generation_kwargs["seed"], [tuple(p) for p in prompts], temperature, top_p, max_tokens))
        if self.barrier is not None:
            self.barrier.wait()
        seed = generation_kwargs["seed"]
        return {"completion_ids": [self.tok(f"s{seed} {len(p)}", add_special_tokens=False)["input_ids"]
                                   + ([self.tok.eos_token_id] if seed % 2 else []) for p in prompts]}


def _requests(rounds, problems):
    return [{"benchmark": "b", "example_id": i, "round": r, "problem": f"{i} + {r}?", "prompt": f"{i} + {r}?",
             "answer": str(i + r), "seed": 7 + r, "chunk": ("b", r, i),
             "messages": [{"role": "user", "content": f"{i} + {r}?" + " x" * i}]} for r in range(rounds)
            for i in range(problems)]


SAMPLING = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 40}


def test_server_rounds_go_together_and_records_equal_one_round_after_another(tokenizer):
    requests = _requests(rounds=4, problems=3)
    one_by_one = FakeClient(tokenizer)
    expected = val.server_samples(one_by_one, tokenizer, requests, SAMPLING, in_flight=1)
    together = FakeClient(tokenizer, max_num_seqs=6, meet=2)  # 6 sequences: two rounds of 3 at once, met at a barrier
    got = val.server_samples(together, tokenizer, requests, SAMPLING)
    assert got == expected
    assert sorted(together.calls) == sorted(one_by_one.calls) and len(one_by_one.calls) == 4
    assert [(r["example_id"], r["round"], r["seed"]) for r in got] == [(i, r, 7 + r) for r in range(4) for i in range(3)]
    assert got[0]["response"] == "s7 " + str(len(one_by_one.calls[0][1][0])) and got[0]["finish_reason"] == "stop"
    assert set(got[0]) == {*val.RECORD_FIELDS, "response", "n_tokens", "finish_reason"}


def test_while_main_works_without_a_process_group_just_works():
    assert val.while_main_works(lambda: [1, 2], beat_s=1.0) == [1, 2]


# ---------------------------------------------------------------- 2 CPU processes (gloo)

HOLD_RANK1 = '''
import os
import time


def hold_rank1(completions, **kwargs):
    if os.environ.get("RANK") == "1":
        time.sleep(3600)
    return [0.0] * len(completions)
'''


@pytest.mark.slow
def test_a_rank_held_past_ddp_timeout_fails_the_run_naming_it(tiny_assets, tmp_path):
    """Before: transformers left ddp_timeout out of a use_cpu process group, and rank 0 waited 30 minutes."""
    from test_vllm import ENV, free_port, run_bounded

    (tmp_path / "hold.py").write_text(HOLD_RANK1)
    config = yaml.safe_load(open(os.path.join(ROOT, "recipes", "tiny.yaml")))
    config.update(prepare_kwargs={"tiny_dir": os.path.dirname(tiny_assets["model"])},
                  model_name_or_path=tiny_assets["model"], dataset_name=tiny_assets["train"], heldout_file=None,
                  reward_funcs=["hold.hold_rank1"], reward_kwargs=None, reward_weights=[1.0], reward_timeout_s=3600,
                  ddp_timeout=30, output_dir=str(tmp_path / "out"), report_to=[], log_completions=False,
                  total_generation_steps=2)
    recipe = tmp_path / "hold.yaml"
    recipe.write_text(yaml.safe_dump(config))
    cmd = ["accelerate", "launch", "--config_file", os.path.join(ROOT, "accelerate_configs", "cpu.yaml"),
           "--main_process_port", str(free_port()), os.path.join(ROOT, "train_grpo.py"), "--config", str(recipe)]
    started = time.time()
    ENV["PYTHONPATH"] = f"{tmp_path}:{ROOT}"
    try:
        code, log, left = run_bounded(cmd, tmp_path / "run.log", timeout=600)
    finally:
        del ENV["PYTHONPATH"]
    elapsed = time.time() - started
    print(f"[collectives] rank 1 held, ddp_timeout 30 s: the run ended {elapsed:.0f} s after launch (load "
          f"{os.getloadavg()[0]:.1f})")
    assert code != 0 and not left, (left, log[-4000:])
    assert "rank 0 (" in log and "waited longer than ddp_timeout=30 s in a collective" in log, log[-4000:]
    assert elapsed < 400  # start-up (1-3 min on 2 busy cores) + 30 s, not gloo's default 30 minutes


# ---------------------------------------------------------------- vLLM engines: validation changes nothing

class SlowProxy(BaseHTTPRequestHandler):
    """Forwards every request to the vLLM server; holds a validation request (40 new tokens; training asks for 32)
    `delay` seconds first: a validation that takes longer than the collective timeout."""

    target, delay = "", 0.0

    def _forward(self, method):
        import requests

        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        if method == "POST" and self.path.startswith("/v1/completions") and b'"max_tokens": 40' in body:
            time.sleep(self.delay)
        reply = requests.request(method, self.target + self.path, data=body or None, timeout=600,
                                 headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
        self.send_response(reply.status_code)
        self.send_header("Content-Type", reply.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(reply.content)))
        self.end_headers()
        self.wfile.write(reply.content)

    def do_GET(self):
        self._forward("GET")

    def do_POST(self):
        self._forward("POST")

    def log_message(self, *args):
        pass


def _run(tiny_assets, out, processes, *extra):
    from test_validation import tiny_argv
    from test_vllm import free_port, run_bounded

    cmd = ["accelerate", "launch", *(["--config_file", os.path.join(ROOT, "accelerate_configs", "cpu.yaml")]
                                     if processes == 2 else ["--num_processes", "1"]),
           "--main_process_port", str(free_port()), os.path.join(ROOT, "train_grpo.py"),
           *tiny_argv(tiny_assets, out, "--total_generation_steps", "2", "--save_strategy", "no", "--report_to",
                      "none", "--log_completions", "false", *extra)]
    started = time.time()
    code, log, left = run_bounded(cmd, out.parent / f"{out.name}.log", timeout=900)
    assert code == 0 and not left, (left, log[-4000:])
    return log, time.time() - started


def _assert_same_training(on, off, processes):
    from test_validation import _data_order, _weights

    for rank in range(processes):
        assert _data_order(on, rank) == _data_order(off, rank)
    a, b = _weights(on), _weights(off)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


SAMPLED = ("--validation_temperature", "0.7", "--validation_n_samples", "2", "--validation_limit", "24",
           "--validation_every_generation_steps", "1", "--validation_before_training", "true")
OFF = ("--validation_every_generation_steps", "0", "--validation_before_training", "false")


@needs_vllm
@pytest.mark.slow
def test_server_validation_longer_than_ddp_timeout_does_not_end_the_run_nor_change_training(server, tiny_assets,
                                                                                           tmp_path):
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), SlowProxy)
    SlowProxy.target, SlowProxy.delay = f"http://127.0.0.1:{server['port']}", 45.0
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        # the server samples training requests from its own random stream unless they carry a seed
        engine = ("--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_host", "127.0.0.1",
                  "--generation_kwargs", '{"seed": 1}')
        _run(tiny_assets, tmp_path / "off", 2, *engine, "--vllm_server_port", str(server["port"]), *OFF)
        # validations after steps 1 and 2, each request held 45 s: 2 rounds one after another would keep rank 1 in
        # one collective for 90 s, three times ddp_timeout (30 s: start-up on 2 busy cores stays inside it)
        log, seconds = _run(tiny_assets, tmp_path / "on", 2, *engine, "--vllm_server_port",
                            str(proxy.server_address[1]), "--ddp_timeout", "30", *SAMPLED[:-1], "false")
    finally:
        proxy.shutdown()
        proxy.server_close()
    times = [json.loads(line)["seconds"] for line in open(tmp_path / "on" / "validation" / "metrics.jsonl")]
    print(f"[collectives] server validations with ddp_timeout 30 s took {times} s; run {seconds:.0f} s (load "
          f"{os.getloadavg()[0]:.1f})")
    assert log.count("[validation] ") == 2 and "on vllm_server in" in log
    assert len(times) == 2 and min(times) > 45  # each validation outlasted the collective timeout
    _assert_same_training(tmp_path / "on", tmp_path / "off", 2)


@needs_vllm
@pytest.mark.slow
def test_server_samples_together_equal_one_round_after_another(server, tiny_assets):
    """vLLM's per-request seeds: the rounds give the same text whether the server batches them together or not."""
    from test_validation import _script_args
    from eval import plan_requests
    from transformers import AutoTokenizer
    from trl.generation.vllm_client import VLLMClient

    script_args = _script_args(validation_benchmarks=["heldout"], heldout_file=tiny_assets["test"],
                               validation_limit=24, validation_n_samples=4, validation_before_training=True,
                               validation_prompt_template="{problem}\n\nPlease reason step by step, and put your final "
                                                          "answer within \\boxed{}.")
    args, benchmarks = val.load_benchmarks(script_args)
    requests = [r for name, (problems, n, _) in benchmarks.items() for r in plan_requests(name, problems, n, args, 1)]
    tok = AutoTokenizer.from_pretrained(tiny_assets["model"])
    client = VLLMClient(base_url=f"http://127.0.0.1:{server['port']}", connection_timeout=60)
    sampling = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 40}
    assert val.rounds_in_flight(client.get_server_info()["scheduler_config"]["max_num_seqs"], 24, 4) == 4
    together = val.server_samples(client, tok, requests, sampling)
    one_by_one = val.server_samples(client, tok, requests, sampling, in_flight=1)
    assert len(together) == 96 and together == one_by_one


@needs_vllm
@pytest.mark.slow
def test_colocated_validation_changes_nothing_in_training(tiny_assets, tmp_path):
    engine = ("--use_vllm", "true", "--vllm_mode", "colocate")
    _run(tiny_assets, tmp_path / "off", 1, *engine, *OFF)
    log, _ = _run(tiny_assets, tmp_path / "on", 1, *engine, *SAMPLED)
    assert log.count("[validation] ") == 3 and "on vllm_colocate in" in log
    _assert_same_training(tmp_path / "on", tmp_path / "off", 1)
