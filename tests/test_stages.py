"""stages.py: hard-prompt selection by pass rate, the chain's skip/resume logic, and a real two-stage tiny chain.

    python -m pytest tests/test_stages.py -q              # fast part (~10 s)
    python -m pytest tests/test_stages.py -q -m slow      # the real chain on reasonrl/demo/tiny.py's model (~30 s)
"""

import json
import os
import sys

import pytest
import torch
import yaml

import stages
import train_grpo as tg
from reasonrl.run import data
from reasonrl.run.config import read_recipe

# Two cores shared with other test runs: one thread, also for the session's tiny_assets build (it keeps
# min(2, current) threads); OpenMP spin-waiting on oversubscribed cores can slow a build tenfold.
torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "stages")
SUFFIX = "\n\nPlease reason step by step, and put your final answer within \\boxed{}."


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A small chat tokenizer saved to disk (select loads the model's tokenizer by path)."""
    from reasonrl.demo import tiny

    path = str(tmp_path_factory.mktemp("tok"))
    tiny.build_tokenizer(["What is 2 + 2? \\boxed{4} Read a line and print it reversed."]).save_pretrained(path)
    return path


def write_recipe(path, **values) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(values, f)
    return str(path)


def math_recipe(tmp_path) -> str:
    return write_recipe(tmp_path / "math.yaml", dataset_name=os.path.join(FIXTURES, "math.jsonl"),
                        prompt_column="problem", answer_column="answer", prompt_suffix=SUFFIX,
                        max_prompt_length=512, max_completion_length=24576, temperature=1.0, top_p=1.0, seed=3,
                        reward_funcs=["dapo"], reward_kwargs={"dapo": {"correct": 1.0, "incorrect": -1.0}},
                        learning_rate=1e-6)


# ---------------------------------------------------------------- pass-rate filtering (pure)

def test_sixteen_samples_at_0_875_keep_prompts_solved_at_most_14_times():
    assert stages.max_passes(16, 0.875) == 14


def test_threshold_times_samples_rounds_down_without_float_error():
    assert stages.max_passes(10, 0.7) == 7
    assert stages.max_passes(8, 0.9) == 7


def test_an_impossible_threshold_is_refused():
    with pytest.raises(ValueError, match="max_pass_rate in \\[0, 1\\]"):
        stages.max_passes(16, 1.5)


def test_filter_keeps_14_of_16_and_drops_15_and_16_of_16():
    kept, report = stages.filter_by_pass_count([14, 15, 16, 0, 7], 16, 0.875)
    assert kept == [0, 3, 4]
    histogram = {str(k): 0 for k in range(17)}
    histogram.update({"0": 1, "7": 1, "14": 1, "15": 1, "16": 1})
    assert report == {"total": 5, "kept": 3, "dropped_too_easy": 2, "samples_per_prompt": 16, "max_pass_rate": 0.875,
                      "max_passes_kept": 14, "pass_count_histogram": histogram}


def test_a_pass_is_the_rewards_correct_score_and_none_is_no_pass():
    assert stages.passes_of([1.0, -1.0, 1.0, None], correct=1.0) == 2
    assert stages.passes_of([0.5, 1.0, 0.0], correct=0.5) == 1


def test_the_first_correctness_reward_decides_with_its_correct_value():
    assert stages.correctness_reward(["overlong", "robust"], {"robust": {"correct": 2.0, "incorrect": 0.0}}) == (
        "robust", {"correct": 2.0, "incorrect": 0.0}, 2.0)
    assert stages.correctness_reward(["code"], None) == ("code", {}, 1.0)


def test_a_recipe_without_a_correctness_reward_cannot_be_selected_by():
    with pytest.raises(ValueError, match="reward_funcs=\\['format'\\] has no correctness reward"):
        stages.correctness_reward(["format"], None)


def test_groups_are_scored_in_batches_and_counted_per_prompt_whatever_their_order():
    calls = []

    def reward(completions, solution):
        calls.append(len(completions))
        return [1.0 if c[-1]["content"] == s else -1.0 for c, s in zip(completions, solution)]

    groups = [(2, ["c", "x", "c"]), (0, ["a", "a", "a"]), (1, ["x", "x", "x"])]
    assert stages.score_groups(iter(groups), ["a", "b", "c"], reward, 1.0, batch=2) == {2: 2, 0: 3, 1: 0}
    assert calls == [6, 3]


def test_eval_sampler_yields_each_prompt_once_its_samples_are_all_done(monkeypatch):
    import eval as ev

    seen = []

    def backend(requests, model, sampling, args):
        seen.extend(requests)
        for r in sorted(requests, key=lambda r: (r["round"], r["i"])):  # out of prompt order, as vLLM may be
            yield r, {"response": f"{r['i']}/{r['round']}", "n_tokens": 1, "finish_reason": "stop"}

    monkeypatch.setitem(ev.BACKENDS, "transformers", backend)
    sampler = stages.eval_sampler("m", "transformers", batch_size=4)
    prompts = [[{"role": "user", "content": "p0"}], [{"role": "user", "content": "p1"}]]
    groups = list(sampler(prompts, 3, {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "seed": 10}))
    assert groups == [(0, ["0/0", "0/1", "0/2"]), (1, ["1/0", "1/1", "1/2"])]
    assert [(r["i"], r["round"], r["seed"], r["chunk"]) for r in seen] == [
        (0, 0, 10, 0), (0, 1, 11, 0), (0, 2, 12, 0), (1, 0, 10, 0), (1, 1, 11, 1), (1, 2, 12, 1)]
    assert seen[3]["messages"] == [{"role": "user", "content": "p1"}]


# ---------------------------------------------------------------- select with a stand-in sampler

MATH_COMPLETIONS = {  # problem -> 16 literal completions; "\\boxed{0}" is wrong for every problem here
    "What is 2 + 2?": ["so \\boxed{4}"] * 14 + ["so \\boxed{0}"] * 2,    # 14/16: kept (boundary)
    "What is 3 + 4?": ["so \\boxed{7}"] * 15 + ["no box"],               # 15/16: dropped
    "What is 5 + 6?": ["so \\boxed{11}"] * 16,                           # 16/16: dropped
    "What is 9 + 9?": ["so \\boxed{0}"] * 16,                            # 0/16: kept
    "What is 12 + 30?": ["so \\boxed{42}", "so \\boxed{0}"] * 8,         # 8/16: kept
}


def stand_in_sampler(completions, calls):
    def sampler(prompts, n, sampling):
        calls.append({"n": n, "sampling": sampling, "prompts": prompts})
        for i, p in enumerate(prompts):
            text = p[-1]["content"]
            yield i, completions[text[:-len(SUFFIX)] if text.endswith(SUFFIX) else text][:n]
    return sampler


def test_select_keeps_prompts_solved_at_most_14_of_16_times(tmp_path, tokenizer_dir):
    calls = []
    out = str(tmp_path / "hard.jsonl")
    report = stages.select(tokenizer_dir, math_recipe(tmp_path), 16, 0.875, out,
                           sampler=stand_in_sampler(MATH_COMPLETIONS, calls))
    assert [json.loads(line) for line in open(out)] == [
        {"problem": "What is 2 + 2?", "answer": "4"}, {"problem": "What is 9 + 9?", "answer": "18"},
        {"problem": "What is 12 + 30?", "answer": "42"}]
    saved = json.load(open(tmp_path / "hard.counts.json"))
    assert saved == report
    assert (report["total"], report["kept"], report["dropped_too_easy"]) == (5, 3, 2)
    assert {k: v for k, v in report["pass_count_histogram"].items() if v} == {"0": 1, "8": 1, "14": 1, "15": 1,
                                                                             "16": 1}
    assert report["reward"] == "dapo" and report["passed_when_score"] == 1.0


def test_select_samples_the_training_prompts_with_the_recipes_settings(tmp_path, tokenizer_dir):
    calls = []
    stages.select(tokenizer_dir, math_recipe(tmp_path), 16, 0.875, str(tmp_path / "hard.jsonl"), max_new_tokens=100,
                  sampler=stand_in_sampler(MATH_COMPLETIONS, calls))
    assert len(calls) == 1
    assert calls[0]["n"] == 16
    assert calls[0]["sampling"] == {"temperature": 1.0, "top_p": 1.0, "seed": 3, "max_new_tokens": 100}
    assert calls[0]["prompts"][0] == [{"role": "user", "content": "What is 2 + 2?" + SUFFIX}]


def test_max_new_tokens_defaults_to_the_recipes_response_length(tmp_path, tokenizer_dir):
    calls = []
    stages.select(tokenizer_dir, math_recipe(tmp_path), 16, 0.875, str(tmp_path / "hard.jsonl"),
                  sampler=stand_in_sampler(MATH_COMPLETIONS, calls))
    assert calls[0]["sampling"]["max_new_tokens"] == 24576


def test_selected_rows_load_back_through_train_grpo_with_the_same_recipe(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    recipe = math_recipe(tmp_path)
    out = str(tmp_path / "hard.parquet")
    stages.select(tokenizer_dir, recipe, 16, 0.875, out, sampler=stand_in_sampler(MATH_COMPLETIONS, []))
    script, _ = read_recipe(recipe, ["--dataset_name", out])
    prompts, counts = data.load_prompts(script, AutoTokenizer.from_pretrained(tokenizer_dir))
    assert [p[-1]["content"] for p in prompts["prompt"]] == [
        "What is 2 + 2?" + SUFFIX, "What is 9 + 9?" + SUFFIX, "What is 12 + 30?" + SUFFIX]
    assert prompts["solution"] == ["4", "18", "42"]


def test_command_line_flags_override_the_recipe_for_selection(tmp_path, tokenizer_dir):
    calls = []
    stages.select(tokenizer_dir, math_recipe(tmp_path), 16, 0.875, str(tmp_path / "hard.jsonl"),
                  recipe_args=["--temperature", "0.6", "--learning_rate", "2e-6"],
                  sampler=stand_in_sampler(MATH_COMPLETIONS, calls))
    assert calls[0]["sampling"]["temperature"] == 0.6


CODE_COMPLETIONS = {
    "Read two integers a and b on one line and print a + b.": [
        "```python\na, b = map(int, input().split())\nprint(a + b)\n```"] * 3 + [
        "```python\nprint(3)\n```"],                                        # passes case 1 only: not a pass
    "Read a line and print it reversed.": [
        "```python\nprint(input()[::-1])\n```",                             # all cases: the only pass
        "I would reverse it.",                                              # no code block
        "```python\nraise SystemExit(1)\n```",                              # crashes
        "```python\nprint(input())\n```"],                                  # right on "racecar" only
}


def test_code_prompts_pass_only_when_every_test_case_passes(tmp_path, tokenizer_dir):
    recipe = write_recipe(tmp_path / "code.yaml", dataset_name=os.path.join(FIXTURES, "code.jsonl"),
                          prompt_column="problem", answer_column="tests", prompt_suffix="", max_prompt_length=512,
                          reward_funcs=["code"], reward_kwargs={"code": {"mode": "all", "timeout_s": 5.0}})
    out = str(tmp_path / "hard_code.jsonl")
    report = stages.select(tokenizer_dir, recipe, 4, 0.5, out, sampler=stand_in_sampler(CODE_COMPLETIONS, []))
    assert [json.loads(line)["problem"] for line in open(out)] == ["Read a line and print it reversed."]
    assert report["pass_count_histogram"] == {"0": 0, "1": 1, "2": 0, "3": 1, "4": 0}
    assert (report["kept"], report["dropped_too_easy"]) == (1, 1)


# ---------------------------------------------------------------- the chain, training stubbed

def write_chain(tmp_path, stages_list, launcher="python", model="base-model") -> dict:
    path = tmp_path / "chain.yaml"
    with open(path, "w") as f:
        yaml.safe_dump({"launcher": launcher, "model": model, "stages": stages_list}, f)
    return stages.load_chain(str(path))


def flag(cmd, name):
    return cmd[cmd.index(name) + 1] if name in cmd else None


class Recorder:
    """Stands in for train_grpo.py (saves a model file) and for select (writes the selection files)."""

    def __init__(self, fail_on=None):
        self.trained, self.selected, self.fail_on = [], [], fail_on

    def train(self, cmd):
        out = flag(cmd, "--output_dir")
        if self.fail_on and out.endswith(self.fail_on):
            raise RuntimeError("interrupted")
        self.trained.append(cmd)
        os.makedirs(out, exist_ok=True)
        open(os.path.join(out, "config.json"), "w").write("{}")

    def select(self, **kwargs):
        self.selected.append(kwargs)
        os.makedirs(os.path.dirname(kwargs["out"]), exist_ok=True)
        open(kwargs["out"], "w").write("")
        json.dump({"kept": 3}, open(stages.counts_path_of(kwargs["out"]), "w"))
        return {"kept": 3}


def two_stages(tmp_path, **second):
    return [{"name": "a", "recipe": "ra.yaml", "output_dir": str(tmp_path / "a")},
            {"name": "b", "recipe": "rb.yaml", "output_dir": str(tmp_path / "b"), **second}]


def test_chain_runs_stages_in_order_each_from_the_previous_output(tmp_path):
    chain, rec = write_chain(tmp_path, two_stages(tmp_path)), Recorder()
    results = stages.run_chain(chain, train=rec.train, selector=rec.select)
    assert [flag(c, "--config") for c in rec.trained] == ["ra.yaml", "rb.yaml"]
    assert [flag(c, "--model_name_or_path") for c in rec.trained] == ["base-model", str(tmp_path / "a")]
    assert results == [{"name": "a", "status": "trained", "model": str(tmp_path / "a")},
                       {"name": "b", "status": "trained", "model": str(tmp_path / "b")}]
    assert json.load(open(tmp_path / "b" / "stage_done.json"))["started_from"] == str(tmp_path / "a")


def test_python_launcher_command_is_train_grpo_with_the_stage_flags(tmp_path):
    chain = write_chain(tmp_path, [{"name": "a", "recipe": "ra.yaml", "output_dir": "out/a", "args": ["--seed", "1"]}])
    assert stages.train_command(chain, chain["stages"][0], "m", "out/a", "sel.jsonl", ["--logging_steps", "5"]) == [
        sys.executable, os.path.join(ROOT, "train_grpo.py"), "--config", "ra.yaml", "--model_name_or_path", "m",
        "--output_dir", "out/a", "--dataset_name", "sel.jsonl", "--seed", "1", "--logging_steps", "5"]


def test_accelerate_launcher_command_uses_the_chains_config(tmp_path):
    path = tmp_path / "chain.yaml"
    yaml.safe_dump({"launcher": "accelerate", "accelerate_config": "accelerate_configs/zero3.yaml", "model": "m",
                    "stages": [{"name": "a", "recipe": "ra.yaml", "output_dir": "out/a"}]}, open(path, "w"))
    chain = stages.load_chain(str(path))
    assert stages.train_command(chain, chain["stages"][0], "m", "out/a", None) == [
        "accelerate", "launch", "--config_file", "accelerate_configs/zero3.yaml", os.path.join(ROOT, "train_grpo.py"),
        "--config", "ra.yaml", "--model_name_or_path", "m", "--output_dir", "out/a"]


def test_finished_stage_is_skipped_and_its_model_feeds_the_next(tmp_path):
    chain, rec = write_chain(tmp_path, two_stages(tmp_path)), Recorder()
    os.makedirs(tmp_path / "a")
    json.dump({"model": "finished-a"}, open(tmp_path / "a" / "stage_done.json", "w"))
    results = stages.run_chain(chain, train=rec.train, selector=rec.select)
    assert [flag(c, "--output_dir") for c in rec.trained] == [str(tmp_path / "b")]
    assert flag(rec.trained[0], "--model_name_or_path") == "finished-a"
    assert [r["status"] for r in results] == ["skipped", "trained"]


def test_interrupted_stage_gets_no_marker_and_is_run_again(tmp_path):
    chain = write_chain(tmp_path, two_stages(tmp_path))
    with pytest.raises(RuntimeError, match="interrupted"):
        stages.run_chain(chain, train=Recorder(fail_on="b").train)
    assert os.path.exists(tmp_path / "a" / "stage_done.json")
    assert not os.path.exists(tmp_path / "b" / "stage_done.json")
    rec = Recorder()
    results = stages.run_chain(chain, train=rec.train)
    assert [flag(c, "--output_dir") for c in rec.trained] == [str(tmp_path / "b")]  # same dir: train_grpo resumes
    assert [r["status"] for r in results] == ["skipped", "trained"]


def test_a_training_run_that_saves_no_model_is_not_marked_done(tmp_path):
    chain = write_chain(tmp_path, two_stages(tmp_path)[:1])
    with pytest.raises(RuntimeError, match="saved no model"):
        stages.run_chain(chain, train=lambda cmd: None)
    assert not os.path.exists(tmp_path / "a" / "stage_done.json")


def test_one_named_stage_starts_from_the_previous_stages_recorded_model(tmp_path):
    chain, rec = write_chain(tmp_path, two_stages(tmp_path)), Recorder()
    os.makedirs(tmp_path / "a")
    json.dump({"model": "finished-a"}, open(tmp_path / "a" / "stage_done.json", "w"))
    stages.run_chain(chain, stage="b", train=rec.train, selector=rec.select)
    assert [(flag(c, "--config"), flag(c, "--model_name_or_path")) for c in rec.trained] == [("rb.yaml", "finished-a")]


def test_one_named_stage_refuses_to_start_before_its_predecessor_finished(tmp_path):
    chain = write_chain(tmp_path, two_stages(tmp_path))
    with pytest.raises(RuntimeError, match="stage b starts from stage a's model, which has not finished"):
        stages.run_chain(chain, stage="b", train=Recorder().train)


def test_unknown_stage_name_lists_the_stages(tmp_path):
    chain = write_chain(tmp_path, two_stages(tmp_path))
    with pytest.raises(ValueError, match="no stage named 'c' in the chain; stages: \\['a', 'b'\\]"):
        stages.run_chain(chain, stage="c", train=Recorder().train)


def test_selection_runs_with_the_model_the_stage_starts_from_and_feeds_training(tmp_path):
    select_cfg = {"samples": 16, "max_pass_rate": 0.875, "max_new_tokens": 1000}
    chain, rec = write_chain(tmp_path, two_stages(tmp_path, select=select_cfg)), Recorder()
    stages.run_chain(chain, train=rec.train, selector=rec.select)
    selected = str(tmp_path / "b" / "prompts.jsonl")
    assert rec.selected == [{"model": str(tmp_path / "a"), "recipe": "rb.yaml", "samples": 16, "max_pass_rate": 0.875,
                             "out": selected, "max_new_tokens": 1000, "backend": "auto", "dataset_name": None,
                             "recipe_args": []}]
    assert flag(rec.trained[1], "--dataset_name") == selected


def test_epochs_reselect_from_the_previous_epochs_prompts_with_its_model(tmp_path):
    select_cfg = {"samples": 16, "max_pass_rate": 0.875}
    steps = two_stages(tmp_path, select=select_cfg, epochs=3) + [
        {"name": "c", "recipe": "rc.yaml", "output_dir": str(tmp_path / "c")}]
    chain, rec = write_chain(tmp_path, steps), Recorder()
    stages.run_chain(chain, train=rec.train, selector=rec.select)
    b = tmp_path / "b"
    assert [(s["model"], s["dataset_name"], s["out"]) for s in rec.selected] == [
        (str(tmp_path / "a"), None, str(b / "epoch_1" / "prompts.jsonl")),
        (str(b / "epoch_1"), str(b / "epoch_1" / "prompts.jsonl"), str(b / "epoch_2" / "prompts.jsonl")),
        (str(b / "epoch_2"), str(b / "epoch_2" / "prompts.jsonl"), str(b / "epoch_3" / "prompts.jsonl"))]
    assert [(flag(c, "--output_dir"), flag(c, "--dataset_name")) for c in rec.trained[1:4]] == [
        (str(b / f"epoch_{e}"), str(b / f"epoch_{e}" / "prompts.jsonl")) for e in (1, 2, 3)]
    assert flag(rec.trained[4], "--model_name_or_path") == str(b / "epoch_3")


def test_finished_epochs_and_selections_are_not_redone(tmp_path):
    select_cfg = {"samples": 16, "max_pass_rate": 0.875}
    chain = write_chain(tmp_path, two_stages(tmp_path, select=select_cfg, epochs=2))
    with pytest.raises(RuntimeError):
        stages.run_chain(chain, train=Recorder(fail_on="epoch_2").train, selector=Recorder().select)
    rec = Recorder()
    stages.run_chain(chain, train=rec.train, selector=rec.select)
    assert [flag(c, "--output_dir") for c in rec.trained] == [str(tmp_path / "b" / "epoch_2")]
    assert rec.selected == []  # epoch 2's prompts were already selected before the interruption


def test_after_skipped_epochs_selection_continues_from_the_last_finished_epoch(tmp_path):
    chain = write_chain(tmp_path, two_stages(tmp_path, select={"samples": 16, "max_pass_rate": 0.875}, epochs=3))
    first = Recorder()

    def select_until_epoch_3(**kwargs):
        if "epoch_3" in kwargs["out"]:
            raise RuntimeError("interrupted")
        return first.select(**kwargs)

    with pytest.raises(RuntimeError, match="interrupted"):
        stages.run_chain(chain, train=first.train, selector=select_until_epoch_3)
    rec = Recorder()
    stages.run_chain(chain, train=rec.train, selector=rec.select)
    epoch_2 = tmp_path / "b" / "epoch_2"
    assert [(s["model"], s["dataset_name"]) for s in rec.selected] == [(str(epoch_2), str(epoch_2 / "prompts.jsonl"))]


def test_selection_that_keeps_nothing_stops_the_chain_naming_the_setting(tmp_path):
    chain = write_chain(tmp_path, two_stages(tmp_path, select={"samples": 4, "max_pass_rate": 0.5}))
    with pytest.raises(RuntimeError, match="raise it in the chain's `select`"):
        stages.run_chain(chain, train=Recorder().train, selector=lambda **kw: {"kept": 0})


def test_command_line_runs_one_stage_passing_flags_after_a_double_dash_to_train_grpo(tmp_path, monkeypatch):
    write_chain(tmp_path, two_stages(tmp_path))
    rec = Recorder()
    monkeypatch.setattr(stages, "run_command", rec.train)
    stages.main(["run", "--chain", str(tmp_path / "chain.yaml"), "--stage", "a", "--", "--seed", "7"])
    assert len(rec.trained) == 1
    assert flag(rec.trained[0], "--config") == "ra.yaml" and rec.trained[0][-2:] == ["--seed", "7"]


def test_chain_with_an_unknown_stage_key_fails_naming_it(tmp_path):
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['epoch'\\]"):
        write_chain(tmp_path, [{"name": "a", "recipe": "r.yaml", "output_dir": "o", "epoch": 2}])


def test_select_settings_need_samples_and_threshold(tmp_path):
    with pytest.raises(ValueError, match="`select` needs samples and max_pass_rate"):
        write_chain(tmp_path, [{"name": "a", "recipe": "r.yaml", "output_dir": "o", "select": {"samples": 16}}])


# ---------------------------------------------------------------- the AceReason recipes and chain

def dry_run(recipe, world=8):
    import transformers.training_args as ta
    from contextlib import redirect_stdout
    from io import StringIO

    check = ta.is_torch_bf16_gpu_available
    try:
        out = StringIO()
        with redirect_stdout(out):
            tg.main(["--config", os.path.join(ROOT, "recipes", recipe), "--dry_run", "--world_size", str(world)])
        return json.loads(out.getvalue())
    finally:
        ta.is_torch_bf16_gpu_available = check


ON_POLICY = {"prompts_per_step": 128, "optimizer_updates_per_step": 1, "num_iterations": 1, "loss_type": "dapo",
             "beta": 0.0, "scale_rewards": "group"}


@pytest.mark.parametrize("recipe, tokens, rollouts, reward", [
    ("acereason_math_8k.yaml", 8192, 8, "robust"), ("acereason_math_16k.yaml", 16384, 16, "robust"),
    ("acereason_math_24k.yaml", 24576, 16, "robust"), ("acereason_math_32k.yaml", 32768, 16, "robust"),
    ("acereason_code_24k.yaml", 24576, 16, "code"), ("acereason_code_32k.yaml", 32768, 16, "code")])
def test_acereason_recipes_are_on_policy_token_level_without_kl(recipe, tokens, rollouts, reward):
    config = dry_run(recipe)
    training, script = config["training_args"], config["script_args"]
    assert {k: training[k] for k in ON_POLICY} == ON_POLICY
    assert config["model_args"]["model_name_or_path"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert (training["max_completion_length"], training["num_generations"]) == (tokens, rollouts)
    assert training["vllm_max_model_length"] == script["max_prompt_length"] + tokens
    assert config["derived"]["steps_per_generation"] == config["derived"]["gradient_accumulation_steps"]
    assert script["reward_funcs"] == [reward]
    assert script["answer_column"] == ("tests" if reward == "code" else "answer")


def test_acereason_chain_lists_the_six_stages_with_selection_where_the_paper_filters():
    chain = stages.load_chain(os.path.join(ROOT, "recipes", "acereason_chain.yaml"))
    assert chain["model"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert [(s["name"], bool(s.get("select")), s.get("epochs", 1)) for s in chain["stages"]] == [
        ("math_8k", False, 1), ("math_16k", False, 1), ("math_24k", True, 1), ("math_32k", True, 1),
        ("code_24k", True, 2), ("code_32k", True, 2)]
    for s in chain["stages"]:
        assert os.path.exists(os.path.join(ROOT, s["recipe"])), s["recipe"]
        assert yaml.safe_load(open(os.path.join(ROOT, s["recipe"])))["output_dir"] == s["output_dir"]
        if s.get("select"):
            assert stages.max_passes(s["select"]["samples"], s["select"]["max_pass_rate"]) == 14


# ---------------------------------------------------------------- a real chain on reasonrl/demo/tiny.py's model (CPU)

@pytest.mark.slow
def test_two_tiny_math_stages_chain_select_and_skip_on_rerun(tiny_assets, tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "train32.parquet"
    pd.read_parquet(tiny_assets["train"]).head(32).to_parquet(data)
    tiny_recipe = yaml.safe_load(open(os.path.join(ROOT, "recipes", "tiny.yaml")))
    tiny_recipe.update(prepare_assets=None, dataset_name=str(data), heldout_file=None, total_generation_steps=2,
                       prompts_per_step=4, per_device_train_batch_size=16, save_strategy="no", report_to=["none"])
    recipe = write_recipe(tmp_path / "tiny_stage.yaml", **tiny_recipe)
    chain = write_chain(tmp_path, [
        {"name": "first", "recipe": recipe, "output_dir": str(tmp_path / "first")},
        {"name": "second", "recipe": recipe, "output_dir": str(tmp_path / "second"),
         "select": {"samples": 4, "max_pass_rate": 0.5, "max_new_tokens": 32, "backend": "transformers"}}],
        model=tiny_assets["model"])
    commands = []

    def train(cmd):
        commands.append(cmd)
        stages.run_command(cmd)

    results = stages.run_chain(chain, train=train)
    assert [r["status"] for r in results] == ["trained", "trained"]
    assert [flag(c, "--model_name_or_path") for c in commands] == [tiny_assets["model"], str(tmp_path / "first")]
    counts = json.load(open(tmp_path / "second" / "prompts.counts.json"))
    assert counts["model"] == str(tmp_path / "first") and counts["total"] == 32
    assert counts["kept"] + counts["dropped_too_easy"] == 32 and counts["kept"] >= 4
    assert flag(commands[1], "--dataset_name") == str(tmp_path / "second" / "prompts.jsonl")
    summary = json.load(open(tmp_path / "second" / "summary.json"))
    assert summary["data"]["rows"] == counts["kept"] and summary["global_step"] == 4
    assert json.load(open(tmp_path / "second" / "stage_done.json"))["started_from"] == str(tmp_path / "first")

    rerun = stages.run_chain(chain, train=lambda cmd: pytest.fail(f"a finished stage ran again: {cmd}"))
    assert [r["status"] for r in rerun] == ["skipped", "skipped"]
