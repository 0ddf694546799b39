"""packing.py and the trainer's use of it: micro-batches trimmed and grouped by length, the same gradient as TRL's
shuffled untrimmed order, and the logged token counts."""

import pytest
import torch

import packing


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


def test_computed_tokens_pad_each_micro_batch_to_its_own_longest():
    assert packing.computed_tokens([[8, 1], [7, 7], [3]]) == 16 + 14 + 3


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
