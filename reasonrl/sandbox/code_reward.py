"""Code reward: run the completion's program against test cases in the sandbox (AceReason-Nemotron style).

AceReason-Nemotron's code stages reward 1 only if the program passes ALL test cases, else 0
(mode="all", the default). mode="fraction" gives the fraction passed, for analysis or ablations.
Every test case runs in its own fresh sandbox process (sandbox.execute); the cases of a batch run in
parallel on a thread pool, one sandboxed process per case.

Conventions (what exactly is compared):
- Code: the LAST fenced block whose tag is empty or python/py/python3 (extract_code). A block with
  no closing fence is ignored: it almost always means the completion was cut off by the length limit.
- stdin/stdout cases {"input": str, "output": str}: the program's stdout and the expected output
  match if, after removing trailing whitespace from every line and dropping trailing empty lines,
  the lists of lines are equal, and the program exited with status 0 (a crash is a failure even
  after correct output, as on judges).
- Function-call cases {"fn_name": f, "inputs": [[args of call 1], ...], "outputs": [ret 1, ...]}
  (TACO / LiveCodeBench functional): f (a top-level function, or a method of class Solution) is
  called once per sandbox with the JSON-decoded args; the returned value, JSON round-tripped
  (tuples become lists), must equal the expected value, or its one-element wrapper [value] (TACO
  stores some outputs wrapped that way, and the TACO/APPS harness accepts both).

    python -c "from reasonrl.sandbox import code_reward as c; print(c.code_reward('```python\\nprint(int(input())*2)\\n```',
               [{'input': '21\\n', 'output': '42\\n'}]))"
    python -m pytest tests/test_code_reward.py -q
"""

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reasonrl.sandbox import runner as sandbox

PYTHON_TAGS = {"", "python", "py", "python3"}
RESULT_MARKER = "@@CODE_REWARD_RESULT@@"

# Runs inside the sandbox for function-call cases. The solution is exec'd under __name__ "solution",
# so its `if __name__ == "__main__":` block (which would read stdin) does not run.
CALL_HARNESS = """\
import json, sys
namespace = {"__name__": "solution"}
exec(compile(%(code)r, "solution.py", "exec"), namespace)
fn = namespace.get(%(fn_name)r)
if fn is None and isinstance(namespace.get("Solution"), type):
    fn = getattr(namespace["Solution"](), %(fn_name)r, None)
if fn is None:
    sys.exit("function %(fn_name)s is not defined")
result = fn(*json.loads(%(args)r))
sys.stdout.write("\\n%(marker)s" + json.dumps(result) + "\\n")
"""


