"""reasonrl/trainer/packing.py and the trainer's use of it: micro-batches trimmed and grouped by length, the same gradient as the
unpacked update (TRL's shuffled, untrimmed micro-batches through this project's loss), and the logged token counts.
Equality with TRL's own loss: test_update_equals_trls_with_old_policy_logps_and_the_vllm_importance_weight
(tests/test_train_grpo.py)."""

import pytest
import torch

from reasonrl.trainer import packing


def masks(prompt_lengths, completion_lengths, prompt_width=5, completion_width=8):
    """Left-padded prompt masks and right-padded completion masks of the given lengths."""
    p = torch.tensor(prompt_lengths)[:, None] > torch.arange(prompt_width - 1, -1, -1)
    c = torch.arange(completion_width) < torch.tensor(completion_lengths)[:, None]
    return p.long(), c.long()


def batch(prompt_lengths, completion_lengths, prompt_width=5, completion_width=8):
    """A generation's rows: ids that number the row and column (row r, column j -> 100 r + j), masks, advantages."""
    n = len(completion_lengths)
    prompt_mask, completion_mask = masks(prompt_lengths, completion_lengths, prompt_width, completion_width)
    rows = 100 * torch.arange(n)[:, None]
    return {"prompt_ids": rows + torch.arange(prompt_width), "prompt_mask": prompt_mask,
            "completion_ids": rows + 50 + torch.arange(completion_width), "completion_mask": completion_mask,
            "old_per_token_logps": -(rows + torch.arange(completion_width)).float(),
            "advantages": torch.arange(n).float(), "num_items_in_batch": torch.tensor(float(sum(completion_lengths)))}


def split(b, size):
    return [{k: v[i:i + size] if v.dim() else v for k, v in b.items()} for i in range(0, len(b["advantages"]), size)]


# ---------------------------------------------------------------- pure functions, literal inputs

def test_trimmed_widths_are_the_longest_prompt_and_response_of_the_micro_batch():
    prompt_mask, completion_mask = masks([2, 3], [1, 4])
    assert packing.trimmed_widths(prompt_mask, completion_mask) == (3, 4)


def test_a_micro_batch_of_empty_completions_keeps_one_column():
    prompt_mask, completion_mask = masks([2, 1], [0, 0])
    assert packing.trimmed_widths(prompt_mask, completion_mask) == (2, 1)


