"""AceReason-Nemotron's staged training: a chain of train_grpo.py runs, with hard-prompt selection between them.

AceReason trains math-only RL with growing response lengths (8K -> 16K -> 24K -> 32K tokens), then code-only RL
(24K -> 32K); later stages keep only prompts the current model does not already solve (e.g. dropped when solved in
more than 14 of 16 samples) and code stages remove easy prompts after each epoch. This script runs that chain:
  run     each stage in order: [select hard prompts with the model the stage starts from] -> train_grpo.py with
          --model_name_or_path <previous stage's output> --dataset_name <selected prompts>. A stage whose
          <output_dir>/stage_done.json exists is skipped (the marker is written only after train_grpo.py exited
          cleanly and saved the model); an interrupted stage is simply run again, and train_grpo.py resumes from its
          last checkpoint. A stage with `epochs: E` trains E times in <output_dir>/epoch_<e>/, one pass each,
          selecting again before every epoch with the newest model (removal accumulates: epoch e+1 draws from the
          prompts epoch e kept).
  select  samples N completions per prompt of a recipe's dataset (data.load_prompts: the very prompts
          training sees) through eval.py's generation backends, scores them with the recipe's correctness reward
          (reward.load_reward_funcs), keeps prompts with pass rate <= max_pass_rate, and writes the kept rows
          unchanged (same columns, so the same recipe reads them) plus <out stem>.counts.json (kept, dropped as too
          easy, total, pass-count histogram). A completion passes when that reward gives its `correct` value
          (reward_kwargs, default 1.0): dapo / dapo_answer / robust / accuracy answer correct, code = every test
          case passed. Sampling uses the recipe's temperature / top_p (the training distribution; AceReason's own
          selection settings are not in our sources) and max_completion_length unless max_new_tokens is given.
          Each prompt is scored as soon as its N samples are done, so responses never pile up in memory; an
          interrupted selection starts over (only the finished <out> + counts file are reused by `run`).

Chain file (recipes/acereason_chain.yaml): launcher (accelerate | python), accelerate_config, model (where the
first stage starts), stages: [{name, recipe, output_dir, select: {samples, max_pass_rate, max_new_tokens, backend},
epochs, args: [extra train_grpo.py flags]}].

Commands:
    python stages.py run --chain recipes/acereason_chain.yaml                   # the whole chain, resumable
    python stages.py run --chain recipes/acereason_chain.yaml --stage math_16k  # one stage (needs math_8k done)
    python stages.py run --chain recipes/acereason_chain.yaml --stage code_24k -- --save_generation_steps 5
    # hard-prompt selection by hand (vLLM on GPUs, one engine per visible GPU)
    python stages.py select --model outputs/acereason-7b/math_16k --recipe recipes/acereason_math_24k.yaml \\
        --samples 16 --max_pass_rate 0.875 --out outputs/acereason-7b/math_24k/prompts.jsonl
    # CPU: the tiny model, 32 prompts x 4 samples on the transformers backend (~10 s)
    python stages.py select --model .cache/tiny/sft --recipe recipes/tiny.yaml --samples 4 --max_pass_rate 0.75 \\
        --limit 32 --out runs/select/tiny.jsonl
Test: python -m pytest tests/test_stages.py -q
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time


ROOT = os.path.dirname(os.path.abspath(__file__))
STAGE_DONE = "stage_done.json"
EPOCH_DONE = "epoch_done.json"
# Rewards whose score says whether the answer is right; the first of these in a recipe decides "passed".
CORRECTNESS_REWARDS = ("dapo", "dapo_answer", "robust", "accuracy", "code")
STAGE_KEYS = {"name", "recipe", "output_dir", "select", "epochs", "args"}
SELECT_KEYS = {"samples", "max_pass_rate", "max_new_tokens", "backend"}
CHAIN_KEYS = {"launcher", "accelerate_config", "model", "stages"}


# ---------------------------------------------------------------- pass-rate filtering (pure)

def max_passes(samples: int, max_pass_rate: float) -> int:
    """The most passes a kept prompt may have: 16 samples at 0.875 -> 14 (15/16 and 16/16 are dropped)."""
    if samples < 1 or not 0.0 <= max_pass_rate <= 1.0:
        raise ValueError(f"select: samples must be >= 1 and max_pass_rate in [0, 1], got {samples}, {max_pass_rate}")
    return math.floor(max_pass_rate * samples + 1e-9)  # 0.875 * 16 is exact, 0.7 * 10 is 6.999...


def passes_of(scores: list[float], correct: float) -> int:
    """How many of one prompt's completions scored `correct` (the reward's value for a right answer)."""
    return sum(1 for s in scores if s is not None and s == correct)


def filter_by_pass_count(pass_counts: list[int], samples: int, max_pass_rate: float) -> tuple[list[int], dict]:
    """(indices of kept prompts, report): keep prompt i iff pass_counts[i] <= max_pass_rate * samples."""
    limit = max_passes(samples, max_pass_rate)
    kept = [i for i, n in enumerate(pass_counts) if n <= limit]
    histogram = {str(k): 0 for k in range(samples + 1)}
    for n in pass_counts:
        histogram[str(n)] += 1
    report = {"total": len(pass_counts), "kept": len(kept), "dropped_too_easy": len(pass_counts) - len(kept),
              "samples_per_prompt": samples, "max_pass_rate": max_pass_rate, "max_passes_kept": limit,
              "pass_count_histogram": histogram}
    return kept, report


def correctness_reward(reward_funcs: list[str], reward_kwargs: dict | None) -> tuple[str, dict, float]:
    """(name, its kwargs, its score for a right answer) of the recipe reward that decides "passed"."""
    for name in reward_funcs:
        if name in CORRECTNESS_REWARDS:
            kwargs = dict((reward_kwargs or {}).get(name) or {})
            return name, kwargs, float(kwargs.get("correct", 1.0))
    raise ValueError(f"recipe key reward_funcs={reward_funcs} has no correctness reward to select by; "
                     f"add one of {list(CORRECTNESS_REWARDS)}")


def load_rows(args):
    """The recipe's dataset as stored, before prompt building: the rows `load_prompts`' row_id indexes."""
    from reasonrl.run.data import load_rows as load

    return load(args.dataset_name, args.dataset_config, args.dataset_split)


def write_rows(ds, path: str) -> None:
    """Rows to .jsonl or .parquet, via a temporary file so a crash never leaves a half-written set."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".jsonl", ".parquet"):
        raise ValueError(f"--out {path}: use a .jsonl or .parquet file")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    if ext == ".jsonl":
        ds.to_json(tmp, lines=True, force_ascii=False)
    else:
        ds.to_parquet(tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------- sampling through eval.py's backends

def eval_sampler(model: str, backend: str = "auto", batch_size: int = 16, **eval_args):
    """sampler(prompts, n, sampling) -> iterator of (prompt index, its n completions), generated by
    eval.BACKENDS[backend]. A prompt is yielded as soon as its n samples are done, so the texts of a whole
    dataset (49k prompts x 16 x up to 32K tokens) never sit in memory together.

    sampling: temperature, top_p, max_new_tokens, seed; sample r of every prompt uses seed + r."""
    import eval as ev

    args = ev.EvalArgs(model=model, backend=backend, batch_size=batch_size, **eval_args)
    name = ev.resolve_backend(args)

    def sampler(prompts: list[list[dict]], n: int, sampling: dict):
        # prompt-major order: each transformers chunk and each vLLM slice finishes whole prompts early
        requests = [{"example_id": f"p{i}", "i": i, "round": r, "messages": messages, "seed": sampling["seed"] + r,
                     "chunk": (i * n + r) // batch_size}
                    for i, messages in enumerate(prompts) for r in range(n)]
        pending: dict[int, list] = {}
        params = {k: sampling[k] for k in ("temperature", "top_p", "max_new_tokens")}
        for request, result in ev.BACKENDS[name](requests, model, params, args):
            group = pending.setdefault(request["i"], [None] * n)
            group[request["round"]] = result["response"]
            if all(text is not None for text in group):
                yield request["i"], pending.pop(request["i"])

    return sampler


def score_groups(groups, solutions: list, reward, correct: float, batch: int = 32):
    """Passes per prompt from (index, completions) groups: the reward scores `batch` prompts per call (the code
    reward runs all their programs in one thread pool). Returns {index: passes}."""
    passes, buffer = {}, []

    def flush():
        flat = [[{"role": "assistant", "content": text}] for _, texts in buffer for text in texts]
        scores = reward(completions=flat, solution=[solutions[i] for i, texts in buffer for _ in texts])
        start = 0
        for i, texts in buffer:
            passes[i] = passes_of(scores[start:start + len(texts)], correct)
            start += len(texts)
        buffer.clear()

    for group in groups:
        buffer.append(group)
        if len(buffer) >= batch:
            flush()
    if buffer:
        flush()
    return passes


def select(model: str, recipe: str, samples: int, max_pass_rate: float, out: str, max_new_tokens: int | None = None,
           backend: str = "auto", dataset_name: str | None = None, recipe_args: list[str] = (),
           limit: int | None = None, sampler=None) -> dict:
    """Write the recipe dataset's rows that `model` solves at most max_pass_rate of the time to `out`, and the counts
    to <out stem>.counts.json (written last: its presence means the selection is complete). Returns the counts.
    sampler(prompts, n, sampling) yields (prompt index, n completion texts); default: eval_sampler."""
    from transformers import AutoTokenizer

    from reasonrl.run.config import read_recipe  # the recipe, read as train_grpo.py reads it
    from reasonrl.run.data import load_prompts
    from reward import load_reward_funcs

    script, sampling_args = read_recipe(recipe, list(recipe_args))
    if dataset_name:
        script.dataset_name = dataset_name
    name, kwargs, correct = correctness_reward(script.reward_funcs, script.reward_kwargs)
    reward = load_reward_funcs([name], {name: kwargs} if kwargs else None)[0]
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts, load_counts = load_prompts(script, tokenizer)
    if limit is not None:
        prompts = prompts.select(range(min(limit, len(prompts))))
    sampling = {"temperature": sampling_args.temperature, "top_p": sampling_args.top_p, "seed": sampling_args.seed,
                "max_new_tokens": max_new_tokens or sampling_args.max_completion_length}
    context = script.max_prompt_length + sampling["max_new_tokens"]  # vLLM's KV cache sized for this, not 128K
    sampler = sampler or eval_sampler(model, backend, max_model_len=context)
    started = time.time()
    passes = score_groups(sampler(list(prompts["prompt"]), samples, sampling), prompts["solution"], reward, correct)
    if len(passes) != len(prompts):
        raise RuntimeError(f"select: the sampler returned {len(passes)} of {len(prompts)} prompts")
    kept, report = filter_by_pass_count([passes[i] for i in range(len(prompts))], samples, max_pass_rate)
    write_rows(load_rows(script).select([prompts["row_id"][i] for i in kept]), out)
    report.update(model=model, recipe=recipe, dataset=script.dataset_name, reward=name, passed_when_score=correct,
                  sampling=sampling, load_counts=load_counts, out=out, seconds=round(time.time() - started, 1))
    _write_json(counts_path_of(out), report)
    print(f"[select] {json.dumps({k: report[k] for k in ('total', 'kept', 'dropped_too_easy')})} -> {out}", flush=True)
    return report


def counts_path_of(out: str) -> str:
    return os.path.splitext(out)[0] + ".counts.json"


# ---------------------------------------------------------------- the chain

def load_chain(path: str) -> dict:
    """The chain YAML, checked: unknown keys, missing keys and duplicate stage names fail naming the key."""
    from reasonrl.run.plan import check_config_file

    chain = check_config_file(["--chain", path], (), flag="--chain")
    unknown = set(chain) - CHAIN_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(CHAIN_KEYS)}")
    chain.setdefault("launcher", "accelerate")
    if chain["launcher"] not in ("accelerate", "python"):
        raise ValueError(f"{path}: launcher must be 'accelerate' or 'python', got {chain['launcher']!r}")
    if chain["launcher"] == "accelerate" and not chain.get("accelerate_config"):
        raise ValueError(f"{path}: launcher accelerate needs accelerate_config (e.g. accelerate_configs/zero3.yaml)")
    if not chain.get("model") or not chain.get("stages"):
        raise ValueError(f"{path}: needs `model` (where the first stage starts) and a list of `stages`")
    names = []
    for i, stage in enumerate(chain["stages"]):
        where = f"{path}: stage {i} ({stage.get('name', '?')})"
        if set(stage) - STAGE_KEYS:
            raise ValueError(f"{where}: unknown key(s) {sorted(set(stage) - STAGE_KEYS)}; "
                             f"allowed: {sorted(STAGE_KEYS)}")
        for key in ("name", "recipe", "output_dir"):
            if not stage.get(key):
                raise ValueError(f"{where}: missing `{key}`")
        select_cfg = stage.get("select")
        if select_cfg is not None:
            if set(select_cfg) - SELECT_KEYS or not {"samples", "max_pass_rate"} <= set(select_cfg):
                raise ValueError(f"{where}: `select` needs samples and max_pass_rate (optional max_new_tokens, "
                                 f"backend), got {sorted(select_cfg)}")
            max_passes(select_cfg["samples"], select_cfg["max_pass_rate"])
        if not isinstance(stage.get("epochs", 1), int) or stage.get("epochs", 1) < 1:
            raise ValueError(f"{where}: `epochs` must be an integer >= 1")
        names.append(stage["name"])
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: stage names must be unique, got {names}")
    return chain


def train_command(chain: dict, stage: dict, model: str, output_dir: str, dataset: str | None,
                  extra: list[str] = ()) -> list[str]:
    """The train_grpo.py command line of one stage (or one epoch of it)."""
    script = os.path.join(ROOT, "train_grpo.py")
    if chain["launcher"] == "accelerate":
        launcher = ["accelerate", "launch", "--config_file", chain["accelerate_config"], script]
    else:
        launcher = [sys.executable, script]
    data = ["--dataset_name", dataset] if dataset else []
    return [*launcher, "--config", stage["recipe"], "--model_name_or_path", model, "--output_dir", output_dir, *data,
            *stage.get("args", []), *extra]


def run_command(cmd: list[str]) -> None:
    print(f"[stages] $ {' '.join(cmd)}", flush=True)
    code = subprocess.run(cmd).returncode
    if code != 0:
        raise RuntimeError(f"exited with status {code}: {' '.join(cmd)}\nRun the same stages.py command again to "
                           "resume from the last checkpoint.")


def _write_json(path: str, data: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=2)
    os.replace(path + ".tmp", path)


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_stage(chain: dict, stage: dict, model: str, extra: list[str] = (), train=None, selector=None) -> str:
    """Train one stage from `model`, epoch by epoch, selecting prompts first where configured; return its model.
    train(cmd) and selector(**kwargs) default to run_command and select (tests pass stand-ins)."""
    train, selector = train or run_command, selector or select
    epochs, select_cfg = stage.get("epochs", 1), stage.get("select")
    dataset = None  # None: the recipe's own dataset
    for epoch in range(1, epochs + 1):
        out = stage["output_dir"] if epochs == 1 else os.path.join(stage["output_dir"], f"epoch_{epoch}")
        selected = os.path.join(out, "prompts.jsonl") if select_cfg else None
        if epochs > 1 and _read_json(os.path.join(out, EPOCH_DONE)):
            print(f"[stages] {stage['name']} epoch {epoch}: done, skipped", flush=True)
            model, dataset = out, selected or dataset
            continue
        if select_cfg and not os.path.exists(counts_path_of(selected)):
            report = selector(model=model, recipe=stage["recipe"], samples=select_cfg["samples"],
                              max_pass_rate=select_cfg["max_pass_rate"], out=selected,
                              max_new_tokens=select_cfg.get("max_new_tokens"),
                              backend=select_cfg.get("backend", "auto"), dataset_name=dataset,
                              recipe_args=[*stage.get("args", []), *extra])
            if report["kept"] == 0:
                raise RuntimeError(f"stage {stage['name']}: the model solves every prompt more often than "
                                   f"max_pass_rate={select_cfg['max_pass_rate']}; raise it in the chain's `select`")
        dataset = selected or dataset
        train(train_command(chain, stage, model, out, dataset, extra))
        if not os.path.exists(os.path.join(out, "config.json")):
            raise RuntimeError(f"stage {stage['name']}: train_grpo.py finished but saved no model in {out}")
        if epochs > 1:
            _write_json(os.path.join(out, EPOCH_DONE), {"model": out, "dataset": dataset})
        model = out
    return model


def run_chain(chain: dict, stage: str | None = None, extra: list[str] = (), model: str | None = None,
              train=None, selector=None) -> list[dict]:
    """Run every stage (or the one named) in order, skipping finished ones; returns [{name, status, model}]."""
    names = [s["name"] for s in chain["stages"]]
    if stage is not None and stage not in names:
        raise ValueError(f"no stage named {stage!r} in the chain; stages: {names}")
    start = names.index(stage) if stage else 0
    if model is None:
        model = chain["model"]
        if start > 0:
            previous = chain["stages"][start - 1]
            done = _read_json(os.path.join(previous["output_dir"], STAGE_DONE))
            if done is None:
                raise RuntimeError(f"stage {stage} starts from stage {previous['name']}'s model, which has not "
                                   f"finished ({previous['output_dir']}/{STAGE_DONE} is missing); run it first or "
                                   "pass --model")
            model = done["model"]
    results = []
    for s in chain["stages"][start:start + 1] if stage else chain["stages"]:
        marker = os.path.join(s["output_dir"], STAGE_DONE)
        done = _read_json(marker)
        if done is not None:
            print(f"[stages] {s['name']}: done ({marker}), skipped", flush=True)
            results.append({"name": s["name"], "status": "skipped", "model": done["model"]})
            model = done["model"]
            continue
        started_from = model
        model = run_stage(chain, s, model, extra, train, selector)
        _write_json(marker, {"name": s["name"], "model": model, "started_from": started_from,
                             "recipe": s["recipe"], "epochs": s.get("epochs", 1), "finished": time.strftime("%F %T")})
        results.append({"name": s["name"], "status": "trained", "model": model})
    return results


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the chain, or one stage of it")
    run.add_argument("--chain", required=True)
    run.add_argument("--stage", default=None, help="only this stage")
    run.add_argument("--model", default=None, help="start --stage from this model instead of the previous stage's")
    sel = sub.add_parser("select", help="keep the prompts a model does not already solve")
    sel.add_argument("--model", required=True)
    sel.add_argument("--recipe", required=True)
    sel.add_argument("--samples", type=int, default=16)
    sel.add_argument("--max_pass_rate", type=float, default=0.875)
    sel.add_argument("--out", required=True, help=".jsonl or .parquet")
    sel.add_argument("--max_new_tokens", type=int, default=None, help="default: the recipe's max_completion_length")
    sel.add_argument("--backend", default="auto", help="eval.py backend: auto, vllm, transformers, openai")
    sel.add_argument("--dataset_name", default=None, help="instead of the recipe's dataset (same columns)")
    sel.add_argument("--limit", type=int, default=None, help="first N prompts only (smoke runs)")
    args = parser.parse_args(argv)
    if args.command == "run":
        for r in run_chain(load_chain(args.chain), args.stage, extra, args.model):
            print(f"[stages] {r['name']}: {r['status']} -> {r['model']}", flush=True)
    else:
        select(args.model, args.recipe, args.samples, args.max_pass_rate, args.out, args.max_new_tokens,
               args.backend, args.dataset_name, extra, args.limit)


if __name__ == "__main__":
    main()