def extract_code(completion: str, language: str = "python") -> str | None:
    """The last closed fenced code block tagged `language` (or untagged), without its fences."""
    tags = PYTHON_TAGS if language == "python" else {"", language}
    blocks = re.findall(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```", completion, re.M | re.S)
    chosen = [body for tag, body in blocks if tag.lower() in tags]
    return chosen[-1].strip("\n") if chosen else None


def parse_test_cases(value) -> list[dict]:
    """Normalise test cases to [{"input", "output"}] and [{"fn_name", "args", "expected"}] dicts.

    Accepts a JSON string or the decoded object: one case dict, a list of case dicts, or a TACO dict
    {"inputs": [...], "outputs": [...], "fn_name"?: str}. LiveCodeBench items
    {"input", "output", "testtype": "functional", "fn_name"} (one JSON arg per input line) work too.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"test cases are not valid JSON ({e}): {value[:200]!r}") from None
    items = value if isinstance(value, list) else [value]
    cases = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"test case {i} is a {type(item).__name__}, expected a dict: {item!r:.200}")
        if "inputs" in item or "outputs" in item:
            cases += _parse_taco(item, i)
        elif "input" in item and "output" in item:
            if item.get("testtype") == "functional":
                if "fn_name" not in item:
                    raise ValueError(f"test case {i} is functional but has no 'fn_name'")
                args = [json.loads(line) for line in item["input"].split("\n") if line.strip()]
                cases.append({"fn_name": item["fn_name"], "args": args,
                              "expected": json.loads(item["output"])})
            else:
                cases.append({"input": _text(item["input"], i, "input"),
                              "output": _text(item["output"], i, "output")})
        else:
            raise ValueError(f"test case {i} has keys {sorted(item)}; expected 'input'+'output' "
                             "or 'inputs'+'outputs' (+ 'fn_name' for function calls)")
    if not cases:
        raise ValueError("no test cases: an empty list would reward every program")
    return cases


def _parse_taco(item, i):
    inputs, outputs = item.get("inputs"), item.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise ValueError(f"test case {i}: 'inputs' and 'outputs' must be lists of equal length")
    fn_name = item.get("fn_name")
    if fn_name:
        for j, args in enumerate(inputs):
            if not isinstance(args, list):
                raise ValueError(f"test case {i}: inputs[{j}] must be the list of arguments of call {j}")
        return [{"fn_name": fn_name, "args": a, "expected": o} for a, o in zip(inputs, outputs)]
    return [{"input": _text(a, i, "inputs"), "output": _text(o, i, "outputs")} for a, o in zip(inputs, outputs)]


def _text(x, i, key):
    if isinstance(x, list) and all(isinstance(line, str) for line in x):
        return "\n".join(x) + "\n"  # some datasets store stdin/stdout as a list of lines
    if not isinstance(x, str):
        raise ValueError(f"test case {i}: {key!r} must be a string (stdin/stdout), got {type(x).__name__}")
    return x


def outputs_match(actual: str, expected: str) -> bool:
    """Equal line by line after stripping trailing whitespace per line and trailing empty lines."""
    def lines(s):
        out = [line.rstrip() for line in s.split("\n")]
        while out and not out[-1]:
            out.pop()
        return out
    return lines(actual) == lines(expected)


def run_case(code: str, case: dict, timeout_s: float = 5.0, memory_mb: int = 1024) -> bool:
    """Whether `code` passes one normalised test case (runs one sandboxed process)."""
    if "fn_name" in case:
        program = CALL_HARNESS % {"code": code, "fn_name": case["fn_name"],
                                  "args": json.dumps(case["args"]), "marker": RESULT_MARKER}
        r = sandbox.execute(program, "", timeout_s=timeout_s, memory_mb=memory_mb)
        if r.returncode != 0 or r.timed_out or RESULT_MARKER not in r.stdout:
            return False
        result = json.loads(r.stdout.rsplit(RESULT_MARKER, 1)[1])
        expected = case["expected"]
        return result == expected or (isinstance(expected, list) and len(expected) == 1 and result == expected[0])
    r = sandbox.execute(code, case["input"], timeout_s=timeout_s, memory_mb=memory_mb)
    if r.returncode != 0 or r.timed_out or r.output_truncated:
        return False
    return outputs_match(r.stdout, case["output"])


def default_workers() -> int:
    return len(os.sched_getaffinity(0))


def score_programs(codes: list[str | None], cases: list[list[dict]], mode: str = "all",
                   timeout_s: float = 5.0, memory_mb: int = 1024, workers: int | None = None) -> list[float]:
    """Reward of each program on its own cases, all cases of all programs sharing one thread pool."""
    if mode not in ("all", "fraction"):
        raise ValueError(f"mode must be 'all' or 'fraction', got {mode!r}")
    failed = [code is None for code in codes]  # in mode "all", later cases of a failed program are skipped

    def job(k, case):
        if mode == "all" and failed[k]:
            return False  # the reward is already 0 whatever the remaining cases do
        ok = run_case(codes[k], case, timeout_s, memory_mb)
        if not ok:
            failed[k] = True
        return ok

    jobs = [(k, case) for k, ks_cases in enumerate(cases) if codes[k] is not None for case in ks_cases]
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        results = list(pool.map(lambda kc: job(*kc), jobs))
    passed = [0] * len(codes)
    for (k, _), ok in zip(jobs, results):
        passed[k] += ok
    if mode == "all":
        return [1.0 if codes[k] is not None and passed[k] == len(cases[k]) else 0.0 for k in range(len(codes))]
    return [passed[k] / len(cases[k]) if codes[k] is not None else 0.0 for k in range(len(codes))]


def code_reward(completion: str, tests, mode: str = "all", timeout_s: float = 5.0, memory_mb: int = 1024,
                workers: int | None = None) -> float:
    """1.0 if the completion's last code block passes every test case, else 0.0 (mode="fraction": share passed)."""
    return score_programs([extract_code(completion)], [parse_test_cases(tests)], mode, timeout_s, memory_mb,
                          workers)[0]


def _completion_text(completion) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return completion[-1]["content"]
    return completion


def make_code_reward(mode: str = "all", timeout_s: float = 5.0, memory_mb: int = 1024,
                     workers: int | None = None):
    """A TRL reward function f(completions, solution, **kw) -> list[float | None]; `solution` holds each row's
    test cases (train_grpo.py maps the recipe's answer_column, here the tests, onto `solution`).

    Rows whose tests are None get None (TRL then ignores this reward for them, e.g. math rows in a
    mixed dataset). If kw has "log_metric", it is called as log_metric(name, value) with
    "code/pass_all_rate" (share of scored completions passing every case) and "code/no_code_block_rate".
    """
    def code_reward_fn(completions, solution, **kw):
        tests = solution
        rows = [i for i, t in enumerate(tests) if t is not None]
        codes = [extract_code(_completion_text(completions[i])) for i in rows]
        scores = score_programs(codes, [parse_test_cases(tests[i]) for i in rows], mode, timeout_s,
                                memory_mb, workers)
        rewards = [None] * len(completions)
        for i, s in zip(rows, scores):
            rewards[i] = s
        log_metric = kw.get("log_metric")
        if log_metric is not None and rows:
            log_metric("code/pass_all_rate", sum(s == 1.0 for s in scores) / len(rows))
            log_metric("code/no_code_block_rate", sum(c is None for c in codes) / len(rows))
        return rewards

    code_reward_fn.__name__ = f"code_reward_{mode}"
    return code_reward_fn


def load_code_dataset(path_or_hub_id: str, problem_column: str = "problem", tests_column: str = "tests",
                      split: str = "train"):
    """A datasets.Dataset with exactly two columns, problem (str) and tests (JSON string), from a local
    .jsonl/.json/.parquet file or a Hub dataset id. Every row's tests are checked with parse_test_cases."""
    import datasets

    path = Path(path_or_hub_id)
    if path.exists():
        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
        if kind is None:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet")
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    else:
        ds = datasets.load_dataset(path_or_hub_id, split=split)  # Hub id; not exercised offline
    for column, arg in ((problem_column, "problem_column"), (tests_column, "tests_column")):
        if column not in ds.column_names:
            raise ValueError(f"{path_or_hub_id}: no column {column!r} (columns: {ds.column_names}); "
                             f"set {arg}")

    def convert(row, idx):
        tests = row[tests_column]
        try:
            parse_test_cases(tests)
        except ValueError as e:
            raise ValueError(f"{path_or_hub_id} row {idx}, column {tests_column!r}: {e}") from None
        return {"problem": row[problem_column], "tests": tests if isinstance(tests, str) else json.dumps(tests)}

    return ds.map(convert, with_indices=True, remove_columns=ds.column_names)
