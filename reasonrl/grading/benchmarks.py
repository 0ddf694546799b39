"""JustRL's evaluation protocol and its files, shared by eval.py and validation inside training
(reasonrl/trainer/validation.py): the prompt, the benchmarks and their k, EvalArgs (eval.py's settings), reading a
benchmark file of either schema, the (problem, round) requests, and the resumable per-sample output files.

Test: python -m pytest tests/test_eval.py -q
"""

import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from reasonrl.grading import report

PROMPT_TEMPLATE = "{problem} Please reason step by step, and put your final answer within \\boxed{}."
# Instruction suffixes that verl-prepared benchmark copies append to the problem.
INSTRUCTION_SUFFIXES = [
    "Let's think step by step and output the final answer within \\boxed{}.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
]

# name: (n_samples, expected rows, Hub id "repo:split"). Hub ids are plausible public copies found by search;
# Hub loading is untested offline and their row counts may differ from the local files (a warning says so).
BENCHMARKS = {
    "AIME24": (32, 30, "HuggingFaceH4/aime_2024:train"),
    "AIME25": (32, 30, "MathArena/aime_2025:train"),
    "AMC23": (32, 40, "CohenQu/math_reasoning_benchmark:AMC2023"),
    "MATH-500": (4, 500, "HuggingFaceH4/MATH-500:test"),
    "Minerva": (4, 272, "CohenQu/math_reasoning_benchmark:MinervaMATH"),
    "Olympiad-Bench": (4, 674, "zkshan2002/olympiad_bench:test"),
    "HMMT25": (32, 30, "MathArena/hmmt_feb_2025:train"),
    "BRUMO25": (32, 30, "MathArena/brumo_2025:train"),
    "CMIMC25": (32, 40, "MathArena/cmimc_2025:train"),
}

# CompassVerifier's non-CoT judging prompt, condensed; the model answers one letter and "A" means correct.
# Config keys whose change changes the samples: resuming into a DIR that differs in one of them is refused.
SAMPLE_KEYS = ("model", "backend", "temperature", "top_p", "max_new_tokens", "prompt_template", "system_prompt", "seed",
               "dtype", "batch_size", "max_model_len")


@dataclass
class EvalArgs:
    # what to evaluate
    model: str | None = field(default=None, metadata={"help": "checkpoint dir or Hub id"})
    models: list[str] = field(default_factory=list, metadata={"help": "several checkpoints: DIR/<basename> each"})
    benchmarks: list[str] = field(default_factory=lambda: list(BENCHMARKS))
    data_dir: str | None = field(default=None, metadata={"help": "<data_dir>/<NAME>/test.parquet; unset: the Hub"})
    extra: list[str] = field(default_factory=list, metadata={"help": "NAME=path:question_col:answer_col[:n_samples]"})
    n_samples: int | None = field(default=None, metadata={"help": "override k for every benchmark"})
    limit: int | None = field(default=None, metadata={"help": "first N problems per benchmark (smoke runs)"})
    # protocol (JustRL, recipes.md section 3)
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 31744
    prompt_template: str = PROMPT_TEMPLATE
    system_prompt: str | None = field(default=None, metadata={"help": "a system message first (a training recipe's "
                                                                      "system_prompt); none in JustRL's protocol"})
    seed: int = 0
    # generation backend
    backend: str = field(default="auto", metadata={"help": "auto (vllm if CUDA else transformers), vllm, "
                                                           "transformers, openai"})
    dtype: str = "bfloat16"
    batch_size: int = field(default=16, metadata={"help": "transformers: fixed-composition prompt chunks"})
    max_model_len: int | None = field(default=None, metadata={"help": "vllm: context length (default: model's)"})
    gpu_memory_utilization: float = 0.9
    base_url: str | None = field(default=None, metadata={"help": "openai: e.g. http://127.0.0.1:8000/v1"})
    concurrency: int = field(default=64, metadata={"help": "openai: requests in flight"})
    max_samples: int | None = field(default=None, metadata={"help": "stop after this many new samples (resume "
                                                                    "later by rerunning)"})
    # grading
    grade_workers: int = 0
    grade_timeout_s: float = 2.0
    verifier: str | None = field(default=None, metadata={"help": "e.g. opencompass/CompassVerifier-3B"})
    verifier_base_url: str | None = field(default=None, metadata={"help": "serve the verifier over openai API"})
    verifier_tail_chars: int = 2000
    regrade: bool = field(default=False, metadata={"help": "grade existing outputs in --output_dir, no generation"})
    # outputs
    output_dir: str = "runs/eval"
    compare: str | None = field(default=None, metadata={"help": f"one of {sorted(report.REPORTED)}"})
    plot_runs: list[str] = field(default_factory=list, metadata={"help": "run dirs to plot against step"})
    steps: list[int] = field(default_factory=list, metadata={"help": "steps for --plot_runs/--models"})

    def __post_init__(self):
        if self.n_samples is not None and self.n_samples < 1:
            raise ValueError(f"--n_samples {self.n_samples}: must be at least 1 (leave it out for each benchmark's k)")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit {self.limit}: must be at least 1 (leave it out for every problem)")


