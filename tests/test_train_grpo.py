"""train_grpo.py: the policy loss, batch arithmetic, recipes and real CPU training runs (reasonrl/run/data.py: tests/test_data.py)."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
import train_grpo as tg
from reasonrl.run.config import JustRLConfig
from reasonrl.run.plan import NONFINITE_KEY, derive_batch, precision_plan
from reasonrl.trainer.loss import policy_loss
from reasonrl.trainer.trainer import ClipHigherGRPOTrainer, check_text_only, loss_mask

RECIPES = os.path.join(ROOT, "recipes")


# ---------------------------------------------------------------- policy loss

def verl_policy_loss(old_log_prob, log_prob, advantages, response_mask, clip_low, clip_high, clip_ratio_c):
    """veRL's vanilla PPO policy loss with dual clip and token-mean aggregation, written out as veRL states it (with
    the [-20, 20] log-ratio clamp of later veRL versions; JustRL's veRL 0.4 fork has none, the same at these ratios)."""
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
    loss, _ = policy_loss(logps, old, adv, mask, 0.2, 0.28, 10.0)
    # per token: -1.1, -1.28 (clipped at 1 + 0.28), 0.8 (clipped at 1 - 0.2), 2.0, 10.0 (dual clip c)
    assert loss.item() == pytest.approx((-1.1 - 1.28 + 0.8 + 2.0 + 10.0) / 5, abs=1e-6)
    loss.backward()
    # d(-A r)/d logp = -A r where unclipped; 0 in every clipped region
    assert logps.grad.flatten().tolist() == pytest.approx([-1.1 / 5, 0.0, 0.0, 2.0 / 5, 0.0], abs=1e-6)


def test_policy_loss_reports_fraction_clipped_low_high_and_dual():
    logps, old, adv, mask = five_regions()
    _, fractions = policy_loss(logps, old, adv, mask, 0.2, 0.28, 10.0)
    assert {k: (n / d).item() for k, (n, d) in fractions.items()} == pytest.approx(
        {"clip_ratio/low": 0.2, "clip_ratio/high": 0.2, "clip_ratio/dual": 0.2})


def test_policy_loss_without_dual_clip_leaves_large_ratios_unbounded():
    logps, old, adv, mask = five_regions()
    loss, fractions = policy_loss(logps, old, adv, mask, 0.2, 0.28, None)
    assert loss.item() == pytest.approx((-1.1 - 1.28 + 0.8 + 2.0 + 20.0) / 5, abs=1e-5)
    assert fractions["clip_ratio/dual"][0].item() == 0


def test_policy_loss_matches_verl_in_value_and_gradient_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(6, 9, generator=g)
    new = (old + 0.6 * torch.randn(6, 9, generator=g)).requires_grad_()
    new_ref = new.detach().clone().requires_grad_()
    adv = torch.randn(6, generator=g)
    mask = (torch.rand(6, 9, generator=g) > 0.3).float()
    ours, _ = policy_loss(new, old, adv, mask, 0.2, 0.28, 3.0)
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
    ours, _ = policy_loss(new, old, adv, torch.ones(8, 5), 0.2, 0.28, 10.0)
    assert ours.item() == pytest.approx(trl.mean().item(), rel=1e-6)


def test_policy_loss_ignores_masked_tokens():
    logps = torch.log(torch.tensor([[1.1, 50.0]]))
    loss, _ = policy_loss(logps, torch.zeros(1, 2), torch.tensor([1.0]), torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(-1.1)


def test_policy_loss_divides_by_the_global_token_count_when_given():
    logps = torch.log(torch.tensor([[1.1, 1.1]]))
    loss, _ = policy_loss(logps, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2),
                             num_tokens=torch.tensor(8.0))
    assert loss.item() == pytest.approx(-2.2 / 8)


def test_policy_loss_scales_each_token_by_its_importance_weight():
    logps = torch.log(torch.tensor([[1.1, 1.1]]))
    loss, _ = policy_loss(logps, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2),
                             token_weights=torch.tensor([[0.5, 1.0]]))
    assert loss.item() == pytest.approx(-(0.55 + 1.1) / 2)


def test_seq_mean_averages_sequence_means_instead_of_tokens():
    logps = torch.zeros(2, 3)  # ratio 1 everywhere: per-token loss = -A
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    token_mean, _ = policy_loss(logps, logps, adv, mask)
    seq_mean, _ = policy_loss(logps, logps, adv, mask, seq_mean=True)
    assert token_mean.item() == pytest.approx((-3 + 1) / 4)
    assert seq_mean.item() == pytest.approx((-1 + 1) / 2)


def test_kl_penalty_is_added_per_token_inside_each_sequence_mean():
    logps = torch.zeros(2, 3)  # ratio 1: policy term -A per token
    ref = torch.tensor([[math.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0]])  # KL = 2 - ln 2 - 1 on one token, 0 elsewhere
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    loss, stats = policy_loss(logps, logps, torch.tensor([1.0, -1.0]), mask, seq_mean=True, ref_logps=ref, beta=0.5)
    kl = 1 - math.log(2.0)
    assert loss.item() == pytest.approx(((-3 + 0.5 * kl) / 3 + 1.0) / 2)
    assert (stats["kl"][0] / stats["kl"][1]).item() == pytest.approx(kl / 4)


# ---------------------------------------------------------------- the trainer's loss, normaliser, decay (tiny model)

def tiny_trainer(tokenizer, tmp_path, **config):
    """A ClipHigherGRPOTrainer on a fresh tiny model (saved to disk: TRL loads the KL reference model from a path)."""
    from reasonrl.demo import tiny
    from datasets import Dataset

    path = str(tmp_path / "model")
    tiny.build_model(tokenizer).save_pretrained(path)
    config = {"num_generations": 2, "per_device_train_batch_size": 2, "max_completion_length": 4,
              "epsilon_high": 0.28, "bf16": False, **config}
    args = JustRLConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", **config)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "What is 1 + 1?"}]}] * 8)
    return ClipHigherGRPOTrainer(model=path, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                                    args=args, train_dataset=data, processing_class=tokenizer)


