"""A data-parallel `trl vllm-serve` (2 engines of the tiny model on the CPU), as launch_slurm.py starts one per node's GPUs.

    python -m pytest tests/test_vllm_dp.py -q        # one server start: 14 min at load 10-16 on 2 cores, mostly start-up

vLLM 0.31 runs a dense model's data-parallel ranks as independent engines behind one API server: both engines serve
requests, the server reports tp x dp workers to TRL's client (/get_world_size), and a weight reload through
/collective_rpc (reasonrl/generation/cpu_vllm.py's sync) reaches every engine: the same greedy prompt, sent 16 times at once, gives one
answer before the reload and one other answer after it, from both engines each time. Stopped by its process group,
it leaves no engine core behind.
"""

import collections
import concurrent.futures
import time

import pytest

from test_vllm import alive, descendants, free_port, needs_vllm, start_server, stop_group

pytestmark = [needs_vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def dp_server(tiny_assets, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("dp_server") / "server.log"
    proc = start_server(tiny_assets["model"], port, log_path, "--tensor_parallel_size", "1",
                        "--data_parallel_size", "2", "--max_model_len", "96")
    try:
        yield f"http://127.0.0.1:{port}", tiny_assets, proc, descendants(proc.pid)
    finally:
        stop_group(proc)


def _served_per_engine(url: str) -> dict[str, float]:
    """Finished requests per engine, from the server's Prometheus metrics."""
    import requests
    served = collections.Counter()
    for line in requests.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("vllm:request_success_total{"):
            engine = line.split('engine="')[1].split('"')[0]
            served[engine] += float(line.rsplit(" ", 1)[1])
    return served


def _same_prompt_16_times(url: str, model: str) -> collections.Counter:
    import requests

    def complete(_):
        body = {"model": model, "prompt": "12+34=", "max_tokens": 8, "temperature": 0}
        return requests.post(f"{url}/v1/completions", json=body, timeout=300).json()["choices"][0]["text"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return collections.Counter(pool.map(complete, range(16)))


def test_both_engines_serve_and_a_weight_reload_reaches_both(dp_server):
    import requests
    url, assets, _, _ = dp_server
    assert requests.get(f"{url}/get_world_size", timeout=30).json() == {"world_size": 2}  # TRL's NCCL group: 2 + 1
    served = _served_per_engine(url)
    before = _same_prompt_16_times(url, assets["model"])
    after_first = _served_per_engine(url)
    assert len(before) == 1, before
    assert after_first["0"] > served["0"] and after_first["1"] > served["1"], after_first  # both engines answered
    reload = requests.post(f"{url}/collective_rpc", timeout=600, json={  # reasonrl/demo/tiny.py's model before its warm start
        "method": "reload_weights", "kwargs": {"weights_path": assets["base_model"]}})
    assert reload.status_code == 200, reload.text
    after = _same_prompt_16_times(url, assets["model"])
    assert len(after) == 1 and after != before, (before, after)  # one engine left on the old weights would split it
    final = _served_per_engine(url)
    assert final["0"] > after_first["0"] and final["1"] > after_first["1"], final


def test_the_server_stops_by_its_process_group_and_leaves_no_engine_core(dp_server):
    """stop_group (how the tests stop a server, SIGTERM to its process group): the API server and both engine cores
    are gone, none left orphaned."""
    _, _, proc, tree = dp_server
    assert sum("EngineCore" in p.name() for p in tree) == 2, [p.name() for p in tree]
    stop_group(proc)
    assert proc.returncode is not None
    deadline = time.time() + 30  # an orphan is reparented and reaped by init: give it a moment
    while alive(tree) and time.time() < deadline:
        time.sleep(0.5)
    assert alive(tree) == []