# ---------------------------------------------------------------- benchmarks


def bare_problem(content: str) -> str:
    """The problem text without a known instruction suffix that a prepared copy may carry."""
    text = content.rstrip()
    for suffix in INSTRUCTION_SUFFIXES:
        if text.endswith(suffix):
            return text[: -len(suffix)].rstrip()
    return text


def unwrap_boxed(answer: str) -> str:
    """'\\boxed{204}' -> '204' (AIME24's ground truths are boxed); anything else unchanged."""
    answer = answer.strip()
    if answer.startswith("\\boxed{") and answer.endswith("}"):
        return answer[len("\\boxed{"):-1].strip()
    return answer


def read_table(path: str):
    """A parquet or jsonl file as a DataFrame; jsonl values keep their JSON types (answers stay strings)."""
    import pandas as pd

    if not os.path.exists(path):
        raise FileNotFoundError(f"benchmark file {path} does not exist")
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    if path.endswith((".jsonl", ".json")):
        with open(path) as f:
            return pd.DataFrame([json.loads(line) for line in f if line.strip()])
    raise ValueError(f"{path}: only .parquet and .jsonl benchmark files are supported")


def rows_to_problems(name: str, df, source: str, question_col: str | None = None,
                     answer_col: str | None = None) -> list[dict]:
    """Rows of either schema (or named columns) -> [{example_id, problem, answer}], schema detected by columns."""
    cols = set(df.columns)

    def need(*names):
        for col in names:
            if col not in cols:
                raise ValueError(f"{source}: no column '{col}' (columns: {sorted(cols)}); name the question and "
                                 f"answer columns: --extra {name}={source}:QUESTION_COLUMN:ANSWER_COLUMN")

    if question_col or answer_col:
        need(question_col, answer_col)
        return [{"example_id": f"{name}-{i}", "problem": str(q).strip(), "answer": str(a).strip()}
                for i, (q, a) in enumerate(zip(df[question_col], df[answer_col]))]
    if "prompt" in cols or "reward_model" in cols:  # verl schema
        need("prompt", "reward_model")
        ids = ([str(e["index"]) for e in df["extra_info"]] if "extra_info" in cols
               else [f"{name}-{i}" for i in range(len(df))])
        return [{"example_id": i, "problem": bare_problem(p[-1]["content"]),
                 "answer": unwrap_boxed(str(rm["ground_truth"]))}
                for i, p, rm in zip(ids, df["prompt"], df["reward_model"])]
    need("problem", "answer")  # MathArena schema (problem_idx) or a plain problem/answer table
    ids = df["problem_idx"] if "problem_idx" in cols else range(len(df))
    return [{"example_id": f"{name}-{i}", "problem": str(q).strip(), "answer": unwrap_boxed(str(a))}
            for i, q, a in zip(ids, df["problem"], df["answer"])]


def parse_extra(spec: str) -> tuple[str, str, str | None, str | None, int | None]:
    """'NAME=path.jsonl:question:answer[:n]' -> (name, path, question_col, answer_col, n_samples);
    'NAME=path.parquet' alone reads a file in one of the two benchmark schemas."""
    name, sep, rest = spec.partition("=")
    parts = rest.split(":")
    if not sep or len(parts) not in (1, 3, 4):
        raise ValueError(f"--extra {spec!r}: expected NAME=path.jsonl:question_col:answer_col[:n_samples] "
                         "or NAME=path in the verl or MathArena schema")
    parts += [None] * (4 - len(parts))
    if parts[3] is not None and (not parts[3].isdigit() or int(parts[3]) < 1):
        raise ValueError(f"--extra {spec!r}: n_samples {parts[3]!r} must be a whole number, at least 1")
    return name, parts[0], parts[1], parts[2], int(parts[3]) if parts[3] else None


