"""train_grpo.py: the policy loss, batch arithmetic, recipes and real CPU training runs (data.py: tests/test_data.py)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train_grpo as tg
from conftest import ROOT

RECIPES = os.path.join(ROOT, "recipes")


# ---------------------------------------------------------------- policy loss

def verl_policy_loss(old_log_prob, log_prob, advantages, response_mask, clip_low, clip_high, clip_ratio_c):
    """veRL's vanilla PPO policy loss with dual clip and token-mean aggregation, written out as veRL states it."""
    negative_approx_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    return (pg_losses * response_mask).sum() / response_mask.sum()


def five_regions():
    """One token per sequence, in each clip region: ratios 1.1 (A>0, inside), 1.5 (A>0, clipped high),
    0.5 (A<0, clipped low), 2.0 (A<0, inside), 20 (A<0, dual clipped)."""
    logps = torch.log(torch.tensor([[1.1], [1.5], [0.5], [2.0], [20.0]])).requires_grad_()
    return logps, torch.zeros(5, 1), torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0]), torch.ones(5, 1)


def test_policy_loss_value_and_gradient_in_each_clip_region():
    logps, old, adv, mask = five_regions()
    loss, _ = tg.policy_loss(logps, old, adv, mask, 0.2, 0.28, 10.0)
    # per token: -1.1, -1.28 (clipped at 1 + 0.28), 0.8 (clipped at 1 - 0.2), 2.0, 10.0 (dual clip c)
    assert loss.item() == pytest.approx((-1.1 - 1.28 + 0.8 + 2.0 + 10.0) / 5, abs=1e-6)
    loss.backward()
    # d(-A r)/d logp = -A r where unclipped; 0 in every clipped region
    assert logps.grad.flatten().tolist() == pytest.approx([-1.1 / 5, 0.0, 0.0, 2.0 / 5, 0.0], abs=1e-6)


def test_policy_loss_reports_fraction_clipped_low_high_and_dual():
    logps, old, adv, mask = five_regions()
    _, fractions = tg.policy_loss(logps, old, adv, mask, 0.2, 0.28, 10.0)
    assert {k: (n / d).item() for k, (n, d) in fractions.items()} == pytest.approx(
        {"clip_ratio/low": 0.2, "clip_ratio/high": 0.2, "clip_ratio/dual": 0.2})


def test_policy_loss_without_dual_clip_leaves_large_ratios_unbounded():
    logps, old, adv, mask = five_regions()
    loss, fractions = tg.policy_loss(logps, old, adv, mask, 0.2, 0.28, None)
    assert loss.item() == pytest.approx((-1.1 - 1.28 + 0.8 + 2.0 + 20.0) / 5, abs=1e-5)
    assert fractions["clip_ratio/dual"][0].item() == 0


def test_policy_loss_matches_verl_in_value_and_gradient_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(6, 9, generator=g)
    new = (old + 0.6 * torch.randn(6, 9, generator=g)).requires_grad_()
    new_ref = new.detach().clone().requires_grad_()
    adv = torch.randn(6, generator=g)
    mask = (torch.rand(6, 9, generator=g) > 0.3).float()
    ours, _ = tg.policy_loss(new, old, adv, mask, 0.2, 0.28, 3.0)
    ref = verl_policy_loss(old, new_ref, adv.unsqueeze(-1), mask, 0.2, 0.28, 3.0)
    ours.backward()
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(new.grad, new_ref.grad, atol=1e-7)


def test_trl_delta_is_the_same_bound_as_the_dual_clip():
    g = torch.Generator().manual_seed(1)
    old = torch.randn(8, 5, generator=g)
    new = old + 3 * torch.randn(8, 5, generator=g)  # ratios far outside the clip range, some beyond delta
    adv = torch.randn(8, 1, generator=g)
    ratio = torch.exp(new - old)
    trl = -torch.min(torch.clamp(ratio, max=10.0) * adv, torch.clamp(ratio, 0.8, 1.28) * adv)
    ours, _ = tg.policy_loss(new, old, adv, torch.ones(8, 5), 0.2, 0.28, 10.0)
    assert ours.item() == pytest.approx(trl.mean().item(), rel=1e-6)