def literal_batch(n=8):
    """n responses of 4 completion tokens after a 3-token prompt, unequal lengths, mixed advantages."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([4, 1, 3, 2, 4, 2, 1, 3][:n])
    return {"prompt_ids": torch.randint(3, 200, (n, 3), generator=g), "prompt_mask": torch.ones(n, 3, dtype=torch.long),
            "completion_ids": torch.randint(3, 200, (n, 4), generator=g),
            "completion_mask": (torch.arange(4) < lengths[:, None]).long(),
            "advantages": torch.tensor([1.0, -0.5, 0.25, -1.0, 0.5, -0.25, 1.5, -1.5][:n]),
            "ref_per_token_logps": -6.0 + torch.rand(n, 4, generator=g)}


def micro_batches(batch, size, **extra):
    return [{**{k: v[i:i + size] for k, v in batch.items()}, **extra} for i in range(0, len(batch["advantages"]), size)]


def completion_logps(trainer, batch):
    """Per-token log-probabilities of the completions under the trainer's model (TRL's own routine)."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    return trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, 4)[0]


def same_gradients(got, want, rel=1e-5):
    """Equal up to float rounding: per tensor, max |difference| <= rel x max |value|."""
    return all((a - b).abs().max() <= rel * b.abs().max() for a, b in zip(got, want, strict=True))


def test_openrs_loss_is_the_mean_over_sequences_of_policy_plus_kl_at_any_accumulation(tokenizer, tmp_path):
    """Open-RS (seq_mean_loss, beta 0.04), 8 responses as 4 accumulated micro-batches of 2: the update's loss and
    gradient are TRL's GRPO loss of early 2025 over all 8, mean_seq(mean_tok(-A r + beta KL))."""
    trainer = tiny_trainer(tokenizer, tmp_path, beta=0.04, seq_mean_loss=True, epsilon_high=0.2, delta=None,
                           use_bias_correction_kl=False, gradient_accumulation_steps=4)
    batch, params = literal_batch(), list(trainer.model.parameters())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 4
    total = sum(trainer._compute_loss(trainer.model, mb) for mb in
                micro_batches(batch, 2, num_items_in_batch=torch.tensor(20.0), update_num_tokens=torch.tensor(20.0)))
    got = torch.autograd.grad(total, params)

    logps, ref, mask = completion_logps(trainer, batch), batch["ref_per_token_logps"], batch["completion_mask"]
    kl = torch.exp(ref - logps) - (ref - logps) - 1
    per_token = -torch.exp(logps - logps.detach()) * batch["advantages"][:, None] + 0.04 * kl
    expected = ((per_token * mask).sum(1) / mask.sum(1)).mean()
    want = torch.autograd.grad(expected, params)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert same_gradients(got, want)


def test_each_micro_batch_carries_the_token_count_of_its_optimizer_update(tokenizer, tmp_path):
    """Two updates of two micro-batches each: micro-batches 0, 1 -> update 0; 2, 3 -> update 1."""
    trainer = tiny_trainer(tokenizer, tmp_path, gradient_accumulation_steps=2, steps_per_generation=4)
    masks = [torch.tensor([[1, 1, 0], [1, 0, 0]]), torch.tensor([[1, 1, 1], [1, 1, 1]]),
             torch.tensor([[1, 0, 0], [0, 0, 0]]), torch.tensor([[1, 1, 0], [1, 1, 1]])]
    batches = [{"prompt_mask": torch.ones(2, 1), "completion_mask": m} for m in masks]
    trainer._count_update_tokens(batches)
    assert [b["update_num_tokens"].item() for b in batches] == [9.0, 9.0, 6.0, 6.0]


def test_update_token_counts_take_one_all_reduce_per_generation_and_hold_over_its_iterations(tokenizer, tmp_path):
    """num_iterations 2: each generation's 4 micro-batches are used twice; every micro-batch carries its update's
    count (the sum over the update's 2 micro-batches), counted once per generation."""
    trainer = tiny_trainer(tokenizer, tmp_path, gradient_accumulation_steps=2, steps_per_generation=4, num_iterations=2)
    batch = literal_batch(8)  # 2 responses per micro-batch x 4
    generations, reduces = [], []
    trainer._generate_and_score_completions = lambda inputs: generations.append(1) or dict(batch)
    reduce = trainer.accelerator.reduce
    trainer.accelerator.reduce = lambda tensor, **kw: reduces.append(1) or reduce(tensor, **kw)
    trainer.model.train()
    seen = []
    for step in range(16):  # 2 generations x 2 iterations x 4 micro-batches
        trainer._step = step
        inputs = trainer._prepare_inputs(None)
        seen.append((inputs["completion_mask"].sum().item(), inputs["update_num_tokens"].item()))
    assert len(generations) == len(reduces) == 2
    assert all(a[1] == b[1] == a[0] + b[0] for a, b in zip(seen[::2], seen[1::2]))
    assert seen[:4] == seen[4:8] and seen[8:12] == seen[12:16]  # the second iteration reuses the first's split
    assert sum(t for t, _ in seen[:4]) == sum(t for t, _ in seen[8:12]) == 20  # all 8 responses, 4+1+3+2+4+2+1+3


def test_update_loss_is_the_token_mean_over_the_update_not_over_the_average_update(tokenizer, tmp_path):
    """A generation of two updates of 2 micro-batches, 10 and 16 tokens: the first update's gradient is that of
    sum(l) / 10 (TRL's "dapo" normaliser divides by the average update's 13)."""
    trainer = tiny_trainer(tokenizer, tmp_path, gradient_accumulation_steps=2, steps_per_generation=4)
    batch, params = literal_batch(4), list(trainer.model.parameters())
    later = dict(literal_batch(4), completion_mask=torch.ones(4, 4, dtype=torch.long))
    parts = micro_batches(batch, 2, num_items_in_batch=torch.tensor(26.0))
    trainer._count_update_tokens(parts + micro_batches(later, 2))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2
    got = torch.autograd.grad(sum(trainer._compute_loss(trainer.model, mb) for mb in parts), params)
    logps, mask = completion_logps(trainer, batch), batch["completion_mask"]
    per_token = -torch.exp(logps - logps.detach()) * batch["advantages"][:, None]
    want = torch.autograd.grad((per_token * mask).sum() / 10.0, params)
    assert same_gradients(got, want)


