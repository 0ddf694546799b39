"""Validation inside training, as JustRL ran it: benchmarks sampled with the run's own generation engine before
training and every N generation steps, graded, and logged as curves (JustRL's Figure 1 is such a curve).
One job, over 400 lines: validation, from its settings to its files (the benchmarks and their files come from
reasonrl/grading/benchmarks.py, the engines from reasonrl/generation/engines.py).

JustRL's launch script (veRL 0.4): val_before_train, test_freq 50 generation steps, AIME24 / AIME25 / AMC23, n 32,
temperature 0.7, top_p 0.9, 31744 new tokens, graded by veRL's math-verify rule, logged per benchmark as the mean
score (avg@32). veRL also validates after the last step; so does this. Recipe keys (reasonrl/run/config.py's ScriptArguments):
validation_benchmarks (eval.py's names, NAME=path as eval.py's --extra, or `heldout`: the recipe's heldout_file, left
out when that is unset), validation_data_dir, validation_every_generation_steps, validation_before_training,
validation_n_samples, validation_temperature, validation_top_p, validation_max_new_tokens, validation_grader
("math_verify" or "eval"), validation_prompt_template, validation_seed, validation_limit, validation_batch_size.

Why not TRL's evaluation (eval_strategy): it scores an eval split with the training reward and the training sampling,
one group per prompt; it writes no per-sample outputs and has no avg@k / pass@k.

How it runs, in every process at the same step (TrainerCallback.on_train_begin / on_step_end):
  - engine: the run's own. Colocated vLLM (each process its share of the prompts, after TRL's weight sync; refused
    with tensor parallelism > 1), the vLLM server (the main process sends every prompt after the weight sync, as many
    sample rounds at once as the server batches, while the others meet it in a short collective every few seconds:
    a validation of hours never holds a collective near ddp_timeout), or transformers' generate on the live model
    (each process its share; under ZeRO-3 the parameters are gathered as TRL does). No second copy of the model.
  - samples: eval.py's requests (prompt template, system prompt, seed + round per sample round, transformers chunks),
    so they are eval.py's samples of the same weights with the same engine (seeded, at any temperature). Every validation runs inside torch.random.fork_rng (and saved python / numpy states): the training
    random streams are untouched. vLLM samples with per-request seeds, which do not draw from the engine's stream.
  - outputs: <output_dir>/validation/step_<N>/ (N in generation steps) in eval.py's format (<NAME>.jsonl, config.json,
    results.json / results.md / PNGs: `python eval.py --regrade --output_dir .../step_<N>` re-grades them),
    validation/metrics.jsonl (one line per validation), validation/accuracy_vs_step.png (avg@k per benchmark against
    generation step), TensorBoard scalars validation/<NAME>/{avg@k, pass@k, mean_response_tokens, truncated_fraction}
    and validation/time_s at the trainer's global step. A validation whose results.json exists is not redone (resume).

Commands:
    # the demo validates its held-out split (recipes/tiny.yaml's validation_* keys)
    accelerate launch --config_file accelerate_configs/cpu.yaml train_grpo.py --config recipes/tiny.yaml
    # JustRL's validation with the benchmark files of a local folder (<dir>/<NAME>/test.parquet)
    accelerate launch --config_file accelerate_configs/zero3.yaml --num_processes 4 train_grpo.py \\
        --config recipes/justrl.yaml --validation_data_dir ../shared/benchmarks
    # re-grade one validation with eval.py's grader
    python eval.py --regrade --output_dir outputs/tiny/validation/step_25
"""

import functools
import json
import logging
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

GRADERS = ("math_verify", "eval")
# the request fields a sample record keeps (eval.py's record, plus the benchmark it belongs to)
RECORD_FIELDS = ("benchmark", "example_id", "round", "problem", "prompt", "answer", "seed")


# ---------------------------------------------------------------- pure parts


