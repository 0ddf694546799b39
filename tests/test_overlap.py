"""Generation one step ahead in server mode (async_generation_steps: 1, reasonrl/trainer/overlap.py): the read-ahead,
the request in flight, the order of requests and weight syncs (literal inputs, a stand-in client), the start-up
refusals; then a tiny run through a CPU vLLM server, synchronous and overlapped: both learn, and a relaunch keeps the
data order exactly.

    python -m pytest tests/test_overlap.py -q
"""

import json
import os
import threading
import time
from collections import defaultdict
from types import SimpleNamespace

import pytest

from conftest import ROOT
from reasonrl.trainer.overlap import GenerationAhead, Lookahead, Overlap
from test_bad_input import recipe, train


def test_lookahead_hands_out_items_in_order_and_peeks_past_them():
    ahead = Lookahead(iter(range(7)))
    assert ahead.take(2) == [0, 1]
    assert ahead.peek(3) == 5  # three places after the taken ones
    assert ahead.take(2) == [2, 3]  # what was read ahead is handed out first
    assert ahead.peek(2) == 6 and ahead.peek(3) is None  # past the end
    assert ahead.take(5) == [4, 5, 6]
    assert ahead.take(1) == []


def test_a_request_sent_ahead_is_taken_once_for_the_same_prompts():
    calls = []

    def generate(**kwargs):
        calls.append(kwargs["prompts"])
        time.sleep(0.2)
        return {"completion_ids": [[p[0] + 100] for p in kwargs["prompts"]]}

    ahead = GenerationAhead(generate)
    assert ahead.take({"prompts": [[1]]}) is None  # nothing in flight
    ahead.start({"prompts": [[1], [2]], "n": 4})
    assert ahead.take({"prompts": [[1], [2]], "n": 4}) == {"completion_ids": [[101], [102]]}
    assert ahead.take({"prompts": [[1], [2]], "n": 4}) is None and calls == [[[1], [2]]]
    ahead.start({"prompts": [[3]], "n": 4})
    with pytest.raises(RuntimeError, match="responses generated ahead were for other prompts.*async_generation_steps: 0"):
        ahead.take({"prompts": [[4]], "n": 4})


def test_a_failed_request_ahead_raises_where_its_responses_are_taken():
    def generate(**kwargs):
        raise RuntimeError("the vLLM server at http://node3:8000 did not answer")

    ahead = GenerationAhead(generate)
    ahead.start({"prompts": [[1]]})
    ahead.wait()
    with pytest.raises(RuntimeError, match="node3:8000 did not answer"):
        ahead.take({"prompts": [[1]]})


class FakeClient:
    """Stands in for TRL's VLLMClient: logs each request's start and end. A request sent ahead (the second on) ends
    only once the trainer has logged the update before it: it must be in flight during that update."""

    def __init__(self, events):
        self.events, self.requests = events, 0

    def generate(self, **kwargs):
        self.events.append(("start", kwargs["prompts"]))
        number, self.requests = self.requests, self.requests + 1
        deadline = time.time() + 10
        while number and kwargs.get("n") == 2 and ("update", number - 1) not in self.events:
            if time.time() > deadline:  # the trainer waited for this request before its update: no overlap
                self.events.append(("never overlapped", kwargs["prompts"]))
                break
            time.sleep(0.01)
        time.sleep(0.1)
        self.events.append(("end", kwargs["prompts"]))
        return {"prompts": kwargs["prompts"]}


def fake_trainer(events, batches, max_steps=100):
    """What Overlap reads of a ClipHigherGRPOTrainer: one process, 2 generations per prompt, 1 update per step."""
    gen = SimpleNamespace(vllm_client=FakeClient(events), sync_weights=lambda: events.append(("sync",)))
    return SimpleNamespace(
        tools=None, environment_factories=None, rollout_func=None, vllm_generation=gen,
        accelerator=SimpleNamespace(is_main_process=True), num_generations=2, _metrics=defaultdict(lambda: defaultdict(list)),
        args=SimpleNamespace(ddp_timeout=60, updates_per_generation_step=1, steps_per_generation=1, num_iterations=1,
                             gradient_accumulation_steps=1),
        state=SimpleNamespace(global_step=0, max_steps=max_steps),
        _tokenize_prompts=lambda prompts: ([[ord(c) for c in p] for p in prompts], None, {}))