def test_trim_cuts_prompts_on_the_left_and_per_token_values_on_the_right():
    mb = packing.trim_micro_batch(batch([2, 3], [1, 4]))
    assert mb["prompt_ids"].tolist() == [[2, 3, 4], [102, 103, 104]]
    assert mb["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert mb["completion_ids"].tolist() == [[50, 51, 52, 53], [150, 151, 152, 153]]
    assert mb["completion_mask"].tolist() == [[1, 0, 0, 0], [1, 1, 1, 1]]
    assert mb["old_per_token_logps"].tolist() == [[0, -1, -2, -3], [-100, -101, -102, -103]]
    assert mb["advantages"].tolist() == [0, 1] and mb["num_items_in_batch"].item() == 5


def test_a_sequence_level_importance_ratio_is_not_cut():
    b = dict(batch([2, 3], [1, 4]), importance_sampling_ratio=torch.tensor([[0.5], [2.0]]))
    assert packing.trim_micro_batch(b)["importance_sampling_ratio"].tolist() == [[0.5], [2.0]]


def test_token_counts_are_attended_tokens_and_rows_times_width():
    b = batch([2, 3], [1, 4])
    assert packing.token_counts(b) == (2 + 3 + 1 + 4, 2 * (5 + 8))
    assert packing.token_counts(packing.trim_micro_batch(b)) == (10, 2 * (3 + 4))


def test_group_by_length_puts_the_longest_responses_together():
    groups = packing.group_by_length([1, 1, 1, 1, 1, 1], [3, 8, 1, 5, 2, 7], 3)
    assert groups == [[1, 5], [3, 0], [4, 2]]  # responses 8, 7 | 5, 3 | 2, 1


def test_group_by_length_breaks_ties_by_prompt_length_then_order():
    assert packing.group_by_length([1, 4, 2, 4], [5, 5, 5, 5], 2) == [[1, 3], [2, 0]]


def test_group_by_length_refuses_an_update_that_does_not_split_evenly():
    with pytest.raises(ValueError, match="5 responses do not split into 2 equal micro-batches"):
        packing.group_by_length([1] * 5, [1] * 5, 2)


def test_regroup_update_keeps_the_responses_and_the_micro_batch_count_and_trims_each():
    # 6 responses of one update as TRL cut them (3 micro-batches of 2): lengths 3, 8 | 1, 5 | 2, 7
    b = batch([1, 2, 1, 3, 1, 1], [3, 8, 1, 5, 2, 7])
    out = packing.regroup_update(split(b, 2))
    assert [mb["advantages"].tolist() for mb in out] == [[1, 5], [3, 0], [4, 2]]
    assert [tuple(mb["completion_mask"].shape) for mb in out] == [(2, 8), (2, 5), (2, 2)]
    assert [tuple(mb["prompt_mask"].shape) for mb in out] == [(2, 2), (2, 3), (2, 1)]
    assert all(mb["num_items_in_batch"].item() == 26 for mb in out)
    assert sum(packing.token_counts(mb)[0] for mb in out) == packing.token_counts(b)[0] == 9 + 26
    # TRL's order computes 6 x (5 + 8) = 78 tokens; trimmed alone 2 x (2 + 8) + 2 x (3 + 5) + 2 x (1 + 7) = 52
    assert sum(packing.token_counts(mb)[1] for mb in split(b, 2)) == 78
    assert sum(packing.token_counts(packing.trim_micro_batch(mb))[1] for mb in split(b, 2)) == 52
    assert sum(packing.token_counts(mb)[1] for mb in out) == 2 * (2 + 8) + 2 * (3 + 5) + 2 * (1 + 2) == 42


def test_regroup_refuses_multimodal_batches_naming_the_recipe_key():
    b = dict(batch([1, 1], [1, 2]), pixel_values=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="pixel_values.*group_update_by_length: false"):
        packing.regroup_update(split(b, 1))


# ---------------------------------------------------------------- the trainer (tiny model, one process)

# One generation of 16 responses with long-tailed lengths, 2 updates of 4 micro-batches of 2 (TRL's shuffled order).
PROMPTS = [3, 2, 3, 1, 2, 3, 3, 2, 1, 3, 2, 3, 3, 1, 2, 3]
RESPONSES = [12, 2, 3, 1, 5, 2, 9, 1, 2, 4, 1, 3, 2, 6, 1, 2]


def generation():
    g = torch.Generator().manual_seed(0)
    prompt_mask, completion_mask = masks(PROMPTS, RESPONSES, 3, 12)
    return {"prompt_ids": torch.randint(3, 200, (16, 3), generator=g), "prompt_mask": prompt_mask,
            "completion_ids": torch.randint(3, 200, (16, 12), generator=g), "completion_mask": completion_mask,
            "advantages": torch.randn(16, generator=g), "num_items_in_batch": torch.tensor(float(sum(RESPONSES)))}


def packing_trainer(tokenizer, tmp_path, **config):
    from test_train_grpo import tiny_trainer

    trainer = tiny_trainer(tokenizer, tmp_path, gradient_accumulation_steps=4, steps_per_generation=8, **config)
    trainer._generate_and_score_completions = lambda inputs: generation()
    return trainer


@pytest.fixture
def no_shuffle(monkeypatch):
    """TRL's shuffle as the identity: micro-batch i holds rows 2i, 2i + 1 (the regrouping sees TRL's order)."""
    import trl.trainer.grpo_trainer as grpo

    monkeypatch.setattr(grpo, "shuffle_sequence_dict", lambda b: b)


def update_gradient(trainer, micro_batches):
    params = list(trainer.model.parameters())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 4
    loss = sum(trainer._compute_loss(trainer.model, mb) for mb in micro_batches)
    return torch.autograd.grad(loss, params)


def test_grouped_trimmed_update_equals_the_unpacked_update(tokenizer, tmp_path):
    """The first update's gradient over our 4 micro-batches (grouped by length, trimmed) equals the one over TRL's
    4 shuffled micro-batches padded to the generation's longest response, both through this trainer's loss."""
    from test_train_grpo import same_gradients

    trainer = packing_trainer(tokenizer, tmp_path)
    unpacked = split(generation(), 2)
    trainer._count_update_tokens(unpacked)
    ours = trainer._pack_updates(split(generation(), 2))
    trainer._count_update_tokens(ours)
    assert [mb["completion_mask"].size(1) for mb in ours[:4]] == [12, 5, 2, 1]  # 12, 9 | 5, 3 | 2, 2 | 1, 1
    assert ours[0]["update_num_tokens"].item() == unpacked[0]["update_num_tokens"].item() == 12 + 2 + 3 + 1 + 5 + 2 + 9 + 1
    assert same_gradients(update_gradient(trainer, ours[:4]), update_gradient(trainer, unpacked[:4]))


def test_logged_tokens_are_what_the_micro_batches_hold(tokenizer, tmp_path, no_shuffle):
    """Per update: real tokens (prompt + response), computed tokens (rows x trimmed width) and the padding fraction."""
    trainer = packing_trainer(tokenizer, tmp_path)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 4  # set by Trainer.train()
    for _ in range(8):
        trainer.training_step(trainer.model, [{}], None)
    logged = {k: trainer._metrics["train"][k] for k in ("tokens/real", "tokens/computed", "tokens/padding_fraction")}
    # update 0, rows 0-7: prompts 3+2+3+1+2+3+3+2 = 19, responses 35; micro-batches (rows 0, 6), (4, 2), (5, 1), (7, 3)
    # are 2 x (3 + 12), 2 x (3 + 5), 2 x (3 + 2), 2 x (2 + 1) = 30 + 16 + 10 + 6 = 62 computed tokens
    # update 1, rows 8-15: prompts 18, responses 21; (13, 9), (11, 12), (15, 8), (10, 14): 2 x (3 + 6), 2 x (3 + 3),
    # 2 x (3 + 2), 2 x (2 + 1) = 18 + 12 + 10 + 6 = 46 (TRL's order: 8 x (3 + 12) = 120 per update)
    assert logged == {"tokens/real": [54.0, 39.0], "tokens/computed": [62.0, 46.0],
                      "tokens/padding_fraction": pytest.approx([1 - 54 / 62, 1 - 39 / 46])}


def test_old_policy_and_reference_passes_run_trimmed_chunks_with_trls_log_probs(tokenizer, tmp_path):
    """TRL's generation-time pass (batch_size 2 over the 16 rows): chunks of similar length, trimmed; every response
    token gets the log-probability of TRL's untrimmed pass."""
    from trl import GRPOTrainer

    trainer = packing_trainer(tokenizer, tmp_path)
    g = generation()
    ids = torch.cat([g["prompt_ids"], g["completion_ids"]], 1)
    attention = torch.cat([g["prompt_mask"], g["completion_mask"]], 1)
    widths = []
    model_forward = trainer.model.forward
    trainer.model.forward = lambda input_ids, **kw: widths.append(input_ids.size(1)) or model_forward(input_ids, **kw)
    with torch.no_grad():
        ours = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, 12, batch_size=2)[0]
        trainer.model.forward = model_forward
        trl = GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, ids, attention, 12, batch_size=2)[0]
    mask = g["completion_mask"].bool()
    assert torch.allclose(ours[mask], trl[mask], atol=1e-5)
    assert (ours[~mask] == 0).all()
    # rows by response then prompt length, as group_by_length: (0, 6), (13, 4), (9, 2), (11, 5), (12, 15), (1, 8),
    # (7, 10), (14, 3); each chunk as wide as its longest prompt + longest response
    assert widths == [3 + 12, 2 + 6, 3 + 4, 3 + 3, 3 + 2, 2 + 2, 2 + 1, 2 + 1]