def math_verify_rule(response: str, answer: str) -> bool:
    """veRL's math-verify scorer (JustRL's validation grader): the gold answer wrapped in \\boxed{} and read with
    math-verify's LaTeX extraction, the response read with its expression and LaTeX extractions, verified by
    math-verify; a parser error or a math-verify time-out scores False."""
    from math_verify.errors import TimeoutException

    try:
        score, _ = _math_verify_metric()(["\\boxed{" + answer + "}"], [response])
    except (Exception, TimeoutException):
        return False
    return score > 0


@functools.cache
def _math_verify_metric():
    from math_verify.metric import math_metric
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    logging.getLogger("math_verify.metric").setLevel(logging.ERROR)  # a warning per response without an answer
    return math_metric(gold_extraction_target=(LatexExtractionConfig(),),
                       pred_extraction_target=(ExprExtractionConfig(), LatexExtractionConfig()))


def grade_responses(pairs: list[tuple[str, str]], grader: str) -> list[bool]:
    """(response, answer) pairs -> verdicts under `grader`: "math_verify" (veRL's rule, as JustRL's curves were
    graded) or "eval" (eval.py's rule grader, grader.grade)."""
    if grader == "math_verify":
        return [math_verify_rule(response, answer) for response, answer in pairs]
    if grader == "eval":
        from reasonrl.grading.grader import grade_many
        return grade_many(pairs)
    raise ValueError(f"validation_grader: {grader!r} is not one of {list(GRADERS)}")


def validation_due(generation_step: int, every: int, last_step: int, before_training: bool) -> bool:
    """Whether generation step `generation_step` (0 = before training) is validated: step 0 when before_training;
    a positive step when every > 0 divides it, or when it is the run's last (veRL validates after its last step)."""
    if generation_step == 0:
        return before_training
    return every > 0 and (generation_step % every == 0 or generation_step == last_step)


def share_of(requests: list[dict], rank: int, world: int) -> list[dict]:
    """This process's requests: whole chunks (same `chunk` id, sampled together) dealt round-robin in first-seen
    order, so every chunk is generated exactly as eval.py generates it, on one process."""
    order = list(dict.fromkeys(r["chunk"] for r in requests))
    mine = {chunk for i, chunk in enumerate(order) if i % world == rank}
    return [r for r in requests if r["chunk"] in mine]


def curve_scalars(name: str, metrics: dict) -> dict[str, float]:
    """TensorBoard scalars of one benchmark's report.benchmark_metrics: avg@k and pass@k in percent, mean
    response tokens, fraction of responses cut at the token limit."""
    k = metrics["n_samples"]
    return {f"validation/{name}/avg@{k}": 100 * metrics["avg_at_k"],
            f"validation/{name}/pass@{k}": 100 * metrics["pass_at_k"][str(k)],
            f"validation/{name}/mean_response_tokens": metrics["mean_tokens"],
            f"validation/{name}/truncated_fraction": metrics["truncated"] / metrics["n_responses"]}