def test_each_step_takes_the_responses_generated_during_the_previous_one_and_syncs_only_an_idle_server():
    events = []
    batches = iter([[{"prompt": "a"}, {"prompt": "a"}], [{"prompt": "b"}, {"prompt": "b"}],
                    [{"prompt": "c"}, {"prompt": "c"}]])
    trainer = fake_trainer(events, batches, max_steps=3)
    overlap = Overlap(trainer)
    client = trainer.vllm_generation.vllm_client
    returned, staleness = [], []
    for step in range(3):
        trainer.state.global_step = step
        batch = overlap.next_batch_of(batches, 1)[0]
        staleness.append(overlap.before_generation())
        trainer.vllm_generation.sync_weights()  # TRL: sync, then generate this step's prompts
        returned.append(client.generate(prompts=[[ord(batch[0]["prompt"])]], n=2)["prompts"])
        overlap.after_generation()
        events.append(("update", step))
    assert returned == [[[97]], [[98]], [[99]]]
    assert staleness == [0, 1, 1]
    # a: generated at once; b: sent as soon as a returned, still generating during step 0's update (FakeClient holds
    # it until then); the sync of step 1 waits for it; c: sent after step 1's sync; nothing after the last step
    assert [e for e in events if e[0] != "update"] == [
        ("sync",), ("start", [[97]]), ("end", [[97]]), ("start", [[98]]), ("end", [[98]]), ("sync",),
        ("start", [[99]]), ("end", [[99]]), ("sync",)]
    assert events.index(("update", 0)) < events.index(("end", [[98]])) < events.index(("update", 1))
    assert events.index(("update", 1)) < events.index(("end", [[99]])) < events.index(("update", 2))


def test_validation_requests_pass_straight_through_while_a_step_is_generated_ahead():
    events = []
    batches = iter([[{"prompt": "a"}, {"prompt": "a"}], [{"prompt": "b"}, {"prompt": "b"}]])
    trainer = fake_trainer(events, batches)
    overlap = Overlap(trainer)
    client = trainer.vllm_generation.vllm_client
    overlap.next_batch_of(batches, 1)
    overlap.before_generation()
    client.generate(prompts=[[97]], n=2)
    overlap.after_generation()
    assert client.generate(prompts=[[1]], n=1) == {"prompts": [[1]]}  # validation: its own request, at once
    assert overlap.ahead.pending["kwargs"] == {"prompts": [[98]], "n": 2}  # the step ahead is still the next one's
    events.append(("update", 0))
    overlap.ahead.wait()


def test_tools_environments_and_rollout_functions_are_refused():
    trainer = fake_trainer([], iter([]))
    trainer.tools = [print]
    with pytest.raises(ValueError, match="tools, environments and rollout_func.*async_generation_steps: 0"):
        Overlap(trainer)


@pytest.mark.parametrize("values, message", [
    ({"async_generation_steps": 2, "use_vllm": True, "vllm_mode": "server"},
     r"async_generation_steps=2: 0 \(on-policy\) or 1"),
    ({"async_generation_steps": 1}, r"set use_vllm: true and vllm_mode: server"),
    ({"async_generation_steps": 1, "use_vllm": True, "vllm_mode": "colocate"}, r"set use_vllm: true and vllm_mode: server"),
    ({"async_generation_steps": 1, "use_vllm": True, "vllm_mode": "server", "vllm_importance_sampling_correction": False},
     r"set vllm_importance_sampling_correction: true"),
])
def test_overlap_the_run_cannot_honour_is_refused_at_start_up_naming_the_key(tmp_path, values, message):
    with pytest.raises(ValueError, match=message):
        train(tmp_path, "--config", recipe(tmp_path, **values), "--dry_run")


# ---------------------------------------------------------------- a tiny run through a CPU vLLM server

STEPS = 30


def _launch(tiny_assets, server, out, *extra):
    from test_vllm import ENV, free_port, run_bounded, tiny_args

    cmd = ["accelerate", "launch", "--num_processes", "1", "--main_process_port", str(free_port()),
           os.path.join(ROOT, "train_grpo.py"),
           *tiny_args(tiny_assets, out, "--use_vllm", "true", "--vllm_mode", "server", "--vllm_server_host",
                      "127.0.0.1", "--vllm_server_port", str(server["port"]), "--total_generation_steps", str(STEPS),
                      "--validation_every_generation_steps", "15", "--logging_steps", "2", "--log_completions", "false",
                      *extra)]
    started = time.time()
    code, log, left = run_bounded(cmd, out.parent / f"{out.name}-{len(list(out.parent.glob(out.name + '-*')))}.log",
                                  timeout=1500)
    assert code == 0 and not left, (left, log[-4000:])
    return log, time.time() - started


