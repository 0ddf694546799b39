"""Evaluate a model the way JustRL reports it: nine math benchmarks, avg@k over k sampled responses per problem.

For each benchmark: build "{problem} Please reason step by step, and put your final answer within \\boxed{}." as
the user message of the model's chat template, sample k responses per problem (temperature 0.7, top_p 0.9, up to
31744 new tokens, seed + r for sample round r), grade each with the rule grader (grading.py; optionally OR a
CompassVerifier model), then write avg@k, pass@k and the rest (eval_report.py) to results.json / results.md / PNGs.

How this departs from JustRL's own eval scripts:
  1. The model verifier sees the real question and only the end of the response (text after the last "</think>",
     at most --verifier_tail_chars), not an empty question and the whole response.
  2. Every sample is appended to DIR/<NAME>.jsonl as it finishes; a rerun generates only what is missing and ends
     with files byte-identical to an uninterrupted run (files are rewritten in canonical order at the end).
  3. Nothing else on purpose: same prompt, sampling, k per benchmark and rules-OR-verifier final grade.

Outputs in --output_dir: <NAME>.jsonl (one line per sample: example_id, round, problem, prompt, answer, seed,
response, n_tokens, finish_reason, extracted, rule_correct, verifier_correct, correct), config.json (protocol,
sources, versions), results.json / results.md (avg@k with its standard error across problems, pass@k, problems
solved by none / all, no-box responses, mean tokens), accuracy.png, pass_at_k.png. The transformers and vLLM
backends run in float32 on CPU; --dtype applies on GPU.

Benchmark data. The local verl-schema files hold bare problems (checked: no row carries an instruction; Minerva's
"\\boxed" occurrences are inside worked sub-problem solutions that belong to the problem). verl-prepared copies
elsewhere append "Let's think step by step and output the final answer within \\boxed{}."; `bare_problem` strips
such known suffixes so the protocol's own suffix is never doubled.

Commands:
  # GPU, vLLM, one engine per visible GPU, all nine benchmarks from the shared folder
  python eval.py --model hbx/JustRL-DeepSeek-1.5B --data_dir ../shared/benchmarks --output_dir runs/eval/justrl \\
      --compare justrl-deepseek
  # CPU, transformers, the tiny model, 2 problems x 2 samples of two benchmarks
  python eval.py --model .cache/tiny/sft --backend transformers --data_dir ../shared/benchmarks \\
      --benchmarks AIME24 MATH-500 --limit 2 --n_samples 2 --max_new_tokens 64 --output_dir runs/eval/tiny
  # any OpenAI-compatible server (e.g. `vllm serve MODEL --port 8000`)
  python eval.py --model MODEL --backend openai --base_url http://127.0.0.1:8000/v1 --output_dir runs/eval/srv
  # re-grade existing outputs only (after a grader change, or to add the model verifier)
  python eval.py --regrade --output_dir runs/eval/justrl --verifier opencompass/CompassVerifier-3B
  # several checkpoints of a run, then accuracy against training step
  python eval.py --models runs/justrl/checkpoint-50 runs/justrl/checkpoint-100 --output_dir runs/eval/sweep
  python eval.py --plot_runs runs/eval/sweep/checkpoint-50 runs/eval/sweep/checkpoint-100 --output_dir runs/eval
  # add a benchmark from a local file: NAME=path:question_column:answer_column[:n_samples], or NAME=path in a
  # benchmark schema (here the tiny model's held-out arithmetic, built by `python tiny.py`)
  python eval.py --model M --extra GSM8K=data/gsm8k.jsonl:question:answer:4 --benchmarks GSM8K
  python eval.py --model .cache/tiny/sft --backend transformers --extra tiny=.cache/tiny/test.parquet \
      --benchmarks tiny --n_samples 4 --max_new_tokens 48 --output_dir runs/eval/tiny-heldout
"""

import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import eval_report
from generation import BACKENDS, resolve_backend  # the generation engines (stages.py samples through them too)
from grading import extract_answer, grade, grade_many  # noqa: F401  eval.grade(response, answer) -> bool

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
VERIFIER_PROMPT = """Please as a grading expert, judge whether the candidate's final answer is consistent with the standard answer.
The standard answer is always correct and the question is valid. Compare only the final answer and ignore the reasoning.
Equivalent forms (expressions, textual descriptions) count as consistent; multi-part answers must match in every part.
Ignore a \\boxed{{}} wrapper. An incomplete, repetitive, irrelevant or refusing answer is INVALID.
Grade the candidate's answer as one of:
A: CORRECT
B: INCORRECT
C: INVALID
Just return the letter "A", "B", or "C", with no text around it.
<Original Question Begin>:
{question}
<Original Question End>
<Standard Answer Begin>:
{gold_answer}
<Standard Answer End>
<Candidate's Answer Begin>:
{llm_response}
<Candidate's Answer End>
Judging the correctness of the candidate's answer:
"""

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
    compare: str | None = field(default=None, metadata={"help": f"one of {sorted(eval_report.REPORTED)}"})
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