def check_settings(script_args, training_args=None) -> None:
    """Bad validation keys, and an engine validation cannot use, fail at start-up, naming the key."""
    tp = getattr(training_args, "vllm_tensor_parallel_size", 1)
    if (training_args is not None and training_args.use_vllm and training_args.vllm_mode == "colocate" and tp > 1
            and enabled(script_args)):
        # each process validates its own share of the prompts, while the engines of a tensor-parallel group must be
        # given the same prompts (TRL's generation gathers them within the group): they would wait for each other
        raise ValueError(f"validation cannot run on colocated vLLM with vllm_tensor_parallel_size={tp}: set "
                         "vllm_tensor_parallel_size: 1, or vllm_mode: server, or turn validation off "
                         "(validation_before_training: false, validation_every_generation_steps: 0).")
    if script_args.validation_grader not in GRADERS:
        raise ValueError(f"validation_grader: {script_args.validation_grader!r} is not one of {list(GRADERS)}")
    from reasonrl.grading.benchmarks import BENCHMARKS, parse_extra

    for spec in script_args.validation_benchmarks:
        if "=" in spec:
            parse_extra(spec)
        elif spec != "heldout" and spec not in BENCHMARKS:
            raise ValueError(f"validation_benchmarks: unknown benchmark {spec!r}; use eval.py's names "
                             f"{list(BENCHMARKS)}, heldout (the recipe's heldout_file) or NAME=path")
    if script_args.validation_every_generation_steps < 0:
        raise ValueError(f"validation_every_generation_steps: {script_args.validation_every_generation_steps} must be "
                         ">= 0 (0: no validation during training)")
    for key in ("validation_max_new_tokens", "validation_batch_size"):
        if getattr(script_args, key) < 1:
            raise ValueError(f"{key}: {getattr(script_args, key)} must be at least 1")
    for key in ("validation_n_samples", "validation_limit"):
        if getattr(script_args, key) is not None and getattr(script_args, key) < 1:
            raise ValueError(f"{key}: {getattr(script_args, key)} must be at least 1 (or leave it out)")
    if script_args.validation_temperature < 0:
        raise ValueError(f"validation_temperature: {script_args.validation_temperature} must be >= 0 (0: greedy)")
    if not 0 < script_args.validation_top_p <= 1:
        raise ValueError(f"validation_top_p: {script_args.validation_top_p} must be in (0, 1]")


def benchmark_specs(script_args) -> list[str]:
    """validation_benchmarks with `heldout` resolved to heldout=<heldout_file>, or dropped when heldout_file is unset
    (a run that turns its held-out evaluation off turns that validation off too; the log says so)."""
    specs = []
    for b in script_args.validation_benchmarks:
        if b != "heldout":
            specs.append(b)
        elif script_args.heldout_file:
            specs.append(f"heldout={script_args.heldout_file}")
    return specs


def enabled(script_args) -> bool:
    """Validation runs when benchmarks are listed and something schedules it."""
    return bool(benchmark_specs(script_args)) and (script_args.validation_before_training
                                                   or script_args.validation_every_generation_steps > 0)


def measures_heldout(script_args) -> bool:
    """Whether validation already measures summary.json's held-out accuracy, so the run evaluates the split once, not
    twice: it validates `heldout` greedily (temperature 0, one sample), before training and at the last step (which
    any positive validation_every_generation_steps includes). summary.json then reads step 0's and the last step's
    results (`heldout_accuracy_at`)."""
    return ("heldout" in script_args.validation_benchmarks and bool(script_args.heldout_file)
            and script_args.validation_temperature == 0 and script_args.validation_n_samples == 1
            and script_args.validation_before_training and script_args.validation_every_generation_steps > 0)


def heldout_accuracy_at(output_dir: str, step: int) -> float:
    """The held-out avg@1 that validation wrote for generation step `step` (results.json)."""
    path = Path(output_dir) / "validation" / f"step_{step}" / "results.json"
    return json.loads(path.read_text())["benchmarks"]["heldout"]["avg_at_k"]


def eval_args(script_args):
    """eval.py's settings for the validation keys (its benchmark loading, requests and output format are reused)."""
    from reasonrl.grading.benchmarks import PROMPT_TEMPLATE, EvalArgs, parse_extra

    specs = benchmark_specs(script_args)
    if "heldout" in script_args.validation_benchmarks and not script_args.heldout_file:
        print("[validation] heldout_file is unset: 'heldout' is left out of validation_benchmarks", flush=True)
    extra = [b for b in specs if "=" in b]
    names = [b.partition("=")[0] for b in specs]
    for spec in extra:
        parse_extra(spec)
    return EvalArgs(benchmarks=names, extra=extra, data_dir=script_args.validation_data_dir,
                    n_samples=script_args.validation_n_samples, limit=script_args.validation_limit,
                    temperature=script_args.validation_temperature, top_p=script_args.validation_top_p,
                    max_new_tokens=script_args.validation_max_new_tokens,
                    prompt_template=script_args.validation_prompt_template or PROMPT_TEMPLATE,
                    system_prompt=script_args.system_prompt, seed=script_args.validation_seed,
                    batch_size=script_args.validation_batch_size, dtype="float32")