# ---------------------------------------------------------------- real runs: 2 processes, ZeRO-3 (tiny model)

# One generation of 8 prompts x 8 = 64 responses, 2 updates of 32: per process 16 per update, 2 micro-batches of 8;
# steps_per_generation 4 > accumulation 2, so TRL also runs the old policy's log-prob pass (ours: trimmed chunks).
# SGD: Adam's first step is ~lr x sign(gradient), which turns a rounding-level gradient into a full step.
RUN = ("--total_generation_steps", "1", "--prompts_per_step", "8", "--per_device_train_batch_size", "8",
       "--heldout_file", "", "--logging_steps", "1", "--warmup_generation_steps", "0", "--save_strategy", "no",
       "--optim", "sgd", "--learning_rate", "0.05", "--seed", "1")


def runs_both_ways(tmp_path, tiny_assets, accelerate_config, port):
    """The same 2-process run of this trainer unpacked (TRL's micro-batches: shuffled, untrimmed, untrimmed log-prob
    passes; PROBE_UNPACKED) and packed (grouped by length, trimmed)."""
    from test_train_grpo import launch_probe

    (tmp_path / "unpacked").mkdir(), (tmp_path / "packed").mkdir()
    return {"unpacked": launch_probe(tmp_path / "unpacked", tiny_assets, accelerate_config, port, *RUN,
                                     PROBE_UNPACKED="1"),
            "packed": launch_probe(tmp_path / "packed", tiny_assets, accelerate_config, port, *RUN)}