def test_policy_loss_ignores_masked_tokens():
    logps = torch.log(torch.tensor([[1.1, 50.0]]))
    loss, _ = tg.policy_loss(logps, torch.zeros(1, 2), torch.tensor([1.0]), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(-1.1)


def test_policy_loss_divides_by_the_global_token_count_when_given():
    logps = torch.log(torch.tensor([[1.1, 1.1]]))
    loss, _ = tg.policy_loss(logps, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2),
                             num_tokens=torch.tensor(8.0))
    assert loss.item() == pytest.approx(-2.2 / 8)


def test_policy_loss_scales_each_token_by_its_importance_weight():
    logps = torch.log(torch.tensor([[1.1, 1.1]]))
    loss, _ = tg.policy_loss(logps, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2),
                             token_weights=torch.tensor([[0.5, 1.0]]))
    assert loss.item() == pytest.approx(-(0.55 + 1.1) / 2)


def test_seq_mean_averages_sequence_means_instead_of_tokens():
    logps = torch.zeros(2, 3)  # ratio 1 everywhere: per-token loss = -A
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    token_mean, _ = tg.policy_loss(logps, logps, adv, mask)
    seq_mean, _ = tg.policy_loss(logps, logps, adv, mask, seq_mean=True)
    assert token_mean.item() == pytest.approx((-3 + 1) / 4)
    assert seq_mean.item() == pytest.approx((-1 + 1) / 2)


# ---------------------------------------------------------------- batch arithmetic

@pytest.mark.parametrize("world, accumulation, steps_per_generation", [(1, 256, 1024), (8, 32, 128), (32, 8, 32),
                                                                      (64, 4, 16), (256, 1, 4)])
def test_justrl_batch_on_several_world_sizes(world, accumulation, steps_per_generation):
    b = tg.derive_batch(256, 8, 4, world, 2)
    assert (b["gradient_accumulation_steps"], b["steps_per_generation"]) == (accumulation, steps_per_generation)
    assert (b["responses_per_step"], b["responses_per_update"], b["generation_batch_size"]) == (2048, 512, 2048)
    # TRL's identities: an update is per-device x world x accumulation; a generation is steps_per_generation micro-steps
    assert 2 * world * accumulation == 512 and 2 * world * steps_per_generation == 2048


def test_world_size_that_cannot_split_an_update_fails_with_the_sizes_that_can():
    with pytest.raises(ValueError, match=r"512 responses per optimizer update cannot be split over 24 training "
                                         r"processes.*\[1, 2, 4, 8, 16, 32, 64, 128, 256, 512\]"):
        tg.derive_batch(256, 8, 4, 24, 2)


def test_micro_batch_that_does_not_divide_fails_with_the_choices():
    with pytest.raises(ValueError, match=r"per_device_train_batch_size=3 .* 16 responses .* \[1, 2, 4, 8, 16\]"):
        tg.derive_batch(256, 8, 4, 32, 3)


def test_prompts_must_split_into_whole_prompt_mini_batches():
    with pytest.raises(ValueError, match="prompts_per_step=10 does not split into optimizer_updates_per_step=4"):
        tg.derive_batch(10, 8, 4, 1, 1)


# ---------------------------------------------------------------- recipes (dry run: no model, no data)

def dry_run(recipe, world, *extra):
    import transformers.training_args as ta

    check = ta.is_torch_bf16_gpu_available
    try:
        from io import StringIO
        from contextlib import redirect_stdout
        out = StringIO()
        with redirect_stdout(out):
            tg.main(["--config", os.path.join(RECIPES, recipe), "--dry_run", "--world_size", str(world), *extra])
        return json.loads(out.getvalue())
    finally:
        ta.is_torch_bf16_gpu_available = check


JUSTRL = {"learning_rate": 1e-6, "epsilon": 0.2, "epsilon_high": 0.28, "delta": 10.0, "beta": 0.0,
          "num_generations": 8, "temperature": 1.0, "top_p": 1.0, "weight_decay": 0.1, "max_grad_norm": 1.0,
          "max_completion_length": 15360, "loss_type": "dapo", "num_iterations": 1, "scale_rewards": "group",
          "lr_scheduler_type": "constant_with_warmup", "warmup_generation_steps": 10, "scheduler_per_generation": True,
          "prompts_per_step": 256, "optimizer_updates_per_step": 4, "use_vllm": True, "vllm_mode": "server"}
