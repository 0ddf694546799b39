"""Micro-batches that compute little padding: trimming, grouping by length inside an update, token counts.

TRL pads every completion of a process's generation batch to the longest one in it, then shuffles and cuts
micro-batches without trimming them, so every forward and backward runs over the generation's longest response.
train_grpo.py's trainer instead
    trim_micro_batch      cuts each micro-batch to its own longest prompt (left padding) and response (right padding)
    group_by_length       inside one optimizer update, puts responses of similar length into the same micro-batch
                          (each process its own share; the number and size of micro-batches are unchanged)
    regroup_update        both, on one update's micro-batches as TRL cut them
    token_counts          real tokens (attended) and computed tokens (rows x width) of a micro-batch, for the logs
The gradient is unchanged: the loss is a token mean over each update's tokens, all processes together, so which
micro-batch a response of the update lands in does not matter, and trimmed columns are padding that no real token
attends to (causal attention; RoPE depends on relative positions only).

Pure functions over torch tensors (nothing here needs TRL). `python -m benchmarks.bench_update` measures the effect.
"""

import torch

# Per-response tensors whose second dimension is the completion's (TRL's generation output); cut at the right.
COMPLETION_KEYS = ("completion_ids", "completion_mask", "old_per_token_logps", "ref_per_token_logps",
                   "sampling_per_token_logps", "importance_sampling_ratio", "tool_mask")
PROMPT_KEYS = ("prompt_ids", "prompt_mask")  # left-padded: cut at the left
MULTIMODAL_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "spatial_shapes", "image_sizes",
                   "token_type_ids", "mm_token_type_ids", "image_position_ids", "num_images", "num_tiles")


def trimmed_widths(prompt_mask: torch.Tensor, completion_mask: torch.Tensor) -> tuple[int, int]:
    """(prompt columns, completion columns) that hold a real token in at least one row.

    Prompts are left-padded: the width counts from the first column any row attends to. Completions are
    right-padded: up to the last such column (at least 1, so that a micro-batch of empty completions keeps a shape)."""
    prompt_cols = torch.nonzero(prompt_mask.any(0)).flatten()
    completion_cols = torch.nonzero(completion_mask.any(0)).flatten()
    prompt = prompt_mask.size(1) - int(prompt_cols[0]) if len(prompt_cols) else 0
    completion = int(completion_cols[-1]) + 1 if len(completion_cols) else 1
    return prompt, completion


def trim_micro_batch(batch: dict) -> dict:
    """The micro-batch cut to its own longest prompt and response (the other values are kept as they are)."""
    prompt, completion = trimmed_widths(batch["prompt_mask"], batch["completion_mask"])
    full = batch["completion_mask"].size(1)
    out = dict(batch)
    for key in PROMPT_KEYS:
        out[key] = batch[key][:, batch[key].size(1) - prompt:]
    for key in COMPLETION_KEYS:
        value = batch.get(key)
        if torch.is_tensor(value) and value.dim() == 2 and value.size(1) == full:  # (B, 1) sequence-level ratios stay
            out[key] = value[:, :completion]
    return out


def token_counts(batch: dict) -> tuple[int, int]:
    """(real, computed) tokens of a micro-batch: attended prompt + response tokens, and rows x padded width."""
    real = int(batch["prompt_mask"].sum()) + int(batch["completion_mask"].sum())
    rows = batch["completion_mask"].size(0)
    return real, rows * (batch["prompt_mask"].size(1) + batch["completion_mask"].size(1))


def group_by_length(prompt_lengths: list[int], completion_lengths: list[int], micro_batches: int) -> list[list[int]]:
    """Row indices of one update's responses (one process's share) in `micro_batches` equal micro-batches, longest
    first, by response length then prompt length (ties keep their order).

    Cutting the sorted rows into consecutive equal groups minimises the sum over micro-batches of rows x longest
    row, i.e. the computed tokens, among all splits into micro-batches of that size."""
    n = len(completion_lengths)
    if n % micro_batches:
        raise ValueError(f"{n} responses do not split into {micro_batches} equal micro-batches")
    order = sorted(range(n), key=lambda i: (-completion_lengths[i], -prompt_lengths[i]))
    size = n // micro_batches
    return [order[i:i + size] for i in range(0, n, size)]


def regroup_update(micro_batches: list[dict]) -> list[dict]:
    """One update's micro-batches (one process) rearranged by group_by_length, then each trimmed.

    Tensors with one row per response are reordered; 0-dim tensors and None (e.g. num_items_in_batch) are kept."""
    keys = micro_batches[0].keys()
    for key in keys:
        if key in MULTIMODAL_KEYS or isinstance(micro_batches[0][key], list):
            raise ValueError(f"group_update_by_length: the generation batch holds {key!r} (multimodal or per-sample "
                             "lists), which this regrouping does not reorder; set group_update_by_length: false.")
    merged = {}
    for key in keys:
        value = micro_batches[0][key]
        if torch.is_tensor(value) and value.dim() > 0:
            merged[key] = torch.cat([mb[key] for mb in micro_batches])
        else:
            merged[key] = value
    groups = group_by_length(merged["prompt_mask"].sum(1).tolist(), merged["completion_mask"].sum(1).tolist(),
                             len(micro_batches))
    return [trim_micro_batch({k: v[rows] if torch.is_tensor(v) and v.dim() > 0 else v for k, v in merged.items()})
            for rows in groups]

