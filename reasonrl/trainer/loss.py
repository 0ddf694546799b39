"""The policy loss of every recipe, one pure function: `policy_loss` (ClipHigherGRPOTrainer calls it per micro-batch).

Change the clipping, the aggregation or the KL term here; tests/test_train_grpo.py calls it on literal tensors.
"""

import torch


def policy_loss(logps, old_logps, advantages, mask, clip_low=0.2, clip_high=0.28, clip_c=10.0, *,
                num_tokens=None, token_weights=None, seq_mean=False, ref_logps=None, beta=0.0):
    """PPO-clip policy loss with asymmetric clipping and dual clip, plus an optional KL penalty; returns (loss, stats).

    logps, old_logps, ref_logps, mask, token_weights: (B, T); advantages: (B,) or (B, T). clip_c=None disables the
    dual clip. Per token: l = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)), and for A < 0 also
    l = min(l, -A c); token_weights (e.g. TRL's vLLM importance-sampling ratio) scale l; with beta > 0,
    l += beta * KL, KL = exp(ref - logp) - (ref - logp) - 1 (TRL's k3 estimator against the reference model).
    Aggregation: sum(l * mask) / num_tokens (default: mask.sum(), the token mean); seq_mean=True averages each
    sequence's token mean instead (TRL's GRPO loss of early 2025, KL inside each sequence's mean).
    stats: {name: (numerator, denominator)} for the fractions clipped low / high / by the dual clip and the mean KL."""
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages
    # The log-ratio is clamped to [-20, 20] so that exp() cannot overflow (an inf ratio makes the gradient NaN even
    # where a clip bound removes it). JustRL's veRL 0.4 fork has no clamp (later veRL versions added this one). With
    # the dual clip on, the clamp changes nothing else; without it, it caps a negative-advantage token at r = e^20.
    ratio = torch.exp(torch.clamp(logps - old_logps, -20.0, 20.0))
    per_token = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high))
    if clip_c is not None:
        per_token = torch.where(adv < 0, torch.minimum(per_token, -adv * clip_c), per_token)
    if token_weights is not None:
        per_token = per_token * token_weights
    if beta != 0.0:
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        per_token = per_token + beta * kl
    mask = mask.to(per_token.dtype)
    if seq_mean:
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    else:
        loss = (per_token * mask).sum() / (mask.sum() if num_tokens is None else num_tokens).clamp(min=1.0)
    with torch.no_grad():
        clipped = {"clip_ratio/low": (adv < 0) & (ratio < 1 - clip_low),
                   "clip_ratio/high": (adv > 0) & (ratio > 1 + clip_high),
                   "clip_ratio/dual": (adv < 0) & (ratio > clip_c) if clip_c is not None else torch.zeros_like(mask).bool()}
        stats = {k: ((v.to(mask.dtype) * mask).sum(), mask.sum()) for k, v in clipped.items()}
        if beta != 0.0:
            stats["kl"] = ((kl * mask).sum(), mask.sum())
    return loss, stats