def _curve(out):
    with open(out / "validation" / "metrics.jsonl") as f:
        return [(m["generation_step"], m["scalars"]["validation/heldout/avg@4"]) for m in map(json.loads, f)]


@pytest.fixture(scope="module")
def runs(server, tiny_assets, tmp_path_factory):
    """The tiny recipe through the server for 30 generation steps: synchronous; overlapped, stopped after its first
    generation step (a time limit's stop: save, exit 0) and relaunched."""
    from reasonrl.trainer.requeue import clear_stop_request, request_stop

    base = tmp_path_factory.mktemp("overlap")
    sync, overlapped = base / "sync", base / "overlapped"
    _, sync_s = _launch(tiny_assets, server, sync)
    request_stop(str(overlapped), "test: stop at the first generation step")
    first, first_s = _launch(tiny_assets, server, overlapped, "--async_generation_steps", "1")
    clear_stop_request(str(overlapped))
    second, second_s = _launch(tiny_assets, server, overlapped, "--async_generation_steps", "1")
    print(f"\n[overlap] tiny, {STEPS} generation steps through the server: synchronous {sync_s:.0f} s; overlapped "
          f"{first_s:.0f} s + {second_s:.0f} s (stopped after step 1, resumed) (load {os.getloadavg()[0]:.1f}); "
          f"held-out avg@4 synchronous {_curve(sync)}, overlapped {_curve(overlapped)}; greedy "
          + "; ".join(f"{run} {json.load(open(out / 'summary.json'))['accuracy_before']:.3f} -> "
                      f"{json.load(open(out / 'summary.json'))['accuracy_after']:.3f}"
                      for run, out in (("synchronous", sync), ("overlapped", overlapped))))
    return {"sync": sync, "overlapped": overlapped, "logs": (first, second)}


@pytest.mark.slow
def test_an_overlapped_run_stopped_and_relaunched_trains_the_synchronous_runs_data_order(runs):
    from test_validation import _data_order

    sync, overlapped = _data_order(runs["sync"]), _data_order(runs["overlapped"])
    assert "[stop] stopped on request" in runs["logs"][0] and "[resume] from" in runs["logs"][1]
    assert [line["generation_step"] for line in overlapped] == list(range(STEPS))  # none skipped, none repeated
    assert [line["row_ids"] for line in overlapped] == [line["row_ids"] for line in sync]
    # generated ahead from the second step on; the first step after the relaunch is generated on the spot
    assert [line["staleness_updates"] for line in overlapped] == [0, 0] + [2] * (STEPS - 2)
    assert "staleness_updates" not in sync[0]


@pytest.mark.slow
def test_the_overlapped_run_learns_as_the_synchronous_one(runs):
    sync, overlapped = _curve(runs["sync"]), _curve(runs["overlapped"])
    # validated before training, at step 15 (a step generated ahead is in flight then) and at the last
    assert [s for s, _ in sync] == [s for s, _ in overlapped] == [0, 15, 30]
    assert sync[0] == overlapped[0]  # the same model, the same seeded validation
    # greedy held-out accuracy (summary.json): avg@4 at temperature 0.7 moves by several points between steps here.
    # Measured over 4 pairs of runs (the server samples training from its own unseeded stream, so runs differ):
    # synchronous +15.5, +19.5, +13.5, +16.0 points; overlapped +14.5, +10.5, +13.5, +19.0 (README, "Overlapping").
    sync_summary, overlapped_summary = (json.load(open(runs[run] / "summary.json")) for run in ("sync", "overlapped"))
    assert sync_summary["accuracy_before"] == overlapped_summary["accuracy_before"]
    assert sync_summary["accuracy_after"] >= sync_summary["accuracy_before"] + 0.10, sync_summary
    assert overlapped_summary["accuracy_after"] >= overlapped_summary["accuracy_before"] + 0.08, overlapped_summary
    # logged per update: the staleness, TRL's importance weight and the vLLM-vs-trainer log-prob gap
    log = runs["logs"][1]
    assert "'async/staleness_updates': '2'" in log, log[-3000:]
    assert "'sampling/importance_sampling_ratio/mean'" in log and "'sampling/sampling_logp_difference/max'" in log
