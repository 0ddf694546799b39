"""Bad input fails at start-up with an error that names what to fix (the key, file, column or row), before any model
loads, and leaves nothing in output_dir. Literal inputs, one case per test; nothing here loads a model.

    python -m pytest tests/test_bad_input.py -q
"""

import json
import os

import pytest
import yaml

import eval as ev
import stages
import train_grpo as tg
from reasonrl.run import data
from reasonrl.run.config import ScriptArguments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "recipes", "tiny.yaml")


def recipe(tmp_path, **values):
    """recipes/tiny.yaml with `values` changed, written to tmp_path/recipe.yaml."""
    config = yaml.safe_load(open(TINY))
    config.update(values)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def train(tmp_path, *argv):
    """train_grpo.main, which must fail before writing anything in its output_dir."""
    out = tmp_path / "out"
    try:
        return tg.main([*argv, "--output_dir", str(out)])
    finally:
        assert not out.exists()


# ---------------------------------------------------------------- recipe values and options


def test_a_quoted_number_in_a_recipe_names_the_key_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"recipe\.yaml: prompts_per_step: '32' is str, expected an integer.*"
                                         r"write it without quotes: 32"):
        train(tmp_path, "--config", recipe(tmp_path, prompts_per_step="32"))


def test_reward_funcs_as_a_string_asks_for_a_list(tmp_path):
    with pytest.raises(ValueError, match=r"reward_funcs: 'dapo' is str, expected a list of strings; "
                                         r"write a list: \[dapo\]"):
        train(tmp_path, "--config", recipe(tmp_path, reward_funcs="dapo"))


def test_a_list_where_a_number_goes_names_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"num_generations: \[8\] is list, expected an integer.*"
                                         r"write the value itself, not a list: 8"):
        train(tmp_path, "--config", recipe(tmp_path, num_generations=[8]))


def test_a_yaml_exponent_without_a_dot_is_still_a_number(tmp_path):
    path = recipe(tmp_path, learning_rate="5e-5")  # PyYAML reads 5e-5 as a string; the parser converts it
    assert tg.main(["--config", path, "--dry_run"]) is None


def test_malformed_reward_kwargs_json_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match=r"--reward_kwargs '\{dapo: 1\}' is not valid JSON .*e\.g\. --reward_kwargs"):
        train(tmp_path, "--config", TINY, "--reward_kwargs", "{dapo: 1}", "--dry_run")


def test_a_policy_loss_that_cannot_be_imported_names_the_key_at_start_up(tmp_path):
    with pytest.raises(ValueError, match=r"^policy_loss: cannot import 'my_losss\.cispo' \(No module named 'my_losss'\); "
                                         r"give module\.function"):
        train(tmp_path, "--config", recipe(tmp_path, policy_loss="my_losss.cispo"), "--dry_run")


def test_malformed_prepare_kwargs_json_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match=r"--prepare_kwargs '\{\"tiny_dir\": \.cache\}' is not valid JSON"):
        train(tmp_path, "--config", TINY, "--prepare_kwargs", '{"tiny_dir": .cache}', "--dry_run")


def test_reward_kwargs_that_are_json_but_no_object_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"--reward_kwargs '\[1\]' is JSON list, expected an object"):
        train(tmp_path, "--config", TINY, "--reward_kwargs", "[1]", "--dry_run")


