"""Evaluate a model the way JustRL reports it: nine math benchmarks, avg@k over k sampled responses per problem.

For each benchmark: build "{problem} Please reason step by step, and put your final answer within \\boxed{}." as
the user message of the model's chat template, sample k responses per problem (temperature 0.7, top_p 0.9, up to
31744 new tokens, seed + r for sample round r), grade each with the rule grader (reasonrl/grading/grader.py;
optionally OR a CompassVerifier model), then write avg@k, pass@k and the rest (reasonrl/grading/report.py) to
results.json / results.md / PNGs. The protocol, the benchmarks and their files: reasonrl/grading/benchmarks.py.

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
  # benchmark schema (here the tiny model's held-out arithmetic, built by `python -m reasonrl.demo.tiny`)
  python eval.py --model M --extra GSM8K=data/gsm8k.jsonl:question:answer:4 --benchmarks GSM8K
  python eval.py --model .cache/tiny/sft --backend transformers --extra tiny=.cache/tiny/test.parquet \
      --benchmarks tiny --n_samples 4 --max_new_tokens 48 --output_dir runs/eval/tiny-heldout
"""

import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

from reasonrl.generation.engines import BACKENDS, resolve_backend  # the generation engines (stages.py samples through them too)
from reasonrl.grading import report
from reasonrl.grading.benchmarks import (  # noqa: F401  the protocol and its files; eval.EvalArgs etc. stay valid
    BENCHMARKS, PROMPT_TEMPLATE, EvalArgs, check_resume, load_benchmark, parse_extra, plan_requests, read_samples,
    read_table, rows_to_problems, run_config, sample_key, write_canonical)
from reasonrl.grading.grader import extract_answer, grade, grade_many  # noqa: F401  eval.grade(response, answer) -> bool

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
            per_benchmark[name] = report.benchmark_metrics(records)
    results = report.summarize(per_benchmark, model)
    report.write_results(output_dir, results, args.compare)
    print(report.results_table(results, args.compare))
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

    from reasonrl.run.plan import check_config_file

    argv = list(sys.argv[1:] if argv is None else argv)
    check_config_file(argv, (EvalArgs,))
    (args,) = TrlParser(EvalArgs).parse_args_and_config(argv)
    out = Path(args.output_dir)
    if args.plot_runs:
        out.mkdir(parents=True, exist_ok=True)
        report.plot_runs(args.plot_runs, out / "accuracy_vs_step.png", args.steps or None)
        print(f"wrote {out / 'accuracy_vs_step.png'}")
    elif args.models:
        dirs = [str(out / Path(m.rstrip("/")).name) for m in args.models]
        report.run_steps(dirs, args.steps or None)  # fail before generating: the plot needs every step
        check_inputs(args)
        for model, run_dir in zip(args.models, dirs):
            evaluate(args, model, Path(run_dir))
        report.plot_runs(dirs, out / "accuracy_vs_step.png", args.steps or None)
    elif args.model or args.regrade:
        check_inputs(args)
        evaluate(args, args.model, out)
    else:
        raise SystemExit("nothing to do: pass --model, --models, --regrade or --plot_runs")


if __name__ == "__main__":
    main()