OPENRS = {"learning_rate": 1e-6, "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
          "warmup_steps": 0.1, "per_device_train_batch_size": 6, "gradient_accumulation_steps": 4,
          "num_generations": 6, "max_steps": 500, "save_steps": 50, "temperature": 0.7, "seed": 42,
          "reward_weights": [1.0, 2.0], "bf16": True}


@pytest.mark.parametrize("recipe, world, fields, script, model", [
    ("justrl.yaml", 32, dict(JUSTRL, max_steps=17520, gradient_accumulation_steps=8, steps_per_generation=32),
     {"reward_funcs": ["dapo"], "max_prompt_length": 1024, "dedup_prompts": False}, "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    ("justrl_nemotron.yaml", 16, dict(JUSTRL, max_steps=13760, gradient_accumulation_steps=16, steps_per_generation=64),
     {"reward_funcs": ["dapo"], "max_prompt_length": 1024}, "nvidia/OpenMath-Nemotron-1.5B"),
    ("justrl_overlong.yaml", 32, dict(JUSTRL, max_steps=12000, reward_weights=[1.0, 1.0]),
     {"reward_funcs": ["dapo", "overlong"]}, "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    ("justrl_overlong_robust.yaml", 32, dict(JUSTRL, max_steps=12000, reward_weights=[1.0, 1.0]),
     {"reward_funcs": ["robust", "overlong"]}, "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    ("openrs_exp1.yaml", 3, dict(OPENRS, max_completion_length=4096, beta=0.04, epsilon=0.2),
     {"reward_funcs": ["format", "accuracy"], "max_prompt_length": 512, "dataset_name": "knoveleng/open-s1"},
     "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    ("openrs_exp2.yaml", 3, dict(OPENRS, max_completion_length=3584),
     {"reward_funcs": ["format", "accuracy"], "max_prompt_length": 512, "dataset_name": "knoveleng/open-rs"},
     "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    ("openrs_exp3.yaml", 3, dict(OPENRS, max_completion_length=3584),
     {"reward_funcs": ["format", "cosine"], "reward_kwargs": {"cosine": {"max_len": 3584}}, "max_prompt_length": 512},
     "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    ("tiny.yaml", 2, {"gradient_accumulation_steps": 2, "steps_per_generation": 4, "use_cpu": True},
     {"prepare_assets": "tiny.ensure_tiny_assets", "prepare_kwargs": {"tiny_dir": ".cache/tiny"}}, ".cache/tiny/sft"),
])
def test_dry_run_prints_the_resolved_recipe(recipe, world, fields, script, model):
    config = dry_run(recipe, world)
    for key, value in fields.items():
        assert config["training_args"][key] == value, key
    for key, value in script.items():
        assert config["script_args"][key] == value, key
    assert config["model_args"]["model_name_or_path"] == model
    derived = config["derived"]
    assert derived["world_size"] == world
    assert derived["max_prompt_length"] == config["script_args"]["max_prompt_length"]
    assert derived["prompts_per_step"] * derived["rollouts_per_prompt"] == config["training_args"]["generation_batch_size"]


def test_openrs_step_is_twelve_prompts_of_six_generations_on_three_processes():
    derived = dry_run("openrs_exp1.yaml", 3)["derived"]
    assert (derived["prompts_per_step"], derived["rollouts_per_prompt"], derived["optimizer_updates_per_step"]) == (12, 6, 1)


def test_dry_run_refuses_a_cluster_shape_that_cannot_realise_the_paper_batch():
    with pytest.raises(ValueError, match="cannot be split over 24 training processes"):
        dry_run("justrl.yaml", 24)


def test_command_line_overrides_the_recipe():
    config = dry_run("justrl.yaml", 32, "--learning_rate", "2e-6", "--total_generation_steps", "10")
    assert config["training_args"]["learning_rate"] == 2e-6
    assert config["training_args"]["max_steps"] == 40


def test_unknown_recipe_key_fails_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: m\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        tg.main(["--config", str(bad), "--dry_run"])