def test_eval_loss_is_the_token_mean_of_the_eval_batch(tokenizer, tmp_path):
    trainer = tiny_trainer(tokenizer, tmp_path)
    batch = literal_batch(4)
    trainer.model.eval()
    mask = batch["completion_mask"]
    with torch.no_grad():
        loss = trainer._compute_loss(trainer.model, dict(batch, num_items_in_batch=mask.sum()))
    assert loss.item() == pytest.approx((-batch["advantages"][:, None] * mask).sum().item() / mask.sum().item())


# ---------------------------------------------------------------- TRL inputs the loss honours or refuses (issue 20)

def trl_and_ours(trainer, batch):
    """(loss, gradient) of TRL 1.16's own GRPOTrainer._compute_loss and of ours on one micro-batch, training mode. One
    micro-batch per update and delta=None: there TRL's "dapo" normaliser is the update's token count, as ours."""
    from trl import GRPOTrainer

    params = list(trainer.model.parameters())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    results = []
    for compute_loss in (GRPOTrainer._compute_loss, type(trainer)._compute_loss):
        loss = compute_loss(trainer, trainer.model, dict(batch))
        results.append((loss.item(), torch.autograd.grad(loss, params)))
    return results


def test_tool_outputs_are_masked_out_of_the_loss_as_trl_does(tokenizer, tmp_path):
    """tool_mask 0 marks tool-output tokens: TRL trains only on the model's own tokens; so does this loss."""
    trainer = tiny_trainer(tokenizer, tmp_path, delta=None)
    batch = literal_batch(4)  # completion lengths 4, 1, 3, 2
    tool_mask = torch.tensor([[1, 0, 0, 1], [1, 1, 1, 1], [1, 0, 1, 1], [1, 1, 1, 1]])
    counted = (batch["completion_mask"] * tool_mask).sum()  # 2 + 1 + 2 + 2
    assert counted.item() == 7
    batch.update(tool_mask=tool_mask, num_items_in_batch=counted, update_num_tokens=counted)
    (trl_loss, trl_grad), (loss, grad) = trl_and_ours(trainer, batch)
    assert loss == pytest.approx(trl_loss, rel=1e-6)
    assert same_gradients(grad, trl_grad)
    unmasked = dict(batch, tool_mask=torch.ones(4, 4, dtype=torch.long))
    assert trainer._compute_loss(trainer.model, unmasked).item() != pytest.approx(loss, rel=1e-3)  # the mask matters


# Old-policy ratios r = pi / pi_old per token, rows as literal_batch's (lengths 4, 1, 3, 2, 4, 2, 1, 3; advantages
# 1, -0.5, 0.25, -1, 0.5, -0.25, 1.5, -1.5). With eps 0.2 / 0.28 and delta 10, A > 0: 1.5, 1.3, 2.0, 1.4, 3.0 are
# clipped high, 0.5, 0.7 are not clipped; A < 0: 0.5, 0.75, 0.6 are clipped low, 20, 12, 11 dual-clipped at 10.
OLD_POLICY_RATIOS = [[1.1, 1.5, 0.5, 1.0], [20.0, 1.0, 1.0, 1.0], [1.3, 0.9, 2.0, 1.0], [0.5, 2.0, 1.0, 1.0],
                     [0.7, 1.2, 1.4, 3.0], [12.0, 0.75, 1.0, 1.0], [0.95, 1.0, 1.0, 1.0], [1.5, 0.6, 11.0, 1.0]]
# The vLLM importance-sampling weight in TRL's two shapes, as each of its modes leaves it (clip_max 3, clip_min
# None): per token (B, T), or one per sequence (B, 1); truncated at 3, or 0 where the mask drops it.
IS_WEIGHTS = {
    "token_truncate": [[0.9, 3.0, 1.2, 1.0], [0.4, 1.0, 1.0, 1.0], [1.1, 3.0, 0.8, 1.0], [2.5, 0.7, 1.0, 1.0],
                       [1.0, 0.6, 3.0, 1.3], [0.9, 1.6, 1.0, 1.0], [3.0, 1.0, 1.0, 1.0], [0.5, 1.2, 2.2, 1.0]],
    "token_mask": [[0.9, 0.0, 1.2, 1.0], [0.4, 1.0, 1.0, 1.0], [1.1, 0.0, 0.8, 1.0], [2.5, 0.7, 1.0, 1.0],
                   [1.0, 0.6, 0.0, 1.3], [0.9, 1.6, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0], [0.5, 1.2, 2.2, 1.0]],
    "sequence_truncate": [[0.9], [3.0], [1.4], [0.6], [3.0], [1.1], [0.3], [2.0]],
    "sequence_mask": [[0.9], [0.0], [1.4], [0.6], [0.0], [1.1], [0.3], [2.0]]}


