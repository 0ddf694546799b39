"""How far TRL's "dapo" loss normaliser scales each optimizer update away from a token mean (project issue 9, item 4).

TRL divides every micro-batch of a generation by num_items_in_batch / updates, the token count of the generation's
*average* update. An update is therefore scaled by (its tokens) / (average update's tokens) relative to a token mean
over its own tokens, which is what the recipes state and what train_grpo.py now computes. This script samples
realistic response lengths and reports the distribution of that factor. CPU only, no model, under a minute.

Batch: JustRL's, 256 prompts x 8 responses = 2048 per generation step; TRL shuffles them and splits them into
4 updates of 512 (the split is the same random one whatever the number of processes).
Lengths (an assumption; no per-response lengths of JustRL were published): log-normal, log L = mu + a + e with a
prompt effect a ~ N(0, sigma_prompt^2) shared by a prompt's 8 responses (hard prompts get long answers) and
e ~ N(0, sigma_response^2), capped at max_completion_length 15360 (a truncated response stays in the loss with all
its 15360 tokens). mu is set so that the mean length matches JustRL's reported curve, "response length ~8k -> 4-5k
tokens by step 1000" (arXiv 2512.16649): an early scenario (mean 8000) and a late one (mean 4500).

    python -m benchmarks.bench_normaliser                      # both scenarios, 20000 generation steps each
    python -m benchmarks.bench_normaliser --mean 6000 --sigma_prompt 0.6 --sigma_response 0.4 --steps 5000
"""

import argparse
import json

import numpy as np


def sample_lengths(rng, steps, prompts, rollouts, mu, sigma_prompt, sigma_response, cap):
    a = rng.normal(0.0, sigma_prompt, (steps, prompts, 1))
    e = rng.normal(0.0, sigma_response, (steps, prompts, rollouts))
    return np.clip(np.rint(np.exp(mu + a + e)), 1, cap).reshape(steps, prompts * rollouts)


def mu_for_mean(mean, sigma_prompt, sigma_response, cap, seed=0):
    """mu such that the capped lengths average `mean` (bisection on a large sample)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.0, 400_000) * np.hypot(sigma_prompt, sigma_response)
    lo, hi = 0.0, np.log(cap) + 3.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.minimum(np.exp(mid + z), cap).mean() < mean else (lo, mid)
    return (lo + hi) / 2


def update_factors(lengths, updates, rng):
    """Per update: its tokens / the average update's tokens, after TRL's shuffle and split."""
    shuffled = np.take_along_axis(lengths, rng.permuted(np.tile(np.arange(lengths.shape[1]), (len(lengths), 1)),
                                                          axis=1), axis=1)
    per_update = shuffled.reshape(len(lengths), updates, -1).sum(-1)
    return (per_update / per_update.mean(-1, keepdims=True)).ravel()


def run(mean, steps, prompts=256, rollouts=8, updates=4, sigma_prompt=0.5, sigma_response=0.5, cap=15360, seed=0):
    rng = np.random.default_rng(seed)
    mu = mu_for_mean(mean, sigma_prompt, sigma_response, cap)
    factors, lengths_seen = [], []
    for start in range(0, steps, 1000):
        lengths = sample_lengths(rng, min(1000, steps - start), prompts, rollouts, mu, sigma_prompt, sigma_response, cap)
        factors.append(update_factors(lengths, updates, rng))
        lengths_seen.append(lengths[:50].ravel())
    f, lengths = np.concatenate(factors), np.concatenate(lengths_seen)
    n, big_n = prompts * rollouts // updates, prompts * rollouts
    cv = lengths.std() / lengths.mean()
    return {"mean_length": round(float(lengths.mean())), "median_length": float(np.median(lengths)),
            "truncated_fraction": round(float((lengths >= cap).mean()), 4), "length_cv": round(float(cv), 3),
            "updates_sampled": int(f.size), "factor_std": round(float(f.std()), 4),
            "factor_p1": round(float(np.percentile(f, 1)), 4), "factor_p99": round(float(np.percentile(f, 99)), 4),
            "abs_deviation_p99": round(float(np.percentile(np.abs(f - 1), 99)), 4),
            "factor_min": round(float(f.min()), 4), "factor_max": round(float(f.max()), 4),
            # sampling 512 of 2048 without replacement: std of the update's mean ~ cv * sqrt((N - n) / ((N - 1) n))
            "factor_std_expected": round(float(cv * np.sqrt((big_n - n) / ((big_n - 1) * n))), 4)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mean", type=float, nargs="*", default=[8000, 4500], help="mean response length(s)")
    parser.add_argument("--steps", type=int, default=20000, help="generation steps sampled per scenario")
    parser.add_argument("--sigma_prompt", type=float, default=0.5)
    parser.add_argument("--sigma_response", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for mean in args.mean:
        result = run(mean, args.steps, sigma_prompt=args.sigma_prompt, sigma_response=args.sigma_response,
                     seed=args.seed)
        print(json.dumps({"target_mean_length": mean, **result}))


if __name__ == "__main__":
    main()
