"""One GPU, under 8 minutes: the update phase at JustRL's lengths, TRL's micro-batches vs ours (reasonrl/trainer/packing.py).

A 1.5B model of DeepSeek-R1-Distill-Qwen-1.5B's architecture (Qwen2, config typed in below, random weights: no
download) runs the trainer's update as train_grpo.py does on a GPU: policy_loss (reasonrl/trainer/loss.py, which
needs no TRL), the token mean over the update's tokens, bf16 autocast over fp32 master weights, gradient
checkpointing, AdamW. For response lengths capped at 4K, 8K and 16K (JustRL's log-normal shape scaled to the cap:
mean = cap x 8000 / 15360) and micro-batch 1 and 2, one update of 16 responses (one process's share at 32 processes)
runs in TRL's order (a generation of 4 updates padded to its longest response, shuffled, untrimmed) and in ours
(grouped by length, trimmed). One JSON line per case: computed / real tokens, seconds, peak memory, real tokens/s,
MFU against the GPU's bf16 peak (dense), and the largest gradient difference between the two orders, computed in
float32 (autocast off; caps up to 4K only, to keep the run short): over 1e-4 of the gradient's largest value, the
script exits 1 after printing the case (the bf16 gradients, summed in another order, are not compared).

Needs torch and transformers only, no network. Where something is missing, put its wheels (and its dependencies') in
scripts/wheels/ or pass --wheels DIR: `pip install --no-index --find-links DIR` installs them first.

    python scripts/gpu_check.py                         # the GPU run (~3-5 min on an H100/H200)
    python scripts/gpu_check.py --peak_tflops 989       # a GPU the table below does not know
    python scripts/gpu_check.py --smoke                 # a tiny config on the CPU, seconds (tests run this)
"""

import argparse
import glob
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRADIENT_RTOL = 1e-4  # float32 gradients of TRL's micro-batches and ours: max |difference| / max |value|, per tensor
FP32_CHECK_CAP = 4096  # response caps up to this one also run the update in float32 for the gradient comparison
# DeepSeek-R1-Distill-Qwen-1.5B's config.json (a Qwen2.5-Math-1.5B body)
R1_DISTILL_1_5B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                       num_key_value_heads=2, vocab_size=151936, rope_theta=10000.0, max_position_embeddings=131072,
                       tie_word_embeddings=False, rms_norm_eps=1e-6, hidden_act="silu")
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=512, rope_theta=10000.0, max_position_embeddings=1024, tie_word_embeddings=False)
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
                    "B200": 2250.0}


def install_wheels(folder: str) -> None:
    wheels = sorted(glob.glob(os.path.join(folder, "*.whl")))
    if not wheels:
        raise SystemExit(f"--wheels {folder}: no .whl files there")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", folder, *wheels], check=True)


def load_policy_loss():
    """The trainer's policy_loss (reasonrl/trainer/loss.py needs torch only, not TRL)."""
    sys.path.insert(0, ROOT)
    from reasonrl.trainer.loss import policy_loss

    return policy_loss


def generation(cap, per_update, updates, vocab, seed, device):
    """One process's generation as TRL holds it: 4 updates' responses, prompts left-padded (64-256 tokens, scaled
    with the cap), completions right-padded, all to the longest; shuffled."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = per_update * updates
    sigma = math.hypot(0.5, 0.5)
    mu = math.log(cap * 8000 / 15360) - sigma ** 2 / 2  # log-normal mean before the cap
    prompt_effect = torch.randn(n // 8, generator=g).repeat_interleave(8) * 0.5
    lengths = torch.exp(mu + prompt_effect + 0.5 * torch.randn(n, generator=g)).round().clamp(1, cap).long()
    prompts = torch.randint(max(cap // 64, 2), max(cap // 16, 3) + 1, (n,), generator=g)
    p, c = int(prompts.max()), int(lengths.max())
    batch = {"prompt_ids": torch.randint(0, vocab, (n, p), generator=g),
             "prompt_mask": (torch.arange(p - 1, -1, -1) < prompts[:, None]).long(),
             "completion_ids": torch.randint(0, vocab, (n, c), generator=g),
             "completion_mask": (torch.arange(c) < lengths[:, None]).long(),
             "advantages": torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)}
    order = torch.randperm(n, generator=g)
    return {k: v[order].to(device) for k, v in batch.items()}


def completion_logps(model, mb, chunk=4096):
    """Per-token log-probs of the completion under the model, the lm head and log-softmax run in checkpointed chunks
    of tokens (full-vocabulary logits of 16K tokens would take tens of GB; TRL's fused_lm_head does the same job)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    c = mb["completion_ids"].size(1)
    ids = torch.cat([mb["prompt_ids"], mb["completion_ids"]], 1)
    mask = torch.cat([mb["prompt_mask"], mb["completion_mask"]], 1)
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -c - 1:-1]

    def piece(h, targets):
        return model.lm_head(h).float().log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)

    return torch.cat([checkpoint(piece, hidden[:, i:i + chunk], mb["completion_ids"][:, i:i + chunk], use_reentrant=False)
                      for i in range(0, c, chunk)], 1)