def test_unknown_reward_fails_at_start_up_listing_known_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown reward 'dapo_strict'; known rewards: dapo, dapo_answer"):
        tg.main(["--config", os.path.join(RECIPES, "tiny.yaml"), "--reward_funcs", "dapo_strict",
                 "--reward_kwargs", "{}", "--dry_run"])


@pytest.mark.parametrize("flag, value", [("--entropy_coef", "0.01"), ("--use_adaptive_entropy", "true"),
                                         ("--loss_type", "grpo"), ("--top_entropy_quantile", "0.2")])
def test_trl_loss_options_policy_loss_does_not_implement_are_refused(flag, value):
    with pytest.raises(ValueError, match=flag.lstrip("-")):
        dry_run("justrl.yaml", 32, flag, value)


def test_explicit_trl_value_conflicting_with_paper_units_fails():
    with pytest.raises(ValueError, match="max_steps=5 conflicts with the value 17520"):
        dry_run("justrl.yaml", 32, "--max_steps", "5")


# ---------------------------------------------------------------- training on the tiny model (CPU)

def tiny_argv(assets, out, *extra):
    return ["--config", os.path.join(RECIPES, "tiny.yaml"), "--prepare_kwargs", json.dumps({"tiny_dir": os.path.dirname(assets["model"])}),
            "--output_dir", str(out),
            "--model_name_or_path", assets["model"], "--dataset_name", assets["train"], "--report_to", "none",
            "--heldout_file", assets["test"], *extra]


@pytest.mark.slow
def test_training_goes_through_policy_loss(tiny_assets, tmp_path, monkeypatch):
    """Replacing train_grpo.policy_loss changes training: with a zero loss (and no weight decay) nothing moves."""
    calls = []
    real = tg.policy_loss

    def zero_loss(logps, *args, **kwargs):
        calls.append(tuple(logps.shape))
        loss, fractions = real(logps, *args, **kwargs)
        return loss * 0.0, fractions

    monkeypatch.setattr(tg, "policy_loss", zero_loss)
    tg.main(tiny_argv(tiny_assets, tmp_path / "zero", "--total_generation_steps", "2", "--weight_decay", "0",
                      "--prompts_per_step", "4", "--per_device_train_batch_size", "16", "--heldout_file", "",
                      "--save_strategy", "no"))
    assert len(calls) == 4  # 2 generation steps x 2 updates, one micro-batch each
    from transformers import AutoModelForCausalLM
    before = AutoModelForCausalLM.from_pretrained(tiny_assets["model"]).state_dict()
    after = AutoModelForCausalLM.from_pretrained(str(tmp_path / "zero")).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a zero loss still changed the weights"


LEADING_ONE = '''
def leading_one(completions, **kwargs):
    """1.0 when the boxed answer starts with the digit 1."""
    return [1.0 if "\\\\boxed{1" in c[-1]["content"] else 0.0 for c in completions]
'''


@pytest.mark.slow
def test_grpo_learns_a_rewarded_behaviour(tiny_assets, tmp_path, monkeypatch):
    (tmp_path / "learn_rewards.py").write_text(LEADING_ONE)
    monkeypatch.syspath_prepend(str(tmp_path))
    summary = tg.main(tiny_argv(tiny_assets, tmp_path / "run", "--reward_funcs", "learn_rewards.leading_one",
                                "--reward_kwargs", "{}", "--learning_rate", "1e-3", "--total_generation_steps", "12",
                                "--save_strategy", "no", "--logging_steps", "1"))
    assert summary["global_step"] == 24
    rewards = summary["first_logged"]["reward"], summary["last_logged"]["reward"]
    # sums of two numbers in 10..99 start with 1 about half of the time; GRPO makes it (nearly) always
    assert rewards[0] < 0.7 and rewards[1] > 0.9, rewards