@pytest.mark.parametrize("mode", list(IS_WEIGHTS))
def test_update_equals_trls_with_old_policy_logps_and_the_vllm_importance_weight(tokenizer, tmp_path, mode):
    """JustRL's clip (eps 0.2 / 0.28, delta 10), one optimizer update per generation (2 micro-batches of 4; there
    TRL's "dapo" normaliser is the update's token count, as ours), old-policy log-probs at OLD_POLICY_RATIOS from the
    current ones (every clip region binds somewhere) and TRL's vLLM importance weight in `mode`'s shape: the update's
    loss and gradient from this trainer (packed micro-batches, policy_loss) equal TRL 1.16's GRPOTrainer._compute_loss
    on TRL's own micro-batches, to float32 rounding."""
    from trl import GRPOTrainer

    trainer = tiny_trainer(tokenizer, tmp_path, delta=10.0, gradient_accumulation_steps=2, steps_per_generation=2,
                           vllm_importance_sampling_mode=mode)
    trainer.use_vllm = True  # as a trainer generating with vLLM (building one needs vLLM); the loss reads this flag
    assert trainer.vllm_importance_sampling_correction  # TRL's default
    batch, params = literal_batch(), list(trainer.model.parameters())
    with torch.no_grad():
        old = completion_logps(trainer, batch) - torch.log(torch.tensor(OLD_POLICY_RATIOS))
    batch.update(old_per_token_logps=old, importance_sampling_ratio=torch.tensor(IS_WEIGHTS[mode]))
    del batch["ref_per_token_logps"]  # beta 0, as JustRL
    trl_parts = micro_batches(batch, 4, num_items_in_batch=batch["completion_mask"].sum())
    ours = trainer._pack_updates([dict(mb) for mb in trl_parts])
    trainer._count_update_tokens(ours)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2
    results = []
    for compute_loss, parts in ((GRPOTrainer._compute_loss, trl_parts), (type(trainer)._compute_loss, ours)):
        loss = sum(compute_loss(trainer, trainer.model, mb) for mb in parts)
        results.append((loss, torch.autograd.grad(loss, params)))
    (trl_loss, trl_grad), (loss, grad) = results
    torch.testing.assert_close(loss, trl_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, trl_grad, rtol=1e-6, atol=1e-6)
    clipped = {k: sum(trainer._metrics["train"][f"clip_ratio/{k}"]) for k in ("low", "high", "dual")}  # ours
    assert all(v > 0 for v in clipped.values()), clipped  # the low, high and dual clips all bound


def test_update_token_counts_leave_out_tool_outputs():
    """An update's token count is TRL's loss mask, completion_mask x tool_mask: 2 + 3 of 9 response tokens here."""
    batches = [{"prompt_mask": torch.ones(2, 1), "completion_mask": torch.tensor([[1, 1, 0], [1, 0, 0]]),
                "tool_mask": torch.tensor([[1, 0, 1], [1, 1, 1]])},
               {"prompt_mask": torch.ones(2, 1), "completion_mask": torch.tensor([[1, 1, 1], [1, 1, 1]]),
                "tool_mask": torch.tensor([[1, 0, 0], [0, 1, 1]])}]
    assert [loss_mask(b).sum().item() for b in batches] == [2, 3]


def tiny_moe_trainer(tokenizer, tmp_path, coef, **config):
    """tiny_trainer's setup on a 2-layer Mixture-of-Experts model (4 experts, top 2) whose config sets
    router_aux_loss_coef, as Qwen3-MoE's does."""
    from datasets import Dataset
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    path = str(tmp_path / "moe")
    Qwen3MoeForCausalLM(Qwen3MoeConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=32, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, num_experts=4, num_experts_per_tok=2,
        router_aux_loss_coef=coef, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True)).save_pretrained(path)
    args = JustRLConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", num_generations=2,
                           per_device_train_batch_size=2, max_completion_length=4, bf16=False, delta=None, **config)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "What is 1 + 1?"}]}] * 8)
    return ClipHigherGRPOTrainer(model=path, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                                    args=args, train_dataset=data, processing_class=tokenizer)


def test_a_moe_model_adds_the_router_load_balancing_loss_as_trl_does(tokenizer, tmp_path):
    """router_aux_loss_coef 0.5 from the model's config: the loss is TRL's, policy loss + 0.5 x the router's
    load-balancing loss, in value and gradient (the router weights get a gradient from it)."""
    trainer = tiny_moe_trainer(tokenizer, tmp_path, coef=0.5)
    assert trainer.aux_loss_enabled and trainer.router_aux_loss_coef == 0.5
    batch = literal_batch(4)
    count = batch["completion_mask"].sum()
    batch.update(num_items_in_batch=count, update_num_tokens=count)
    (trl_loss, trl_grad), (loss, grad) = trl_and_ours(trainer, batch)
    assert loss == pytest.approx(trl_loss, rel=1e-6)
    assert same_gradients(grad, trl_grad)
    trainer.aux_loss_enabled = False
    without = trainer._compute_loss(trainer.model, dict(batch)).item()
    assert loss - without > 0.5  # the load-balancing loss is >= 1 (top-2 of 4 experts): 0.5 x it is in the loss
    assert trainer._metrics["train"]["aux_loss"][-1] == pytest.approx((loss - without) / 0.5, rel=1e-4)


def test_a_vision_language_processor_is_refused_before_the_model_loads(tokenizer, tmp_path):
    from transformers import CLIPImageProcessor, LlavaProcessor

    processor = LlavaProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
    args = JustRLConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", num_generations=2,
                           per_device_train_batch_size=2)
    with pytest.raises(ValueError, match="processing_class: LlavaProcessor is a multimodal processor.*"
                                         "Give the model's tokenizer"):
        ClipHigherGRPOTrainer(model=str(tmp_path / "no-model"), reward_funcs=[], args=args, train_dataset=None,
                                 processing_class=processor)


def test_a_dataset_with_an_image_column_is_refused_naming_the_column():
    from datasets import Dataset

    images = Dataset.from_list([{"prompt": "What is in the picture?", "image": "cat.png"}])
    with pytest.raises(ValueError, match="dataset column 'image': train_grpo.py trains on text only"):
        check_text_only(None, images)


def test_num_iterations_scales_every_generation_step_unit(tmp_path):
    """2 mini-batches x 2 passes (num_iterations, veRL's ppo_epochs): a generation step is 4 optimizer updates."""
    args = JustRLConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", num_generations=2,
                           per_device_train_batch_size=2, prompts_per_step=4, optimizer_updates_per_step=2,
                           num_iterations=2, total_generation_steps=3, save_generation_steps=1, warmup_generation_steps=1)
    assert args.updates_per_generation_step == 4
    assert (args.gradient_accumulation_steps, args.steps_per_generation) == (2, 4)  # 8 responses: 2 updates of 2 x 2
    assert (args.max_steps, args.save_steps, args.warmup_steps) == (12, 4, 4)