# ---------------------------------------------------------------- grading


def response_tail(response: str, n_chars: int) -> str:
    """What the verifier sees: the text after the last '</think>' (the final answer part), at most n_chars."""
    return response.rsplit("</think>", 1)[-1].strip()[-n_chars:]


def verifier_verdict(text: str) -> bool:
    """True when the verifier's first A/B/C letter is A (correct)."""
    match = re.search(r"\b([ABC])\b", text.rsplit("</think>", 1)[-1])
    return bool(match) and match.group(1) == "A"


def grade_records(records: list[dict], args: EvalArgs, regrade: bool = False) -> None:
    """Fill rule_correct / extracted (where missing, or all when regrading), then the verifier, then `correct`."""

    todo = [r for r in records if regrade or r.get("correct") is None]
    if not todo:
        return
    verdicts = grade_many([(r["response"], r["answer"]) for r in todo], workers=args.grade_workers,
                          timeout_s=args.grade_timeout_s, progress=True)
    for r, ok in zip(todo, verdicts):
        r.update(extracted=extract_answer(r["response"]), rule_correct=bool(ok), verifier_correct=None)
    rejected = [r for r in todo if not r["rule_correct"]]
    if args.verifier and rejected:
        import torch

        backend = "openai" if args.verifier_base_url else "vllm" if torch.cuda.is_available() else "transformers"
        requests = [{"example_id": f"verify-{i}", "seed": args.seed, "chunk": (0, i // args.batch_size), "i": i,
                     "messages": [{"role": "user", "content": VERIFIER_PROMPT.format(
                         question=r["problem"], gold_answer=r["answer"],
                         llm_response=response_tail(r["response"], args.verifier_tail_chars))}]}
                    for i, r in enumerate(rejected)]
        greedy = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8}
        stream = BACKENDS[backend](requests, args.verifier, greedy, replace(args, base_url=args.verifier_base_url))
        for request, out in progress(stream, len(requests), "verifier"):
            rejected[request["i"]]["verifier_correct"] = verifier_verdict(out["response"])
    for r in todo:
        r["correct"] = r["rule_correct"] or bool(r["verifier_correct"])


def progress(iterable, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True)


# ---------------------------------------------------------------- main


def generate_missing(args: EvalArgs, model: str, backend: str, output_dir: Path, loaded: dict) -> bool:
    """Append every missing sample of every benchmark to its file as it finishes; True when all are there.

    One generation stream over all benchmarks, so vLLM engines start once and stay busy."""
    chunk_size = args.batch_size if backend == "transformers" else 1
    existing = {name: read_samples(output_dir / f"{name}.jsonl") for name in loaded}
    todo = []
    for name, (problems, n_samples, _) in loaded.items():
        requests = plan_requests(name, problems, n_samples, args, chunk_size)
        missing_chunks = {r["chunk"] for r in requests if sample_key(r) not in existing[name]}
        todo += [r for r in requests if r["chunk"] in missing_chunks]
    n_missing = sum(sample_key(r) not in existing[r["benchmark"]] for r in todo)
    budget = n_missing if args.max_samples is None else min(n_missing, args.max_samples)
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens}
    files = {name: (output_dir / f"{name}.jsonl").open("a") for name in loaded}
    try:
        stream = BACKENDS[backend](todo, model, sampling, args) if budget else iter(())
        for request, out in progress(stream, len(todo), "generate"):
            if sample_key(request) in existing[request["benchmark"]]:
                continue  # a chunk-mate regenerated only to keep the chunk's random stream identical
            record = {k: request[k] for k in ("example_id", "round", "problem", "prompt", "answer", "seed")}
            record.update(out, correct=None)
            files[request["benchmark"]].write(json.dumps(record, ensure_ascii=False) + "\n")
            files[request["benchmark"]].flush()
            existing[request["benchmark"]][sample_key(record)] = record
            budget -= 1
            if budget == 0:
                break
    finally:
        for f in files.values():
            f.close()
    if n_missing > (args.max_samples or n_missing):
        print(f"stopped after --max_samples {args.max_samples} of {n_missing} missing samples; rerun to resume")
        return False
    return True


