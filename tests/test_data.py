"""reasonrl/run/data.py: the prompt template, dataset rows -> prompts, and errors naming the file, column, row and recipe key."""

import json

import pytest

from reasonrl.run import data
from reasonrl.run.config import ScriptArguments

DAPO_ROW = (data.DAPO_PREFIX + "What is $1+1$?" + data.DAPO_SUFFIX)


def test_justrl_prompt_is_user_message_plus_boxed_suffix():
    assert data.build_prompt(DAPO_ROW) == [{"role": "user", "content": DAPO_ROW + data.JUSTRL_SUFFIX}]
    assert data.JUSTRL_SUFFIX == "\n\nPlease reason step by step, and put your final answer within \\boxed{}."


def test_stripping_dapo_instruction_keeps_only_the_problem():
    assert data.build_prompt(DAPO_ROW, strip_dapo_instruction=True) == [
        {"role": "user", "content": "What is $1+1$?\n\nPlease reason step by step, and put your final answer within \\boxed{}."}]


def test_system_prompt_comes_first():
    assert data.build_prompt("Q", suffix="", system_prompt="S") == [{"role": "system", "content": "S"},
                                                                  {"role": "user", "content": "Q"}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def data_args(path, **kw):
    return ScriptArguments(dataset_name=path, **kw)


def test_dataset_rows_become_prompt_and_solution(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": [{"role": "user", "content": "What is 1 + 1?"}],
                                              "reward_model": {"ground_truth": "2"}}])
    ds, counts = data.load_prompts(data_args(path), tokenizer)
    assert ds[0]["prompt"] == [{"role": "user", "content": "What is 1 + 1?" + data.JUSTRL_SUFFIX}]
    assert (ds[0]["solution"], ds[0]["row_id"]) == ("2", 0)
    assert counts == {"rows": 1, "duplicates_dropped": 0, "too_long_dropped": 0, "kept": 1}


def test_missing_column_names_the_column_the_recipe_key_and_the_file(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "1"}])
    with pytest.raises(ValueError, match=r"d\.jsonl has no column 'prompt' \(recipe key prompt_column.*\['question', 'answer'\]"):
        data.load_prompts(data_args(path), tokenizer)


def test_row_without_an_answer_is_named(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"problem": "a", "answer": "1"}, {"problem": "b", "answer": None}])
    with pytest.raises(ValueError, match=r"d\.jsonl, row 1, column 'answer': no ground truth"):
        data.load_prompts(data_args(path, prompt_column="problem", answer_column="answer"), tokenizer)


def test_missing_data_file_is_named(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        data.load_prompts(data_args(str(tmp_path / "nope.parquet")), tokenizer)


def test_dedup_and_long_prompts_are_dropped_and_counted(tmp_path, tokenizer):
    rows = [{"problem": "What is 1 + 1?", "answer": "2"}] * 3 + [{"problem": "What is 1 + 1? " * 30, "answer": "2"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    args = data_args(path, prompt_column="problem", answer_column="answer", dedup_prompts=True, max_prompt_length=60)
    ds, counts = data.load_prompts(args, tokenizer)
    assert counts == {"rows": 4, "duplicates_dropped": 2, "too_long_dropped": 1, "kept": 1}
    assert ds["row_id"] == [0]