def load_benchmark(name: str, args: EvalArgs) -> tuple[list[dict], int, str]:
    """(problems, n_samples, source) for a registered or --extra benchmark."""
    extras = {e[0]: e for e in map(parse_extra, args.extra)}
    if name in extras:
        _, path, q_col, a_col, n = extras[name]
        problems, n, source = rows_to_problems(name, read_table(path), path, q_col, a_col), n or 1, path
    elif name in BENCHMARKS:
        n, rows, hub = BENCHMARKS[name]
        if args.data_dir:
            source = os.path.join(args.data_dir, name, "test.parquet")
            problems = rows_to_problems(name, read_table(source), source)
        else:  # untested offline
            import datasets

            source = hub
            repo, split = hub.split(":")
            problems = rows_to_problems(name, datasets.load_dataset(repo, split=split).to_pandas(), hub)
        if len(problems) != rows:
            print(f"warning: {source} has {len(problems)} rows, the paper's {name} has {rows}", file=sys.stderr)
    else:
        raise KeyError(f"unknown benchmark {name!r}: use one of {list(BENCHMARKS)} or add it with --extra")
    return problems[: args.limit], args.n_samples or n, source


# ---------------------------------------------------------------- resumable outputs


def sample_key(record: dict) -> tuple[str, int]:
    return record["example_id"], record["round"]


def canonical_key(record: dict) -> tuple:
    """Natural order of example ids ('X-2' before 'X-10'), then round."""
    parts = re.split(r"(\d+)", record["example_id"])
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts), record["round"]


def plan_requests(name: str, problems: list[dict], n_samples: int, args: EvalArgs, chunk_size: int) -> list[dict]:
    """All (example, round) requests in generation order (round by round), each with its seed and chunk id."""
    if "{problem}" not in args.prompt_template:
        raise ValueError(f"--prompt_template {args.prompt_template!r} has no {{problem}} placeholder")
    requests = []
    for r in range(n_samples):
        for i, p in enumerate(problems):
            prompt = args.prompt_template.replace("{problem}", p["problem"])
            requests.append({"benchmark": name, "example_id": p["example_id"], "round": r, "problem": p["problem"],
                             "prompt": prompt, "answer": p["answer"], "seed": args.seed + r,
                             "chunk": (name, r, i // chunk_size),
                             "messages": ([{"role": "system", "content": args.system_prompt}] if args.system_prompt
                                          else []) + [{"role": "user", "content": prompt}]})
    return requests


def read_samples(path: Path) -> dict[tuple[str, int], dict]:
    """Records already in a (possibly interrupted) output file; a half-written last line is dropped."""
    if not path.exists():
        return {}
    lines = path.read_text().split("\n")
    if lines[-1]:  # no trailing newline: the run died mid-write
        print(f"warning: {path}: dropping a half-written last line", file=sys.stderr)
        path.write_text("\n".join(lines[:-1]) + "\n" if len(lines) > 1 else "")
    records = {}
    for n, line in enumerate(lines[:-1], 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n} is not valid JSON ({e}); fix or delete that line") from e
        records[sample_key(record)] = record
    return records


def write_canonical(path: Path, records: list[dict]) -> None:
    """Rewrite an output file in canonical order, so a resumed run ends byte-identical to an uninterrupted one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sorted(records, key=canonical_key)))
    tmp.replace(path)


def run_config(args: EvalArgs, model: str, backend: str, sources: dict) -> dict:
    import torch
    import transformers

    config = {k: v for k, v in asdict(args).items() if k in SAMPLE_KEYS}
    config.update(model=model, backend=backend)
    if backend != "transformers":
        config.pop("batch_size")  # only the transformers backend's samples depend on the batching
    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}
    return {"sampling": config, "benchmarks": sources, "versions": versions,
            "grading": {"verifier": args.verifier, "verifier_tail_chars": args.verifier_tail_chars,
                        "grade_timeout_s": args.grade_timeout_s}}


def check_resume(old: dict, new: dict, path: Path) -> None:
    """Refuse to mix samples from different settings in one output folder."""
    for key in sorted(set(old["sampling"]) | set(new["sampling"])):
        if old["sampling"].get(key) != new["sampling"].get(key):
            raise ValueError(f"{path} was written with {key}={old['sampling'].get(key)!r}, this run has "
                             f"{key}={new['sampling'].get(key)!r}: use another --output_dir or the same {key}")
    for name in set(old["benchmarks"]) & set(new["benchmarks"]):
        if old["benchmarks"][name]["source"] != new["benchmarks"][name]["source"]:
            raise ValueError(f"{path}: benchmark {name} came from {old['benchmarks'][name]['source']}, this run "
                             f"reads {new['benchmarks'][name]['source']}: use another --output_dir")