def run_tiny(out, assets, *extra):
    """train_grpo.py in a subprocess; its output goes to <out>.log (a pipe nobody reads would fill and block it)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, os.path.join(ROOT, "train_grpo.py"), *tiny_argv(assets, out, *extra)]
    log = open(f"{out}.log", "a")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def read_log(out):
    with open(f"{out}.log") as f:
        return f.read()


def data_order(out):
    steps = {}
    with open(os.path.join(out, "data_order", "rank0.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            steps[record["global_step"]] = record["row_ids"]  # a resumed run rewrites the steps it redoes
    return steps


@pytest.mark.slow
def test_resume_after_interruption_neither_skips_nor_repeats_a_prompt(tiny_assets, tmp_path):
    common = ("--total_generation_steps", "10", "--save_generation_steps", "2", "--prompts_per_step", "8",
              "--heldout_file", "", "--logging_steps", "1")
    straight = run_tiny(tmp_path / "straight", tiny_assets, *common)
    assert straight.wait(timeout=600) == 0, read_log(tmp_path / "straight")[-3000:]

    out = tmp_path / "interrupted"
    first = run_tiny(out, tiny_assets, *common)
    deadline = time.time() + 600
    while not (out / "checkpoint-8" / "trainer_state.json").exists():
        assert first.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / "checkpoint-20").exists()
    second = run_tiny(out, tiny_assets, *common)
    assert second.wait(timeout=600) == 0, read_log(out)[-3000:]
    log = read_log(out)
    assert "[resume] from" in log and "checkpoint-" in log
    expected, resumed = data_order(tmp_path / "straight"), data_order(out)
    assert resumed == expected
    seen = [row for step in sorted(resumed) for row in resumed[step]]
    assert len(seen) == len(set(seen)) == 10 * 8


@pytest.mark.slow
def test_two_process_tiny_recipe_raises_heldout_accuracy_by_ten_points(tiny_assets, tmp_path):
    """The demo's promise, shortened to 30 generation steps: 2 CPU processes, JustRL's reward and loss."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = ["accelerate", "launch", "--config_file", os.path.join(ROOT, "accelerate_configs", "cpu.yaml"),
           "--main_process_port", "29531", os.path.join(ROOT, "train_grpo.py"),
           *tiny_argv(tiny_assets, tmp_path / "ddp", "--total_generation_steps", "30", "--save_strategy", "no")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.load(open(tmp_path / "ddp" / "summary.json"))
    assert summary["global_step"] == 60
    assert summary["accuracy_after"] >= summary["accuracy_before"] + 0.10, summary
    assert summary["last_logged"]["reward"] > summary["first_logged"]["reward"], summary
    # the two processes generated for disjoint halves of every step's prompts
    r0, r1 = (data_order_rank(tmp_path / "ddp", r) for r in (0, 1))
    assert sorted(r0) == sorted(r1) and all(not set(r0[s]) & set(r1[s]) for s in r0)
    assert all(len(r0[s]) + len(r1[s]) == 32 for s in r0)


def data_order_rank(out, rank):
    with open(os.path.join(out, "data_order", f"rank{rank}.jsonl")) as f:
        return {json.loads(l)["global_step"]: json.loads(l)["row_ids"] for l in f}


@pytest.mark.slow
def test_zero3_on_two_cpu_processes_trains_checkpoints_and_resumes(tiny_assets, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = tmp_path / "z3"

    def launch(steps):
        cmd = ["accelerate", "launch", "--config_file", os.path.join(ROOT, "accelerate_configs", "zero3_cpu.yaml"),
               "--main_process_port", "29537", os.path.join(ROOT, "train_grpo.py"),
               *tiny_argv(tiny_assets, out, "--total_generation_steps", str(steps), "--save_generation_steps", "1",
                          "--prompts_per_step", "8", "--per_device_train_batch_size", "16",
                          "--heldout_file", tiny_assets["test"])]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout + done.stderr

    launch(2)
    shards = sorted(os.listdir(out / "checkpoint-4" / "global_step4"))
    assert shards == ["zero_pp_rank_0_mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                      "zero_pp_rank_1_mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    log = launch(3)
    assert "[resume] from" in log and "checkpoint-4" in log
    summary = json.load(open(out / "summary.json"))
    assert summary["global_step"] == 6
    # held-out generation ran with the partitioned parameters gathered: the warm-started model's accuracy
    assert summary["accuracy_before"] == pytest.approx(json.load(open(os.path.join(os.path.dirname(tiny_assets["model"]),
                                                                                   "done.json")))["sft_heldout_accuracy"], abs=0.03)