def test_a_missing_training_recipe_names_the_file_and_lists_the_recipes(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(FileNotFoundError, match=r"--config recipes/tiny2\.yaml: no such file; recipes in recipes/: "
                                                r".*tiny\.yaml"):
        train(tmp_path, "--config", "recipes/tiny2.yaml")


def test_a_recipe_that_is_not_a_mapping_names_the_file(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- model_name_or_path: x\n")
    with pytest.raises(ValueError, match=r"list\.yaml: a recipe is a mapping of keys to values"):
        train(tmp_path, "--config", str(path))


def test_a_missing_eval_config_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--config .*nope\.yaml: no such file"):
        ev.main(["--config", str(tmp_path / "nope.yaml"), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_missing_stage_recipe_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--recipe .*nope\.yaml: no such file"):
        stages.main(["select", "--model", "m", "--recipe", str(tmp_path / "nope.yaml"), "--out",
                     str(tmp_path / "out.jsonl")])
    assert not (tmp_path / "out.jsonl").exists()


def test_a_missing_chain_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--chain .*nope\.yaml: no such file"):
        stages.main(["run", "--chain", str(tmp_path / "nope.yaml")])


# ---------------------------------------------------------------- dataset rows (reasonrl/run/data.py)


def load(tmp_path, tokenizer, rows, **kw):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kw = {"prompt_column": "problem", "answer_column": "answer", **kw}
    return data.load_prompts(ScriptArguments(dataset_name=str(path), **kw), tokenizer)


def test_an_empty_prompt_names_the_row(tmp_path, tokenizer):
    with pytest.raises(ValueError, match=r"d\.jsonl, row 1, column 'problem': the prompt is empty"):
        load(tmp_path, tokenizer, [{"problem": "1 + 1?", "answer": "2"}, {"problem": "  ", "answer": "2"}])


def test_a_chat_prompt_without_a_user_turn_names_the_row_and_the_roles(tmp_path, tokenizer):
    rows = [{"prompt": [{"role": "user", "content": "1 + 1?"}], "answer": "2"},
            {"prompt": [{"role": "system", "content": "Be brief."}], "answer": "2"}]
    with pytest.raises(ValueError, match=r"row 1, column 'prompt': a chat prompt without a user message "
                                         r"\(roles \['system'\]\)"):
        load(tmp_path, tokenizer, rows, prompt_column="prompt")


def test_an_empty_answer_names_the_row(tmp_path, tokenizer):
    with pytest.raises(ValueError, match=r"d\.jsonl, row 0, column 'answer': no ground truth \(empty or missing\)"):
        load(tmp_path, tokenizer, [{"problem": "1 + 1?", "answer": ""}])


def test_a_dataset_that_filtering_empties_fails_naming_max_prompt_length(tmp_path, tokenizer):
    with pytest.raises(ValueError, match=r"no prompt left to train on .*\"too_long_dropped\": 2.*"
                                         r"longer than max_prompt_length=4 tokens"):
        load(tmp_path, tokenizer, [{"problem": "1 + 1?", "answer": "2"}, {"problem": "2 + 2?", "answer": "4"}],
             max_prompt_length=4)


@pytest.mark.parametrize("tests", [[{"input": "1\n", "output": "2\n"}], {"inputs": ["1\n"], "outputs": ["2\n"]}])
def test_code_tests_stored_as_a_list_or_dict_ask_for_a_json_string(tmp_path, tokenizer, tests):
    with pytest.raises(ValueError, match=r"row 0, column 'tests': the ground truth is a (list|dict) .*"
                                         r"code test cases: a JSON string, json\.dumps\(tests\)"):
        load(tmp_path, tokenizer, [{"problem": "Add one.", "tests": tests}], answer_column="tests")


# ---------------------------------------------------------------- eval.py


def test_eval_benchmark_file_without_the_named_column_names_it_before_writing(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"question": "1 + 1?", "solution": "2"}) + "\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"b\.jsonl: no column 'answer' \(columns: \['question', 'solution'\]\); "
                                         r"name the question and answer columns: --extra b="):
        ev.main(["--model", str(tmp_path), "--extra", f"b={path}:question:answer", "--benchmarks", "b",
                 "--output_dir", str(out)])
    assert not out.exists()


def test_eval_model_path_that_does_not_exist_is_named_before_writing(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"question": "1 + 1?", "answer": "2"}) + "\n")
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"model outputs/run/checkpoint-7: no such directory; give a "
                                                r"checkpoint directory"):
        ev.main(["--model", "outputs/run/checkpoint-7", "--extra", f"b={path}:question:answer", "--benchmarks", "b",
                 "--output_dir", str(out)])
    assert not out.exists()


def test_eval_hub_id_that_is_not_cached_offline_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model nobody/no-such-model: no such directory, and not in the "
                                                r"local Hub cache \(HF_HUB_OFFLINE=1\)"):
        ev.check_model("nobody/no-such-model", "auto")


def test_eval_n_samples_zero_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"--n_samples 0: must be at least 1 \(leave it out for each benchmark's k\)"):
        ev.main(["--model", str(tmp_path), "--n_samples", "0", "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
