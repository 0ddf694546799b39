"""Specification of code_reward: extraction, test-case formats, comparison, rewards, dataset loading.

    python -m pytest tests/test_code_reward.py -q
"""

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from conftest import IN_CI  # noqa: E402
from reasonrl.sandbox import code_reward as cr  # noqa: E402
from reasonrl.sandbox import runner as sandbox  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "code" / "problems.jsonl"
# Under CI a missing sandbox fails these tests instead of skipping them (a green run must mean it works).
needs_sandbox = pytest.mark.skipif(sandbox.choose_backend() is None and not IN_CI,
                                   reason="no sandbox backend: run scripts/install_sandbox_deps.sh")

ADD_STDIO = [{"input": "1 2\n", "output": "3\n"}, {"input": "2 2\n", "output": "4\n"},
             {"input": "0 7\n", "output": "7\n"}]
ADD_CALL = {"fn_name": "add", "inputs": [[1, 2], [2, 2], [0, 7]], "outputs": [3, 4, 7]}


def fenced(code):
    return f"Here is my solution.\n```python\n{code}\n```\n"


# ---------------------------------------------------------------- extract_code


def test_extract_takes_the_last_python_block():
    text = "```python\nprint(1)\n```\nbetter:\n```python\nprint(2)\n```\nDone."
    assert cr.extract_code(text) == "print(2)"


def test_extract_accepts_untagged_py_and_python3_blocks():
    assert cr.extract_code("```\nx = 1\n```") == "x = 1"
    assert cr.extract_code("```py\nx = 2\n```") == "x = 2"
    assert cr.extract_code("```Python3\nx = 3\n```") == "x = 3"


def test_extract_skips_blocks_in_other_languages():
    assert cr.extract_code("```python\nprint(1)\n```\n```bash\npython main.py\n```") == "print(1)"
    assert cr.extract_code("```cpp\nint main(){}\n```", language="cpp") == "int main(){}"


def test_extract_without_any_block_is_none():
    assert cr.extract_code("print(1)") is None
    assert cr.extract_code("") is None


def test_extract_ignores_an_unclosed_last_block():
    text = "```python\nprint('draft')\n```\n```python\nprint('cut off by the length lim"
    assert cr.extract_code(text) == "print('draft')"
    assert cr.extract_code("```python\nprint(1)") is None


def test_extract_keeps_indentation_and_inner_blank_lines():
    assert cr.extract_code("```python\n\ndef f():\n\n    return 1\n\n```") == "def f():\n\n    return 1"


# ---------------------------------------------------------------- parse_test_cases


def test_parse_stdio_list_from_json_string():
    assert cr.parse_test_cases('[{"input": "1\\n", "output": "2\\n"}]') == [{"input": "1\n", "output": "2\n"}]


def test_parse_single_stdio_dict():
    assert cr.parse_test_cases({"input": "1", "output": "2"}) == [{"input": "1", "output": "2"}]


def test_parse_taco_stdio_with_lists_of_lines():
    value = {"inputs": ["1 2\n", ["3", "4"]], "outputs": ["3\n", ["7"]]}
    assert cr.parse_test_cases(value) == [{"input": "1 2\n", "output": "3\n"}, {"input": "3\n4\n", "output": "7\n"}]


def test_parse_taco_function_calls():
    assert cr.parse_test_cases(ADD_CALL) == [{"fn_name": "add", "args": [1, 2], "expected": 3},
                                             {"fn_name": "add", "args": [2, 2], "expected": 4},
                                             {"fn_name": "add", "args": [0, 7], "expected": 7}]


def test_parse_livecodebench_functional_one_json_argument_per_line():
    value = [{"input": "[2, 7]\n9", "output": "[0, 1]", "testtype": "functional", "fn_name": "twoSum"}]
    assert cr.parse_test_cases(value) == [{"fn_name": "twoSum", "args": [[2, 7], 9], "expected": [0, 1]}]