def evaluate(args: EvalArgs, model: str, output_dir: Path) -> dict | None:
    """Generate what is missing, grade, write results; None when stopped early by --max_samples."""
    output_dir.mkdir(parents=True, exist_ok=True)
    config_path = output_dir / "config.json"
    old = json.loads(config_path.read_text()) if config_path.exists() else None
    if args.regrade:
        if old is None:
            raise FileNotFoundError(f"--regrade: {config_path} is missing; is --output_dir an eval.py run?")
        names, model, keep = list(old["benchmarks"]), old["sampling"]["model"], None
    else:
        backend = resolve_backend(args)
        loaded = {name: load_benchmark(name, args) for name in args.benchmarks}
        sources = {name: {"source": src, "n_samples": n} for name, (_, n, src) in loaded.items()}
        config = run_config(args, model, backend, sources)
        if old is not None:
            check_resume(old, config, config_path)
            config["benchmarks"] = {**old["benchmarks"], **config["benchmarks"]}
        config_path.write_text(json.dumps(config, indent=2) + "\n")
        if not generate_missing(args, model, backend, output_dir, loaded):
            return None
        names = list(loaded)
        keep = {name: {sample_key(r) for r in plan_requests(name, problems, n, args, 1)}
                for name, (problems, n, _) in loaded.items()}
    per_benchmark = {}
    for name in names:
        path = output_dir / f"{name}.jsonl"
        records = list(read_samples(path).values())
        if keep is not None:  # this run's samples only (a run with a smaller --limit or k reports on fewer)
            records = [r for r in records if sample_key(r) in keep[name]]
        grade_records(records, args, regrade=args.regrade)
        write_canonical(path, records)
        if records:
            per_benchmark[name] = eval_report.benchmark_metrics(records)
    results = eval_report.summarize(per_benchmark, model)
    eval_report.write_results(output_dir, results, args.compare)
    print(eval_report.results_table(results, args.compare))
    return results


def check_model(model: str, backend: str) -> None:
    """A model that is neither a directory nor a Hub id this machine can reach fails before anything is written."""
    if backend == "openai" or os.path.isdir(model):
        return
    from huggingface_hub import constants, try_to_load_from_cache

    hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", model) is not None and not model.startswith((".", "~"))
    if hub_id and (not constants.HF_HUB_OFFLINE or isinstance(try_to_load_from_cache(model, "config.json"), str)):
        return
    raise FileNotFoundError(f"model {model}: {'a file, not' if os.path.isfile(model) else 'no such'} directory"
                            + (", and not in the local Hub cache (HF_HUB_OFFLINE=1)" if hub_id else "")
                            + "; give a checkpoint directory (one that holds config.json) or a Hub id")


def check_inputs(args: EvalArgs) -> None:
    """Models and local benchmark files (columns included) checked before any output is written."""
    if args.regrade:
        return
    for model in ([args.model] if args.model else []) + args.models:
        check_model(model, args.backend)
    extras = {e[0] for e in map(parse_extra, args.extra)}
    for name in args.benchmarks:
        if name in extras or (args.data_dir and name in BENCHMARKS):
            load_benchmark(name, args)


def main(argv: list[str] | None = None) -> None:
    from trl import TrlParser

    from plan import check_config_file

    argv = list(sys.argv[1:] if argv is None else argv)
    check_config_file(argv, (EvalArgs,))
    (args,) = TrlParser(EvalArgs).parse_args_and_config(argv)
    out = Path(args.output_dir)
    if args.plot_runs:
        out.mkdir(parents=True, exist_ok=True)
        eval_report.plot_runs(args.plot_runs, out / "accuracy_vs_step.png", args.steps or None)
        print(f"wrote {out / 'accuracy_vs_step.png'}")
    elif args.models:
        dirs = [str(out / Path(m.rstrip("/")).name) for m in args.models]
        eval_report.run_steps(dirs, args.steps or None)  # fail before generating: the plot needs every step
        check_inputs(args)
        for model, run_dir in zip(args.models, dirs):
            evaluate(args, model, Path(run_dir))
        eval_report.plot_runs(dirs, out / "accuracy_vs_step.png", args.steps or None)
    elif args.model or args.regrade:
        check_inputs(args)
        evaluate(args, args.model, out)
    else:
        raise SystemExit("nothing to do: pass --model, --models, --regrade or --plot_runs")


if __name__ == "__main__":
    main()