def test_the_lr_is_held_over_all_updates_of_a_generation_step_with_num_iterations(tokenizer, tmp_path):
    """veRL steps its scheduler once per generation step: linear, 2 warm-up of 4 generation steps, each 4 updates."""
    trainer = tiny_trainer(tokenizer, tmp_path, prompts_per_step=2, optimizer_updates_per_step=2, num_iterations=2,
                           total_generation_steps=4, warmup_generation_steps=2, scheduler_per_generation=True,
                           lr_scheduler_type="linear", learning_rate=1.0)
    trainer.create_optimizer_and_scheduler(trainer.args.max_steps)
    lrs = []
    for _ in range(trainer.args.max_steps):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert lrs == [0.0] * 4 + [0.5] * 4 + [1.0] * 4 + [0.5] * 4


def test_dry_run_shows_the_updates_of_a_generation_step_with_num_iterations():
    config = dry_run("tiny.yaml", 2, "--num_iterations", "2")
    assert config["derived"]["optimizer_updates_per_generation_step"] == 4
    assert (config["training_args"]["max_steps"], config["training_args"]["save_steps"]) == (800, 200)


def decay_groups(trainer):
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    groups = trainer.create_optimizer().param_groups
    return {g["weight_decay"]: sorted(names[id(p)] for p in g["params"]) for g in groups}


def test_weight_decay_all_params_decays_biases_and_norm_weights_too(tokenizer, tmp_path):
    trainer = tiny_trainer(tokenizer, tmp_path, weight_decay=0.1, weight_decay_all_params=True)
    groups = decay_groups(trainer)
    assert groups[0.1] == sorted(n for n, _ in trainer.model.named_parameters()) and groups[0.0] == []
    assert "model.layers.0.self_attn.q_proj.bias" in groups[0.1] and "model.norm.weight" in groups[0.1]


def test_default_weight_decay_exempts_biases_and_norm_weights_as_the_trainer_does(tokenizer, tmp_path):
    trainer = tiny_trainer(tokenizer, tmp_path, weight_decay=0.1)
    exempt = decay_groups(trainer)[0.0]
    assert exempt == sorted(n for n, _ in trainer.model.named_parameters() if n.endswith("bias") or "norm" in n)
    assert "model.norm.weight" in exempt and "model.layers.1.mlp.up_proj.weight" not in exempt


@pytest.mark.parametrize("recipe, decay_all", [("justrl.yaml", True), ("justrl_nemotron.yaml", True),
                                               ("justrl_overlong.yaml", True), ("justrl_overlong_robust.yaml", True),
                                               ("openrs_exp1.yaml", False), ("acereason_math_8k.yaml", False),
                                               ("tiny.yaml", False)])
def test_justrl_recipes_decay_every_parameter_as_verl_does(recipe, decay_all):
    config = dry_run(recipe, 32 if recipe.startswith("justrl") else 2)
    assert config["training_args"]["weight_decay_all_params"] is decay_all
    assert config["derived"]["weight_decay"]["decayed_parameters"].startswith("every parameter" if decay_all else "all but")


# ---------------------------------------------------------------- master weights

def test_a_bf16_recipe_without_deepspeed_loads_fp32_weights_and_computes_under_bf16_autocast():
    assert precision_plan("bfloat16", bf16=True, zero_stage=None) == {
        "load_dtype": "float32", "compute": "bf16 autocast",
        "master_weights": "the model's weights, loaded in float32 (not bfloat16)"}


@pytest.mark.parametrize("stage", [2, 3])
def test_under_deepspeed_a_bf16_recipe_loads_bf16_and_deepspeed_keeps_the_fp32_master(stage):
    assert precision_plan("bfloat16", bf16=True, zero_stage=stage) == {
        "load_dtype": "bfloat16", "compute": "bf16 (DeepSpeed casts the model)",
        "master_weights": f"fp32 copy in DeepSpeed's ZeRO-{stage} optimizer"}


@pytest.mark.parametrize("stage", [None, 3])
def test_bf16_weights_without_any_fp32_copy_are_refused_naming_the_fix(stage):
    with pytest.raises(ValueError, match=r"dtype: bfloat16 with bf16: false keeps no fp32 copy.*Set bf16: true"):
        precision_plan("bfloat16", bf16=False, zero_stage=stage)


def test_dry_run_shows_where_the_master_weights_live_for_each_launch_mode():
    precision = dry_run("justrl.yaml", 32)["derived"]["precision"]
    assert [p["master_weights"] for p in precision.values()] == [
        "the model's weights, loaded in float32 (not bfloat16)", "fp32 copy in DeepSpeed's ZeRO-2 optimizer",
        "fp32 copy in DeepSpeed's ZeRO-3 optimizer"]
    assert precision["no DeepSpeed: one process, ddp.yaml, cpu.yaml"]["load_dtype"] == "float32"


def adamw_update(model, autocast, lr=1e-6):
    """One AdamW step of lr on a fixed next-token loss; the change of every weight, in fp32."""
    before = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    ids = torch.arange(3, 35).reshape(2, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0).step()
    return torch.cat([(p.detach().float() - before[n]).flatten() for n, p in model.named_parameters()])


def test_a_1e_6_update_of_a_bf16_recipe_lands_in_fp32_master_weights(tokenizer, tmp_path):
    """JustRL's lr 1e-6 on one process: the weights the plan loads (fp32, bf16 autocast) take the same update as
    pure fp32 training; bf16 weights updated in place (the recipe's dtype, loaded as it says) lose nearly all of it."""
    from reasonrl.demo import tiny
    from transformers import AutoModelForCausalLM

    tiny.build_model(tokenizer).save_pretrained(tmp_path / "m")
    plan = precision_plan("bfloat16", bf16=True, zero_stage=None)

    def load(dtype):
        return AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=getattr(torch, dtype))

    fp32 = adamw_update(load("float32"), autocast=False)
    planned = adamw_update(load(plan["load_dtype"]), autocast=True)
    in_place = adamw_update(load("bfloat16"), autocast=True)
    # Adam's first step moves every weight with a gradient by ~lr (|g| >> eps)
    assert (fp32.abs() > 0.5e-6).float().mean() > 0.95
    assert ((planned - fp32).abs() < 1e-8).float().mean() > 0.95  # the few exceptions: gradient signs bf16 flips
    assert ((in_place - fp32).abs() < 1e-8).float().mean() < 0.05
    assert (in_place != 0).float().mean() < 0.05  # rounded away