@pytest.mark.parametrize("value, message", [
    ("{not json", "test cases are not valid JSON"),
    ({"inputs": ["1"], "outputs": []}, "test case 0: 'inputs' and 'outputs' must be lists of equal length"),
    ([{"in": "1", "out": "2"}], r"test case 0 has keys \['in', 'out'\]"),
    ([], "no test cases"),
    ([{"input": 1, "output": "2"}], "test case 0: 'input' must be a string"),
    ({"fn_name": "f", "inputs": [1], "outputs": [1]}, r"inputs\[0\] must be the list of arguments"),
    (["1"], "test case 0 is a str"),
])
def test_parse_errors_name_the_problem(value, message):
    with pytest.raises(ValueError, match=message):
        cr.parse_test_cases(value)


# ---------------------------------------------------------------- outputs_match


@pytest.mark.parametrize("actual, expected, same", [
    ("3\n", "3", True),
    ("1 2  \n3\t\n\n\n", "1 2\n3\n", True),
    ("1 2\n", " 1 2\n", False),  # leading whitespace is significant
    ("1\n\n2\n", "1\n2\n", False),  # so are blank lines between lines
    ("", "\n", True),
    ("3.0\n", "3\n", False),
])
def test_outputs_match_ignores_only_trailing_whitespace(actual, expected, same):
    assert cr.outputs_match(actual, expected) is same


# ---------------------------------------------------------------- code_reward (runs the sandbox)

CORRECT = "a, b = map(int, input().split())\nprint(a + b)"
WRONG = "a, b = map(int, input().split())\nprint(a * b)"  # right only for "2 2"
CRASHES = "print(3)\nraise SystemExit(1)"
SLOW = "import time\ntime.sleep(10)"
ADD_FN = "def add(a, b):\n    return a + b"
ADD_FN_WRONG = "def add(a, b):\n    return a * b"


@needs_sandbox
@pytest.mark.parametrize("code, all_reward, fraction", [
    (CORRECT, 1.0, 1.0),
    (WRONG, 0.0, 1 / 3),
    (CRASHES, 0.0, 0.0),
])
def test_stdio_rewards(code, all_reward, fraction):
    assert cr.code_reward(fenced(code), ADD_STDIO) == all_reward
    assert cr.code_reward(fenced(code), ADD_STDIO, mode="fraction") == fraction


@needs_sandbox
@pytest.mark.parametrize("code, all_reward, fraction", [
    (ADD_FN, 1.0, 1.0),
    (ADD_FN_WRONG, 0.0, 1 / 3),
    ("def add(a, b):\n    raise ValueError", 0.0, 0.0),
    ("def plus(a, b):\n    return a + b", 0.0, 0.0),  # wrong function name
    ("class Solution:\n    def add(self, a, b):\n        return a + b", 1.0, 1.0),
])
def test_function_call_rewards(code, all_reward, fraction):
    assert cr.code_reward(fenced(code), ADD_CALL) == all_reward
    assert cr.code_reward(fenced(code), json.dumps(ADD_CALL), mode="fraction") == fraction


@needs_sandbox
def test_function_call_accepts_the_taco_wrapped_output_and_tuples():
    tests = {"fn_name": "pair", "inputs": [[1]], "outputs": [[[1, 2]]]}
    assert cr.code_reward(fenced("def pair(x):\n    return (x, x + 1)"), tests) == 1.0


@needs_sandbox
def test_function_call_does_not_run_the_main_guard():
    code = ADD_FN + "\nif __name__ == '__main__':\n    print(add(*map(int, input().split())))"
    assert cr.code_reward(fenced(code), ADD_CALL) == 1.0


@needs_sandbox
def test_prints_of_a_function_solution_do_not_matter():
    assert cr.code_reward(fenced("print('debug')\n" + ADD_FN), ADD_CALL) == 1.0


@needs_sandbox
def test_timeout_is_a_failure():
    assert cr.code_reward(fenced(SLOW), ADD_STDIO[:1], timeout_s=0.5) == 0.0


@needs_sandbox
def test_timeout_in_one_case_only_costs_that_case():
    code = "a, b = map(int, input().split())\nif a == 0:\n    while True: pass\nprint(a + b)"
    # 3 s: the two quick cases must finish inside it on a busy machine (CI runs two test workers on 2 cores)
    assert cr.code_reward(fenced(code), ADD_STDIO, mode="fraction", timeout_s=3.0) == 2 / 3