def same_weights_after(run_dir, other_run_dir, initial):
    """Per tensor, the weights two runs saved differ by at most 1e-5 x the largest change the update made, plus 4 ulps
    of the weight (a float32 weight of ~1 holds an update of ~5e-4 to only ~2e-4 relative)."""
    from transformers import AutoModelForCausalLM

    a, b, before = (AutoModelForCausalLM.from_pretrained(str(d)).state_dict() for d in (run_dir, other_run_dir, initial))
    eps = torch.finfo(torch.float32).eps
    return all(((a[k] - b[k]).abs() <= 1e-5 * (b[k] - before[k]).abs().max() + 4 * eps * b[k].abs()).all()
               for k in before)


@pytest.mark.slow
def test_two_processes_grouped_update_equals_the_unpacked_update_in_gradient_and_weights(tiny_assets, tmp_path):
    from test_train_grpo import same_gradients

    runs = runs_both_ways(tmp_path, tiny_assets, "cpu.yaml", 29561)
    unpacked, packed = runs["unpacked"][0], runs["packed"][0]
    names = sorted(unpacked["grads"])
    assert same_gradients([packed["grads"][n] for n in names], [unpacked["grads"][n] for n in names], rel=1e-5)
    assert same_weights_after(tmp_path / "packed" / "run", tmp_path / "unpacked" / "run", tiny_assets["model"])
    # TRL's micro-batches are as wide as the process's longest response; packed, their own longest, longest first
    widths = {k: [[mb["completion_mask"].size(1) for mb in r["micro_batches"]] for r in v] for k, v in runs.items()}
    assert all(w[0] == w[1] for w in widths["unpacked"]) and all(w[0] >= w[1] for w in widths["packed"])
    assert sum(map(sum, widths["packed"])) < sum(map(sum, widths["unpacked"])), widths


@pytest.mark.slow
def test_zero3_grouped_update_leaves_the_unpacked_updates_weights(tiny_assets, tmp_path):
    runs_both_ways(tmp_path, tiny_assets, "zero3_cpu.yaml", 29563)
    assert same_weights_after(tmp_path / "packed" / "run", tmp_path / "unpacked" / "run", tiny_assets["model"])


# ---------------------------------------------------------------- scripts/gpu_check.py

SMOKE = """
import runpy, sys
for name in ("trl", "datasets", "deepspeed", "vllm"):  # the GPU machine has torch, transformers, accelerate only
    sys.modules[name] = None
sys.argv = ["gpu_check.py", "--smoke"]
runpy.run_path("scripts/gpu_check.py", run_name="__main__")
"""


def test_gpu_check_smoke_mode_runs_on_the_cpu_without_trl():
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", SMOKE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    header, *cases = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert header["device"] == "cpu"
    assert [(c["response_cap"], c["micro_batch"]) for c in cases] == [(32, 1), (32, 2), (64, 1), (64, 2)]
    assert all(c["ours"]["computed_over_real"] < c["trl"]["computed_over_real"] for c in cases)
    assert all(c["ours"]["computed_over_real"] == 1.0 for c in cases if c["micro_batch"] == 1)
    assert all(c["fp32_gradient_max_rel_difference"] <= 1e-4 for c in cases)  # float32, summed in another order


def test_every_training_recipe_sets_the_grouping_explicitly_and_on():
    import os

    import yaml

    from conftest import ROOT

    folder = os.path.join(ROOT, "recipes")
    recipes = {f: yaml.safe_load(open(os.path.join(folder, f))) for f in sorted(os.listdir(folder)) if f.endswith(".yaml")}
    training = {f: r for f, r in recipes.items() if "per_device_train_batch_size" in r}
    assert len(training) == 15 and all(r.get("group_update_by_length") is True for r in training.values())