# ---------------------------------------------------------------- batch arithmetic

@pytest.mark.parametrize("world, accumulation, steps_per_generation", [(1, 256, 1024), (8, 32, 128), (32, 8, 32),
                                                                      (64, 4, 16), (256, 1, 4)])
def test_justrl_batch_on_several_world_sizes(world, accumulation, steps_per_generation):
    b = derive_batch(256, 8, 4, world, 2)
    assert (b["gradient_accumulation_steps"], b["steps_per_generation"]) == (accumulation, steps_per_generation)
    assert (b["responses_per_step"], b["responses_per_update"], b["generation_batch_size"]) == (2048, 512, 2048)
    # TRL's identities: an update is per-device x world x accumulation; a generation is steps_per_generation micro-steps
    assert 2 * world * accumulation == 512 and 2 * world * steps_per_generation == 2048


def test_world_size_that_cannot_split_an_update_fails_with_the_sizes_that_can():
    with pytest.raises(ValueError, match=r"512 responses per optimizer update cannot be split over 24 training "
                                         r"processes.*\[1, 2, 4, 8, 16, 32, 64, 128, 256, 512\]"):
        derive_batch(256, 8, 4, 24, 2)


def test_micro_batch_that_does_not_divide_fails_with_the_choices():
    with pytest.raises(ValueError, match=r"per_device_train_batch_size=3 .* 16 responses .* \[1, 2, 4, 8, 16\]"):
        derive_batch(256, 8, 4, 32, 3)


def test_prompts_must_split_into_whole_prompt_mini_batches():
    with pytest.raises(ValueError, match="prompts_per_step=10 does not split into optimizer_updates_per_step=4"):
        derive_batch(10, 8, 4, 1, 1)


def test_an_update_that_would_span_two_generations_is_refused(tmp_path):
    with pytest.raises(ValueError, match="steps_per_generation=3 is not a multiple of gradient_accumulation_steps=2"):
        JustRLConfig(output_dir=str(tmp_path), use_cpu=True, num_generations=2, per_device_train_batch_size=2,
                        gradient_accumulation_steps=2, steps_per_generation=3)


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



def test_dry_run_leaves_transformers_bf16_check_as_it_found_it(capsys):
    """The dry run takes this machine for a bf16 GPU while it plans, and only then (plan.bf16_gpu_assumed)."""
    import transformers.training_args as ta

    check = ta.is_torch_bf16_gpu_available
    tg.main(["--config", os.path.join(RECIPES, "justrl.yaml"), "--dry_run", "--world_size", "32"])
    assert ta.is_torch_bf16_gpu_available is check and json.loads(capsys.readouterr().out)["derived"]


def test_optimizer_state_saved_on_cpu_0_loads_inside_torch_load_on_cpu_only(tmp_path):
    """A multi-process CPU run reloads its optimizer state with map_location "cpu:N", which torch.load cannot restore;
    inside torch_load_on_cpu it loads on "cpu", and torch.load is torch's own again after the block."""
    from reasonrl.trainer.trainer import torch_load_on_cpu

    path, device, load = tmp_path / "optimizer.pt", torch.device("cpu", 0), torch.load
    torch.save({"exp_avg": torch.ones(2)}, path)
    with pytest.raises(RuntimeError, match="cpu:0"):
        torch.load(path, map_location=device)
    with torch_load_on_cpu(device):
        state = torch.load(path, map_location=device)
    assert torch.load is load and state["exp_avg"].device == torch.device("cpu")

JUSTRL = {"learning_rate": 1e-6, "epsilon": 0.2, "epsilon_high": 0.28, "delta": 10.0, "beta": 0.0,
          "num_generations": 8, "temperature": 1.0, "top_p": 1.0, "weight_decay": 0.1, "max_grad_norm": 1.0,
          "max_completion_length": 15360, "loss_type": "dapo", "num_iterations": 1, "scale_rewards": "group",
          "lr_scheduler_type": "constant_with_warmup", "warmup_generation_steps": 10, "scheduler_per_generation": True,
          "prompts_per_step": 256, "optimizer_updates_per_step": 4, "use_vllm": True, "vllm_mode": "server"}
OPENRS = {"learning_rate": 1e-6, "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
          "warmup_steps": 0.1, "per_device_train_batch_size": 6, "gradient_accumulation_steps": 4,
          "num_generations": 6, "max_steps": 500, "save_steps": 50, "temperature": 0.7, "seed": 42,
          "reward_weights": [1.0, 2.0], "bf16": True, "use_bias_correction_kl": False}


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
     {"prepare_assets": "reasonrl.demo.tiny.ensure_tiny_assets", "prepare_kwargs": {"tiny_dir": ".cache/tiny"}}, ".cache/tiny/sft"),
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


def test_trl_importance_weighted_kl_is_refused_where_there_is_a_kl_term():
    with pytest.raises(ValueError, match="use_bias_correction_kl=True .* set use_bias_correction_kl: false"):
        dry_run("openrs_exp1.yaml", 3, "--use_bias_correction_kl", "true")
    assert dry_run("justrl.yaml", 32, "--use_bias_correction_kl", "true")["training_args"]["beta"] == 0.0  # no KL


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
    real = policy_loss

    def zero_loss(logps, *args, **kwargs):
        calls.append(tuple(logps.shape))
        loss, fractions = real(logps, *args, **kwargs)
        return loss * 0.0, fractions

    monkeypatch.setattr("reasonrl.trainer.loss.policy_loss", zero_loss)  # what the recipe key policy_loss names
    tg.main(tiny_argv(tiny_assets, tmp_path / "zero", "--total_generation_steps", "2", "--weight_decay", "0",
                      "--prompts_per_step", "4", "--per_device_train_batch_size", "16", "--heldout_file", "",
                      "--save_strategy", "no"))
    assert len(calls) == 4  # 2 generation steps x 2 updates, one micro-batch each
    from transformers import AutoModelForCausalLM
    before = AutoModelForCausalLM.from_pretrained(tiny_assets["model"]).state_dict()
    after = AutoModelForCausalLM.from_pretrained(str(tmp_path / "zero")).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a zero loss still changed the weights"