def run_update(model, micro_batches, policy_loss, device, bf16=True):
    """Gradient of one update (bf16 autocast, or float32 with bf16=False; token mean over the update); returns seconds
    and peak bytes."""
    import torch

    num_tokens = sum(mb["completion_mask"].sum() for mb in micro_batches).float()
    model.zero_grad(set_to_none=True)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for mb in micro_batches:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logps = completion_logps(model, mb)
        loss, _ = policy_loss(logps, logps.detach(), mb["advantages"], mb["completion_mask"], 0.2, 0.28, 10.0,
                              num_tokens=num_tokens)
        loss.backward()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() if cuda else None


def fp32_difference(model, trl, ours, policy_loss, device):
    """Largest per-tensor max |difference| / max |value| between the float32 gradients of the two orders."""
    grads = []
    for mbs in (trl, ours):
        run_update(model, mbs, policy_loss, device, bf16=False)
        grads.append([p.grad.detach().clone() for p in model.parameters()])
    return max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-30)) for a, b in zip(grads[1], grads[0]))


def flops(config, micro_batches):
    """Model FLOPs of one update's forward and backward (6 per parameter per token, plus causal attention), over the
    tokens the micro-batches compute (checkpointing's recomputation not counted, as MFU conventionally does)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    per_token = 6 * (layers * (4 * h * h * (1 + 2 * config.num_key_value_heads / config.num_attention_heads) / 2
                               + 3 * h * config.intermediate_size) + h * config.vocab_size)
    total = 0
    for mb in micro_batches:
        rows, width = mb["completion_ids"].size(0), mb["prompt_ids"].size(1) + mb["completion_ids"].size(1)
        total += rows * width * (per_token + 6 * layers * width * h)  # causal attention: half of 12 x seq x h
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny config on the CPU")
    parser.add_argument("--wheels", help="folder of wheels to install first (default: scripts/wheels/ if it has any)")
    parser.add_argument("--lengths", type=int, nargs="*", help="response caps (default 4096 8192 16384)")
    parser.add_argument("--micro_batches", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--per_update", type=int, default=16, help="responses per update on this process")
    parser.add_argument("--peak_tflops", type=float, help="the GPU's dense bf16 peak (default: known GPUs)")
    args = parser.parse_args()
    beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wheels")
    if args.wheels or glob.glob(os.path.join(beside, "*.whl")):
        install_wheels(args.wheels or beside)
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, ROOT)
    from reasonrl.trainer import packing

    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --smoke for the CPU check")
    lengths = args.lengths or ([32, 64] if args.smoke else [4096, 8192, 16384])
    peak = args.peak_tflops
    if peak is None and device.type == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
        if peak is None:
            raise SystemExit(f"unknown GPU {name!r}: pass --peak_tflops (its dense bf16 peak)")
    torch.manual_seed(0)
    config = Qwen2Config(**(TINY if args.smoke else R1_DISTILL_1_5B), use_cache=False)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).float()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.1, fused=device.type == "cuda")
    policy_loss = load_policy_loss()
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                      "parameters": params, "peak_bf16_tflops": peak, "torch": torch.__version__}), flush=True)
    warm = generation(lengths[0], 2, 4, config.vocab_size, 0, device)
    run_update(model, [{k: v[:2] for k, v in warm.items()}], policy_loss, device)
    optimizer.step()  # allocates AdamW's state, which a training process holds throughout
    for cap in lengths:
        gen = generation(cap, args.per_update, 4, config.vocab_size, cap, device)
        for micro in args.micro_batches:
            trl = [{k: v[i:i + micro] for k, v in gen.items()} for i in range(0, args.per_update, micro)]  # update 0
            ours = packing.regroup_update(trl)
            result = {"response_cap": cap, "micro_batch": micro, "responses": args.per_update}
            for name, mbs in (("trl", trl), ("ours", ours)):
                seconds, peak_bytes = run_update(model, mbs, policy_loss, device)
                real = sum(packing.token_counts(mb)[0] for mb in mbs)
                computed = sum(packing.token_counts(mb)[1] for mb in mbs)
                result[name] = {"computed_over_real": round(computed / real, 3), "seconds": round(seconds, 3),
                                "peak_memory_gib": None if peak_bytes is None else round(peak_bytes / 2 ** 30, 2),
                                "real_tokens_per_s": round(real / seconds), "model_tflops": flops(config, mbs) / 1e12,
                                "mfu": None if peak is None else round(flops(config, mbs) / seconds / (peak * 1e12), 4)}
            result["time_ratio_trl_over_ours"] = round(result["trl"]["seconds"] / result["ours"]["seconds"], 3)
            difference = fp32_difference(model, trl, ours, policy_loss, device) if cap <= FP32_CHECK_CAP else None
            result["fp32_gradient_max_rel_difference"] = difference
            start = time.perf_counter()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            result["optimizer_step_s"] = round(time.perf_counter() - start, 3)
            print(json.dumps(result), flush=True)
            if difference is not None and difference > GRADIENT_RTOL:
                raise SystemExit(f"response cap {cap}, micro-batch {micro}: the float32 gradients of TRL's "
                                 f"micro-batches and ours differ by more than {GRADIENT_RTOL} of their largest value")


if __name__ == "__main__":
    main()