def test_no_code_block_scores_zero_without_running_anything(monkeypatch):
    monkeypatch.setattr(sandbox, "execute", lambda *a, **k: pytest.fail("sandbox must not run"))
    assert cr.code_reward("I think the answer is 3.", ADD_STDIO) == 0.0


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="mode must be 'all' or 'fraction', got 'any'"):
        cr.code_reward(fenced(CORRECT), ADD_STDIO, mode="any")


@needs_sandbox
def test_same_inputs_same_reward_and_parallel_equals_serial():
    completions = [fenced(CORRECT), fenced(WRONG), "no code", fenced(CRASHES), fenced(ADD_FN)]
    tests = [ADD_STDIO, ADD_STDIO, ADD_STDIO, ADD_STDIO, ADD_CALL]
    codes = [cr.extract_code(c) for c in completions]
    cases = [cr.parse_test_cases(t) for t in tests]
    serial = cr.score_programs(codes, cases, mode="fraction", workers=1)
    assert serial == [1.0, 1 / 3, 0.0, 0.0, 1.0]
    assert cr.score_programs(codes, cases, mode="fraction", workers=2) == serial
    assert cr.score_programs(codes, cases, mode="fraction", workers=4) == serial
    assert cr.score_programs(codes, cases, mode="all", workers=2) == [1.0, 0.0, 0.0, 0.0, 1.0]


# ---------------------------------------------------------------- TRL reward function


@needs_sandbox
def test_trl_reward_function_scores_a_batch_and_logs():
    logged = []
    f = cr.make_code_reward(mode="all", timeout_s=2.0)
    completions = [[{"role": "assistant", "content": fenced(CORRECT)}],
                   [{"role": "assistant", "content": fenced(WRONG)}],
                   [{"role": "assistant", "content": "no idea"}],
                   [{"role": "assistant", "content": "42"}]]
    tests = [json.dumps(ADD_STDIO), json.dumps(ADD_STDIO), json.dumps(ADD_STDIO), None]
    rewards = f(completions, tests, log_metric=lambda name, value: logged.append((name, value)))
    assert rewards == [1.0, 0.0, 0.0, None]
    assert logged == [("code/pass_all_rate", 1 / 3), ("code/no_code_block_rate", 1 / 3)]
    assert f.__name__ == "code_reward_all"


# ---------------------------------------------------------------- datasets


def test_fixture_loads_as_problem_and_tests_columns():
    ds = cr.load_code_dataset(str(FIXTURE))
    assert ds.column_names == ["problem", "tests"] and len(ds) == 6
    assert ds[0]["problem"] == "Read two integers a and b on one line and print a + b."
    assert cr.parse_test_cases(ds[0]["tests"])[0] == {"input": "1 2\n", "output": "3\n"}


@needs_sandbox
def test_every_fixture_reference_solution_passes_and_a_wrong_one_fails():
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    f = cr.make_code_reward(mode="all")
    assert f([fenced(r["solution"]) for r in rows], [r["tests"] for r in rows]) == [1.0] * len(rows)
    assert f([fenced("print(0)")] * len(rows), [r["tests"] for r in rows]) == [0.0] * len(rows)


def test_missing_column_names_file_and_column():
    with pytest.raises(ValueError, match=r"problems.jsonl: no column 'question' .*set problem_column"):
        cr.load_code_dataset(str(FIXTURE), problem_column="question")


def test_parquet_with_other_column_names(tmp_path):
    import pandas as pd

    path = tmp_path / "code.parquet"
    pd.DataFrame({"question": ["q"], "test_cases": [json.dumps(ADD_STDIO)]}).to_parquet(path)
    ds = cr.load_code_dataset(str(path), problem_column="question", tests_column="test_cases")
    assert ds[0] == {"problem": "q", "tests": json.dumps(ADD_STDIO)}


def test_bad_tests_row_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "a", "tests": "[]"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl row 0, column 'tests': no test cases"):
        cr.load_code_dataset(str(path))