@pytest.mark.slow
def test_num_iterations_2_run_has_the_recipes_generation_steps_updates_and_checkpoints(tiny_assets, tmp_path,
                                                                                       monkeypatch):
    """2 generation steps of 2 mini-batches, each used twice (num_iterations 2), saving every generation step:
    2 generations, 8 updates, a checkpoint after each generation step (reasonrl/trainer/validation.py counts the same units)."""
    calls, real = [], policy_loss
    monkeypatch.setattr("reasonrl.trainer.loss.policy_loss", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    out = tmp_path / "mu2"
    summary = tg.main(tiny_argv(tiny_assets, out, "--total_generation_steps", "2", "--save_generation_steps", "1",
                                "--prompts_per_step", "4", "--per_device_train_batch_size", "16",
                                "--num_iterations", "2", "--heldout_file", ""))
    assert summary["global_step"] == 8 and len(calls) == 8  # 2 generation steps x 2 mini-batches x 2 iterations
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    records = [json.loads(line) for line in open(out / "data_order" / "rank0.jsonl")]
    assert [(r["global_step"], r["generation_step"]) for r in records] == [(0, 0), (4, 1)]


def one_update_skipped(out, initial_model):
    """Asserts what a run of 2 updates (no LR warm-up) whose first had a NaN gradient leaves: the optimizer and LR
    scheduler took exactly one step, the counter says 1, the weights are finite and moved (the second update)."""
    from transformers import AutoModelForCausalLM

    optimizer = torch.load(out / "checkpoint-2" / "optimizer.pt", weights_only=False)
    assert {state["step"].item() for state in optimizer["state"].values()} == {1.0}
    assert torch.load(out / "checkpoint-2" / "scheduler.pt", weights_only=False)["last_epoch"] == 1
    history = json.load(open(out / "checkpoint-2" / "trainer_state.json"))["log_history"]
    assert [e[NONFINITE_KEY] for e in history if "loss" in e] == [1, 1]
    before = AutoModelForCausalLM.from_pretrained(initial_model).state_dict()
    after = AutoModelForCausalLM.from_pretrained(str(out)).state_dict()
    assert all(torch.isfinite(after[k]).all() for k in after)
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_a_nonfinite_gradient_skips_the_update_and_training_goes_on(tiny_assets, tmp_path, monkeypatch):
    """One process: the first of 2 updates gets a NaN loss. veRL skips such an update; so does this trainer."""
    real = policy_loss
    calls = []

    def nan_first(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 1 else loss), stats

    monkeypatch.setattr("reasonrl.trainer.loss.policy_loss", nan_first)
    summary = tg.main(tiny_argv(tiny_assets, tmp_path / "nan", "--total_generation_steps", "1", "--prompts_per_step", "4",
                                "--per_device_train_batch_size", "16", "--heldout_file", "", "--save_generation_steps", "1",
                                "--logging_steps", "1", "--warmup_generation_steps", "0"))
    assert summary["global_step"] == 2 and len(calls) == 2
    one_update_skipped(tmp_path / "nan", tiny_assets["model"])


# train_grpo.main with an instrumented trainer; the tests launch it on 2 processes with accelerate.
PROBE = """
import os, sys
import torch
from trl import GRPOTrainer

import train_grpo as tg

NAN_AT = os.environ.get("PROBE_NAN_AT")  # "update,rank": that update's loss is NaN on that process only


class Probe(tg.ClipHigherGRPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.probe = {"micro_batches": [], "losses": [], "grads": None}

    def _compute_loss(self, model, inputs):  # the first update's micro-batches; every micro-batch's loss
        loss = super()._compute_loss(model, inputs)
        if self.state.global_step == 0:
            self.probe["micro_batches"].append({k: v.clone() for k, v in inputs.items() if torch.is_tensor(v)})
        if NAN_AT == f"{self.state.global_step},{self.accelerator.process_index}":
            loss = loss * float("nan")
        self.probe["losses"].append((self.state.global_step, loss.item()))
        return loss

    def _clip_grad_norm(self, model):  # the first update's gradient, all-reduced, before clipping
        if self.state.global_step == 0 and not self.is_deepspeed_enabled:
            self.probe["grads"] = {n: p.grad.clone() for n, p in self.model.named_parameters()}
        return super()._clip_grad_norm(model)

    def train(self, *args, **kwargs):
        result = super().train(*args, **kwargs)
        self.probe["optimizer_steps"] = sorted({float(s["step"]) for s in self.optimizer.state.values()})
        self.probe["scheduler_steps"] = getattr(self.lr_scheduler, "scheduler", self.lr_scheduler).last_epoch
        if not self.is_deepspeed_enabled:
            self.probe["weights"] = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        torch.save(self.probe, os.path.join(self.args.output_dir, f"probe_rank{self.accelerator.process_index}.pt"))
        return result


if os.environ.get("PROBE_UNPACKED"):  # TRL's micro-batches as they come: shuffled, padded to the generation's longest
    Probe._pack_updates = lambda self, micro_batches: micro_batches
    Probe._get_per_token_logps_and_entropies = GRPOTrainer._get_per_token_logps_and_entropies
tg.ClipHigherGRPOTrainer = Probe
tg.main(sys.argv[1:])
"""


def launch_probe(tmp_path, assets, accelerate_config, port, *extra, **env):
    """PROBE on 2 CPU processes (gloo); returns each rank's records."""
    (tmp_path / "probe.py").write_text(PROBE)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=ROOT, **env)
    cmd = ["accelerate", "launch", "--config_file", os.path.join(ROOT, "accelerate_configs", accelerate_config),
           "--main_process_port", str(port), str(tmp_path / "probe.py"), *tiny_argv(assets, tmp_path / "run", *extra)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [torch.load(tmp_path / "run" / f"probe_rank{r}.pt", weights_only=False) for r in (0, 1)]


# One generation of 8 prompts x 8 = 64 responses, 2 updates of 32: per process 16 per update, 2 micro-batches of 8.
TWO_UPDATES = ("--total_generation_steps", "1", "--prompts_per_step", "8", "--per_device_train_batch_size", "8",
               "--heldout_file", "", "--logging_steps", "1", "--warmup_generation_steps", "0")


@pytest.mark.slow
def test_two_process_update_gradient_is_the_token_mean_over_the_update(tiny_assets, tmp_path):
    """The first update's all-reduced gradient on 2 processes equals that of one process's token mean over the
    same responses, sum(l) / (the update's tokens), although the processes hold unequal token counts and the
    update's count differs from the generation's average update (TRL's "dapo" normaliser)."""
    from transformers import AutoModelForCausalLM

    ranks = launch_probe(tmp_path, tiny_assets, "cpu.yaml", 29543, *TWO_UPDATES, "--save_strategy", "no",
                         "--seed", "1")  # a seed whose first update holds unequal token counts per process
    batches = ranks[0]["micro_batches"] + ranks[1]["micro_batches"]
    tokens = [sum(mb["completion_mask"].sum().item() for mb in r["micro_batches"]) for r in ranks]
    generation = batches[0]["num_items_in_batch"].item()
    assert len(batches) == 4 and tokens[0] != tokens[1] and sum(tokens) != generation / 2  # the cases that differ

    model = AutoModelForCausalLM.from_pretrained(tiny_assets["model"])
    loss = 0.0
    for mb in batches:
        ids, n = torch.cat([mb["prompt_ids"], mb["completion_ids"]], 1), mb["completion_ids"].size(1)
        logits = model(input_ids=ids, attention_mask=torch.cat([mb["prompt_mask"], mb["completion_mask"]], 1)).logits
        logps = logits[:, -n - 1:-1].log_softmax(-1).gather(-1, mb["completion_ids"][..., None]).squeeze(-1)
        loss = loss + policy_loss(logps, mb["old_per_token_logps"], mb["advantages"], mb["completion_mask"],
                                     0.2, 0.28, 10.0, num_tokens=torch.tensor(float(sum(tokens))))[0]
    names = [n for n, _ in model.named_parameters()]
    want = torch.autograd.grad(loss, list(model.parameters()))
    assert same_gradients([ranks[0]["grads"][n] for n in names], want, rel=1e-4)


@pytest.mark.slow
def test_two_process_nonfinite_gradient_on_one_process_is_skipped_by_both(tiny_assets, tmp_path):
    """Process 1 alone gets a NaN loss in the first update: the all-reduced gradient is NaN on both processes, both
    skip that update (optimizer and scheduler untouched) and apply the second one identically."""
    ranks = launch_probe(tmp_path, tiny_assets, "cpu.yaml", 29547, *TWO_UPDATES, "--save_generation_steps", "1",
                         PROBE_NAN_AT="0,1")
    assert all(math.isfinite(loss) for update, loss in ranks[0]["losses"] if update == 0)  # process 0's own loss
    assert any(not torch.isfinite(g).all() for g in ranks[0]["grads"].values())  # ... but the global gradient
    assert [(r["optimizer_steps"], r["scheduler_steps"]) for r in ranks] == [([1.0], 1), ([1.0], 1)]
    assert all(torch.equal(ranks[0]["weights"][n], ranks[1]["weights"][n]) for n in ranks[0]["weights"])
    one_update_skipped(tmp_path / "run", tiny_assets["model"])


@pytest.mark.slow
def test_under_deepspeed_zero3_the_engine_skips_a_nonfinite_gradient_and_the_trainer_counts_it(tiny_assets, tmp_path):
    """DeepSpeed steps inside backward() and skips an update whose gradient norm is not finite (its "overflow")."""
    from transformers import AutoModelForCausalLM

    ranks = launch_probe(tmp_path, tiny_assets, "zero3_cpu.yaml", 29549, *TWO_UPDATES, "--save_generation_steps", "1",
                         PROBE_NAN_AT="0,1")
    assert [(r["optimizer_steps"], r["scheduler_steps"]) for r in ranks] == [([1.0], 1), ([1.0], 1)]
    history = json.load(open(tmp_path / "run" / "checkpoint-2" / "trainer_state.json"))["log_history"]
    assert [e[NONFINITE_KEY] for e in history if "loss" in e] == [1, 1]
    after = AutoModelForCausalLM.from_pretrained(str(tmp_path / "run")).state_dict()
    assert all(torch.isfinite(t).all() for t in after.values())


@pytest.mark.slow
def test_a_bf16_recipe_on_one_process_trains_fp32_weights_under_bf16_autocast(tiny_assets, tmp_path):
    """dtype: bfloat16 + bf16: true without DeepSpeed, at lr 1e-6: the model is loaded and saved in fp32, two Adam
    updates move most weights by ~lr, and held-out generation runs before and after training."""
    from transformers import AutoModelForCausalLM

    summary = tg.main(tiny_argv(tiny_assets, tmp_path / "bf16", "--dtype", "bfloat16", "--bf16", "true",
                                "--learning_rate", "1e-6", "--weight_decay", "0", "--warmup_generation_steps", "0",
                                "--total_generation_steps", "1", "--prompts_per_step", "4",
                                "--per_device_train_batch_size", "16", "--save_strategy", "no"))
    before = AutoModelForCausalLM.from_pretrained(tiny_assets["model"]).state_dict()
    after = AutoModelForCausalLM.from_pretrained(str(tmp_path / "bf16"), dtype="auto").state_dict()
    assert {t.dtype for t in after.values()} == {torch.float32}
    moved = torch.cat([(after[k] - before[k]).abs().flatten() for k in before])
    assert moved.max() < 2.5e-6
    # most weights moved by ~lr per update (bf16 weights would keep ~2%); the others have gradients below Adam's
    # eps, e.g. embedding rows of tokens the warm-started model never predicts
    assert (moved > 0.5e-6).float().mean() > 0.7
    assert summary["accuracy_after"] == pytest.approx(summary["accuracy_before"], abs=0.05)


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
