"""Training data: a recipe's dataset (Hub id or local file) -> chat prompts with JustRL's template, ground truths
and row ids; duplicates and too-long prompts dropped and counted.

train_grpo.py, stages.py (hard-prompt selection) and reasonrl/demo/tiny.py build prompts here, so what a model is trained on,
selected on and warm-started on is the same text. Nothing to run on its own; to see a recipe's data counts:

    python train_grpo.py --config recipes/justrl.yaml --dry_run   # the resolved config (loads no data)
    python -c "from reasonrl.run import data; print(data.build_prompt('What is 1+1?'))"
"""

import json
import os

JUSTRL_SUFFIX = "\n\nPlease reason step by step, and put your final answer within \\boxed{}."
# DAPO-Math-17k wraps every problem in its own "Answer:" instruction; `strip_dapo_instruction` removes it.
DAPO_PREFIX = ("Solve the following math problem step by step. The last line of your response should be of the form "
               "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
DAPO_SUFFIX = "\n\nRemember to put your answer on its own line after \"Answer:\"."


def build_prompt(user_content: str, suffix: str = JUSTRL_SUFFIX, system_prompt: str | None = None,
                 strip_dapo_instruction: bool = False) -> list[dict]:
    """The chat messages of one training prompt: [system], user = problem + suffix (JustRL's template)."""
    if strip_dapo_instruction and user_content.startswith(DAPO_PREFIX) and user_content.endswith(DAPO_SUFFIX):
        user_content = user_content[len(DAPO_PREFIX):-len(DAPO_SUFFIX)]
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": user_content + suffix}]


def _column(row, path: str):
    """row["a"]["b"] for path "a.b"; None where any level is missing."""
    value = row
    for key in path.split("."):
        try:
            value = value[key]
        except (KeyError, TypeError, IndexError):
            return None
    return value


def load_rows(source: str, config: str | None = None, split: str = "train"):
    """A dataset as stored: a local .parquet/.jsonl/.json/.csv file, or a Hub id (config, split)."""
    from datasets import load_dataset

    ext = os.path.splitext(source)[1].lower()
    if os.path.exists(source):
        kind = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}.get(ext)
        if kind is None:
            raise ValueError(f"{source}: unsupported data file type {ext!r}; use .parquet, .jsonl, .json or .csv.")
        return load_dataset(kind, data_files=source, split="train")
    if ext in (".parquet", ".jsonl", ".json", ".csv"):
        raise FileNotFoundError(f"dataset file {source} does not exist (dataset_name / heldout_file).")
    return load_dataset(source, config, split=split)


def load_prompts(args, tokenizer, path: str | None = None):
    """Rows of {prompt (chat messages), solution (ground truth), row_id}; duplicates and long prompts dropped as
    configured. row_id is the row's index in load_rows(). `args` holds ScriptArguments' data fields (reasonrl/run/config.py).
    Returns (dataset, counts)."""
    source = path or args.dataset_name
    ds = load_rows(source, args.dataset_config, args.dataset_split)
    for key in ("prompt_column", "answer_column"):
        column = getattr(args, key).split(".")[0]
        if column not in ds.column_names:
            raise ValueError(f"{source} has no column '{column}' (recipe key {key}: {getattr(args, key)!r}); "
                             f"its columns are {ds.column_names}.")

    def problem_and_answer(row, idx):
        return {"problem": row_problem(row, idx, args.prompt_column, source),
                "solution": row_answer(row, idx, args.answer_column, source), "row_id": idx}

    counts = {"rows": len(ds)}
    ds = ds.map(problem_and_answer, with_indices=True, remove_columns=ds.column_names, num_proc=args.dataset_num_proc)
    if args.dedup_prompts:  # before tokenizing: DAPO-Math-17k repeats each prompt ~100 times
        seen, keep = set(), []
        for i, problem in enumerate(ds["problem"]):
            if problem not in seen:
                seen.add(problem)
                keep.append(i)
        ds = ds.select(keep)
    counts["duplicates_dropped"] = counts["rows"] - len(ds)

    def to_prompt(row):
        prompt = build_prompt(row["problem"], args.prompt_suffix, args.system_prompt, args.strip_dapo_instruction)
        n_tokens = len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False))
        return {"prompt": prompt, "n_prompt_tokens": n_tokens}

    ds = ds.map(to_prompt, remove_columns=["problem"], num_proc=args.dataset_num_proc)
    before = len(ds)
    ds = ds.filter(lambda n: n <= args.max_prompt_length, input_columns="n_prompt_tokens").remove_columns("n_prompt_tokens")
    counts["too_long_dropped"], counts["kept"] = before - len(ds), len(ds)
    if len(ds) == 0:
        raise ValueError(f"{source}: no prompt left to train on ({json.dumps(counts)}): every prompt is longer than "
                         f"max_prompt_length={args.max_prompt_length} tokens (chat template included); raise "
                         "max_prompt_length or check prompt_column / system_prompt / prompt_suffix."
                         if counts["rows"] else f"{source}: the dataset has no rows.")
    return ds, counts


def row_problem(row, idx: int, column: str, source: str) -> str:
    """The problem text of one row: a string, or in chat format the last user message. Errors name the row."""
    content = _column(row, column)
    where = f"{source}, row {idx}, column {column!r}"
    if isinstance(content, list):  # chat format: the problem is the last user message
        users = [m for m in content if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            roles = [m.get("role") if isinstance(m, dict) else type(m).__name__ for m in content]
            raise ValueError(f"{where}: a chat prompt without a user message (roles {roles}); each chat prompt "
                             "needs a {'role': 'user', 'content': <problem>} message.")
        content = users[-1].get("content")
    if not isinstance(content, str):
        raise ValueError(f"{where}: the prompt is {type(content).__name__}, expected the problem text or a list "
                         "of chat messages (set prompt_column to the column that holds it).")
    if not content.strip():
        raise ValueError(f"{where}: the prompt is empty; remove the row or fill in the problem.")
    return content


def row_answer(row, idx: int, column: str, source: str) -> str:
    """The ground truth of one row as a string (numbers are converted). Errors name the row."""
    answer = _column(row, column)
    where = f"{source}, row {idx}, column {column!r}"
    if isinstance(answer, (list, dict)):
        raise ValueError(f"{where}: the ground truth is a {type(answer).__name__} ({str(answer)[:80]}); store it as "
                         "a string (code test cases: a JSON string, json.dumps(tests)).")
    if answer is None or not str(answer).strip():
        raise ValueError(f"{where}: no ground truth (empty or missing); remove the row or fill in the answer "
                         "(answer_column names the column, dotted for nesting).")
    return str(answer)
