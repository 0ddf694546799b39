"""The held-out greedy accuracy written to <output_dir>/summary.json before and after training (heldout_file).

Test: python -m pytest tests/test_train_grpo.py -q -k learns
"""

from contextlib import nullcontext

import torch

from reasonrl.grading.answers import dapo_score


@torch.no_grad()
def heldout_accuracy(model, tokenizer, dataset, max_new_tokens: int, batch_size: int = 64) -> float:
    """Greedy accuracy under JustRL's strict-box DAPO rule (for the demo's before/after numbers)."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    correct = 0
    for i in range(0, len(dataset), batch_size):
        rows = dataset[i:i + batch_size]
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in rows["prompt"]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        done = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        correct += sum(dapo_score(t, gt) > 0 for t, gt in zip(done, rows["solution"]))
    model.train(was_training)
    tokenizer.padding_side = side
    return correct / max(len(dataset), 1)


def gathered(model):
    """Full parameters for generation under ZeRO-3 (partitioned at load time); a no-op otherwise."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        import deepspeed
        return deepspeed.zero.GatheredParameters(list(model.parameters()))
    return nullcontext()