def load_benchmarks(script_args) -> tuple[object, dict]:
    """(EvalArgs, {name: (problems, n_samples, source)}); fails at start-up on a missing file or column."""
    args = eval_args(script_args)
    from reasonrl.grading.benchmarks import load_benchmark

    return args, {name: load_benchmark(name, args) for name in args.benchmarks}


# ---------------------------------------------------------------- the callback


def _engine(trainer) -> str:
    if not trainer.use_vllm:
        return "transformers"
    return f"vllm_{trainer.args.vllm_mode}"


class Validation:
    """Runs validations for one trainer (see the module docstring); `check_engine_length()` checks a vLLM engine's
    context at start-up, `callback()` hooks the validations into the Trainer."""

    def __init__(self, trainer, script_args, tokenizer, loaded=None):
        self.trainer, self.script_args, self.tokenizer = trainer, script_args, tokenizer
        self.args, self.benchmarks = loaded or load_benchmarks(script_args)
        self.engine = _engine(trainer)
        self.dir = Path(trainer.args.output_dir) / "validation"
        a = trainer.args
        self.updates_per_generation = a.steps_per_generation // a.gradient_accumulation_steps * a.num_iterations
        self.last_step = -(-a.max_steps // self.updates_per_generation) if a.max_steps > 0 else -1
        self.grader_note = ("veRL's math-verify rule, as JustRL's curves" if script_args.validation_grader ==
                            "math_verify" else "eval.py's rule grader")

    def check_engine_length(self) -> None:
        """A vLLM engine must hold the longest validation prompt plus validation_max_new_tokens: checked when the
        run starts, not at the first validation hours later."""
        trainer = self.trainer
        if self.engine == "vllm_colocate":
            limit, where = trainer.vllm_generation.llm.llm_engine.model_config.max_model_len, "vllm_max_model_length"
        elif self.engine == "vllm_server" and trainer.accelerator.is_main_process:
            info = trainer.vllm_generation.vllm_client.get_server_info()
            limit, where = info.get("model_config", {}).get("max_model_len"), "the server's --max_model_len"
            if (info.get("device_config", {}).get("device") == "cpu"
                    and info.get("scheduler_config", {}).get("enable_chunked_prefill")):
                raise ValueError("validation: the vLLM server runs on a CPU with chunked prefill on; vLLM's CPU build "
                                 "cannot sample a seeded request whose prompt is split over two steps ('CPU Generator "
                                 "does not use offset', which kills the server's engine), and validation seeds every "
                                 "sample. Restart the server with --no-enable-chunked-prefill.")
        else:
            return
        tok = self.tokenizer
        prompts = {json.dumps(r["messages"]): r["messages"] for r in self.requests()}
        longest = max(len(tok(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
                              add_special_tokens=False)["input_ids"]) for m in prompts.values())
        if limit and longest + self.args.max_new_tokens > limit:
            raise ValueError(f"validation: the longest validation prompt ({longest} tokens) plus "
                             f"validation_max_new_tokens={self.args.max_new_tokens} exceeds the vLLM engine's context "
                             f"of {limit} tokens ({where}): raise {where} or lower validation_max_new_tokens.")

    def callback(self):
        from transformers import TrainerCallback

        validation = self

        class ValidationCallback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                if state.global_step == 0:
                    validation.maybe_run(0)

            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step % validation.updates_per_generation == 0:
                    validation.maybe_run(state.global_step // validation.updates_per_generation)

        return ValidationCallback()

    def maybe_run(self, step: int) -> None:
        s = self.script_args
        if not validation_due(step, s.validation_every_generation_steps, self.last_step, s.validation_before_training):
            return
        # logged before an interruption: not redone. The main process decides for all (a shared filesystem may show
        # the file to some nodes later than to others).
        from accelerate.utils import broadcast_object_list

        done = [(self.dir / f"step_{step}" / "results.json").exists()]
        broadcast_object_list(done, from_process=0)
        if not done[0]:
            self.run(step)

    def requests(self) -> list[dict]:
        from reasonrl.grading.benchmarks import plan_requests

        chunk = self.args.batch_size if self.engine == "transformers" else 1
        return [r for name, (problems, n, _) in self.benchmarks.items()
                for r in plan_requests(name, problems, n, self.args, chunk)]

    def run(self, step: int) -> dict:
        import numpy as np
        import torch

        trainer = self.trainer
        start = time.perf_counter()
        requests = self.requests()
        sampling = {"temperature": self.args.temperature, "top_p": self.args.top_p,
                    "max_new_tokens": self.args.max_new_tokens}
        py_state, np_state = random.getstate(), np.random.get_state()
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            outputs = self._generate(requests, sampling)
        random.setstate(py_state)
        np.random.set_state(np_state)
        # grading: each process its share of the samples (the server path returned every sample to every process)
        if self.engine == "vllm_server":
            outputs = outputs[trainer.accelerator.process_index::trainer.accelerator.num_processes]
        verdicts = grade_responses([(r["response"], r["answer"]) for r in outputs], self.script_args.validation_grader)
        from reasonrl.grading.grader import extract_answer
        for r, ok in zip(outputs, verdicts):
            r.update(extracted=extract_answer(r["response"]), rule_correct=bool(ok), verifier_correct=None,
                     correct=bool(ok))
        records = _gather_to_main(outputs)
        results = None
        if trainer.accelerator.is_main_process:
            results = self._write(step, records, time.perf_counter() - start)
        trainer.accelerator.wait_for_everyone()
        return results

    def _generate(self, requests: list[dict], sampling: dict) -> list[dict]:
        """Sample records (eval.py's fields up to finish_reason) with the run's engine; under vllm_server every
        process gets all of them, otherwise its own share."""
        trainer = self.trainer
        acc = trainer.accelerator
        keys = RECORD_FIELDS
        if self.engine == "transformers":
            from trl.models import unwrap_model_for_generation

            from reasonrl.generation.engines import sample_transformers
            mine = share_of(requests, acc.process_index, acc.num_processes)
            with unwrap_model_for_generation(trainer.model_wrapped, acc,
                                             gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
                                             gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs
                                             ) as model:
                was_training = model.training
                model.eval()
                try:
                    pairs = list(sample_transformers(model, self.tokenizer, mine, sampling))
                finally:
                    model.train(was_training)
            return [{**{k: r[k] for k in keys}, **out} for r, out in pairs]
        # vLLM: the engine must hold the current weights. TRL syncs when the step changed (and after sleep mode
        # discarded them); syncing here marks the step loaded, so the next training generation does not sync again.
        gen = trainer.vllm_generation
        asleep = getattr(gen, "enable_sleep_mode", False) and getattr(gen, "_llm_weights_sleeping", False)
        if asleep or trainer._last_loaded_step != trainer.state.global_step:
            gen.sync_weights()
            trainer._last_loaded_step = trainer.state.global_step
        if self.engine == "vllm_colocate":
            from reasonrl.generation.engines import vllm_batches
            mine = share_of(requests, acc.process_index, acc.num_processes)
            if gen.enable_sleep_mode:  # as TRL's generate: KV cache up for sampling, everything asleep after
                gen.llm.wake_up(tags=["kv_cache"])
            try:
                pairs = [pair for batch in vllm_batches(gen.llm, mine, sampling) for pair in batch]
            finally:
                if gen.enable_sleep_mode:
                    gen.llm.sleep(level=2)
                    gen._llm_weights_sleeping = True
            return [{**{k: r[k] for k in keys}, **out} for r, out in pairs]
        # The main process asks the server; the others wait in short collectives, not in one as long as the validation
        # (hours at JustRL's size, past any collective timeout).
        client = trainer.vllm_generation.vllm_client if acc.is_main_process else None
        work = (lambda: server_samples(client, self.tokenizer, requests, sampling)) if acc.is_main_process else None
        return while_main_works(work, heartbeat_s(trainer.args.ddp_timeout))

    def _write(self, step: int, records: list[dict], seconds: float) -> dict:
        """Main process: eval.py's files for this step, metrics.jsonl, the curve PNG, TensorBoard, one log line."""
        from reasonrl.grading import report
        from reasonrl.grading.benchmarks import run_config, write_canonical

        trainer = self.trainer
        out = self.dir / f"step_{step}"
        out.mkdir(parents=True, exist_ok=True)
        per_benchmark = {}
        for name in self.benchmarks:
            rows = [{k: v for k, v in r.items() if k != "benchmark"} for r in records if r["benchmark"] == name]
            write_canonical(out / f"{name}.jsonl", rows)
            per_benchmark[name] = report.benchmark_metrics(rows)
        sources = {name: {"source": src, "n_samples": n} for name, (_, n, src) in self.benchmarks.items()}
        model = f"{trainer.args.output_dir} at generation step {step}"
        config = run_config(self.args, model, self.engine, sources)
        config["grading"]["grader"] = self.script_args.validation_grader
        config["training"] = {"generation_step": step, "global_step": trainer.state.global_step,
                              "seconds": round(seconds, 3)}
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        results = report.summarize(per_benchmark, model)
        report.write_results(out, results)  # results.json last: its presence marks the validation done
        scalars = {key: value for name, m in per_benchmark.items() for key, value in curve_scalars(name, m).items()}
        scalars["validation/time_s"] = seconds
        line = {"generation_step": step, "global_step": trainer.state.global_step, "seconds": round(seconds, 3),
                "grader": self.script_args.validation_grader, "engine": self.engine, "scalars": scalars}
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        self._plot()
        writer = tensorboard_writer(trainer)
        if writer is not None:
            for key, value in scalars.items():
                writer.add_scalar(key, value, trainer.state.global_step)
            writer.flush()
        trainer.state.log_history.append({**scalars, "generation_step": step, "step": trainer.state.global_step})
        when = "before training" if step == 0 else f"generation step {step}"
        summary = ", ".join(f"{name} avg@{m['n_samples']} {100 * m['avg_at_k']:.1f}% pass@{m['n_samples']} "
                            f"{100 * m['pass_at_k'][str(m['n_samples'])]:.1f}% ({m['mean_tokens']:.0f} tokens, "
                            f"{m['truncated']}/{m['n_responses']} truncated)" for name, m in per_benchmark.items())
        print(f"[validation] {when}: {summary}; {len(records)} samples on {self.engine} in {seconds:.1f} s; graded "
              f"by {self.script_args.validation_grader} ({self.grader_note}); {out}", flush=True)
        return results

    def _plot(self) -> None:
        """validation/accuracy_vs_step.png from every completed step directory (a resumed run's included)."""
        from reasonrl.grading import report

        done = sorted((int(d.name.removeprefix("step_")), str(d)) for d in self.dir.glob("step_*")
                      if (d / "results.json").exists())
        try:
            report.plot_runs([d for _, d in done], self.dir / "accuracy_vs_step.png", [s for s, _ in done],
                                  xlabel="generation step")
        except Exception as error:  # a plot must never stop a training run
            print(f"[validation] could not draw {self.dir / 'accuracy_vs_step.png'}: {error}", file=sys.stderr)


def server_samples(client, tok, requests: list[dict], sampling: dict, in_flight: int | None = None) -> list[dict]:
    """Sample records from the vLLM server behind `client` (TRL's VLLMClient): one request per sample round, all of a
    round's prompts with its seed (as eval.py's vLLM backend seeds them), `in_flight` rounds at a time (None: as many
    as the server's max_num_seqs holds, so a request takes one round's time and the server batches the rest).
    Records in request order: the same as sending the rounds one after another (vLLM's per-request seeds)."""
    by_seed: dict[int, list[dict]] = {}
    for r in requests:
        by_seed.setdefault(r["seed"], []).append(r)
    rounds = list(by_seed.items())
    # tokenized here, decoded below: the threads only wait on the server (a tokenizer is not shared across threads)
    ids = [[tok(tok.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True),
                add_special_tokens=False)["input_ids"] for r in rs] for _, rs in rounds]

    def send(i):
        return client.generate(prompts=ids[i], n=1, temperature=sampling["temperature"], top_p=sampling["top_p"],
                               max_tokens=sampling["max_new_tokens"], logprobs=None,
                               generation_kwargs={"seed": rounds[i][0]})["completion_ids"]

    if in_flight is None:
        max_num_seqs = client.get_server_info().get("scheduler_config", {}).get("max_num_seqs")
        in_flight = rounds_in_flight(max_num_seqs, max((len(rs) for _, rs in rounds), default=1), len(rounds))
    with ThreadPoolExecutor(max_workers=max(1, min(in_flight, len(rounds)))) as pool:
        completions = list(pool.map(send, range(len(rounds))))
    records = []
    for (_, rs), outs in zip(rounds, completions):
        for r, completion in zip(rs, outs):
            stopped = bool(completion) and completion[-1] == tok.eos_token_id
            records.append({**{k: r[k] for k in RECORD_FIELDS},
                            "response": tok.decode(completion, skip_special_tokens=True), "n_tokens": len(completion),
                            "finish_reason": "stop" if stopped or len(completion) < sampling["max_new_tokens"]
                            else "length"})
    return records


def rounds_in_flight(max_num_seqs: int | None, round_size: int, rounds: int) -> int:
    """Sample rounds sent to the server at once: as many as its max_num_seqs sequences hold (at least one), so none
    queues behind another and each request's time stays one round's (vllm_request_timeout_s bounds it); all of them
    when the server does not say."""
    if not max_num_seqs:
        return rounds
    return max(1, min(rounds, max_num_seqs // max(round_size, 1)))


def heartbeat_s(ddp_timeout: float) -> float:
    """Seconds between the collectives in which processes wait for the main process's long work: 10, or a fifth of
    the collective timeout when that is shorter, so a wait never comes near it."""
    return min(10.0, ddp_timeout / 5)


def while_main_works(work, beat_s: float):
    """work() on the main process (None elsewhere), its result on every process. It runs in a thread while every
    process meets in a broadcast every `beat_s` seconds until it is done: no collective waits longer than a beat,
    however long the work takes (the collective timeout, ddp_timeout, still catches a dead or stuck process). An
    exception in the work is raised on every process."""
    from accelerate.utils import broadcast_object_list
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return work()
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(work) if work is not None else None
        done = [False]
        while not done[0]:
            if future is not None:
                wait([future], timeout=beat_s)
                done = [future.done()]
            broadcast_object_list(done, from_process=0)
    error = future.exception() if future is not None else None
    payload = [(None, future.result()) if future is not None and error is None else
               (f"{type(error).__name__}: {error}" if future is not None else None, None)]
    broadcast_object_list(payload, from_process=0)
    if error is not None:
        raise error
    if payload[0][0] is not None:
        raise RuntimeError(f"validation: the main process failed while sampling from the vLLM server: {payload[0][0]}")
    return payload[0][1]


def _gather_to_main(records: list[dict]) -> list[dict] | None:
    """Every process's records on the main process only (a JustRL validation holds ~3k responses of up to 31k
    tokens: no reason to copy them to every process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return records
    parts = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(records, parts, dst=0)
    return [r for part in parts for r in part] if parts is not None else None


def tensorboard_writer(trainer):
    """The SummaryWriter of the trainer's TensorBoardCallback (validation curves, train_grpo's completion text); None
    when the run does not report to TensorBoard."""
    from transformers.integrations import TensorBoardCallback

    return next((cb.tb_writer for cb in trainer.callback_handler.callbacks
                 if isinstance(cb, TensorBoardCallback) and getattr(cb, "tb_writer", None) is not None), None)
