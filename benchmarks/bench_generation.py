"""Rollout speed for a recipe's settings: transformers' generate against vLLM, on this machine.

Both generate one GRPO generation step: the recipe's first `prompts_per_step` training prompts (JustRL's prompt
through the model's chat template, as reasonrl/run/data.py's load_prompts builds them), `num_generations` samples each, at the
recipe's temperature and top_p, up to `max_completion_length` new tokens; the same prompt token ids go to both.
transformers: one padded `generate` call with num_return_sequences, as TRL's non-vLLM path does. vLLM: one
`LLM.generate` with n samples per prompt, as TRL's colocate mode does, with generation.vllm_engine_kwargs' settings
(on CPU: float32, no chunked prefill). Reported per engine: seconds per step (mean over --steps after one warm-up
step), generated tokens/s, and vLLM's engine start apart. Threads: torch's default (all cores) unless --threads.

    python -m benchmarks.bench_generation --config recipes/real_cpu.yaml                # both engines, 2 steps each
    python -m benchmarks.bench_generation --config recipes/real_cpu.yaml --engines transformers --steps 3
    VLLM_CPU_KVCACHE_SPACE=2 python -m benchmarks.bench_generation --config recipes/real_cpu.yaml --engines vllm
"""

import argparse
import json
import os
import time


def recipe_settings(config: str) -> dict:
    """The recipe's rollout settings, read as train_grpo.py reads them (same parser, same defaults)."""
    from trl import TrlParser

    from reasonrl.run.config import JustRLConfig, ScriptArguments
    from trl import ModelConfig

    script, training, model = TrlParser((ScriptArguments, JustRLConfig, ModelConfig)).parse_args_and_config(
        ["--config", config, "--output_dir", "/tmp/unused"])
    return {"script": script, "model": model.model_name_or_path, "prompts": training.prompts_per_step,
            "samples": training.num_generations, "max_new_tokens": training.max_completion_length,
            "temperature": training.temperature, "top_p": training.top_p, "seed": training.seed}


def prompt_ids(settings: dict) -> list[list[int]]:
    from transformers import AutoTokenizer

    from reasonrl.run.data import load_prompts

    script = settings["script"]
    if script.prepare_assets:
        from reasonrl.run.plan import import_function
        import_function(script.prepare_assets, "prepare_assets")(**(script.prepare_kwargs or {}))
    tokenizer = AutoTokenizer.from_pretrained(settings["model"])
    rows, _ = load_prompts(script, tokenizer)
    return [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
            for p in rows.select(range(settings["prompts"]))["prompt"]]


def bench_transformers(settings: dict, prompts: list[list[int]], steps: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(settings["model"])
    model = AutoModelForCausalLM.from_pretrained(settings["model"], dtype=torch.float32).eval()
    width = max(map(len, prompts))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    times, tokens = [], []
    for step in range(steps + 1):
        torch.manual_seed(settings["seed"] + step)
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=True,
                                 temperature=settings["temperature"], top_p=settings["top_p"], top_k=0,
                                 num_return_sequences=settings["samples"], max_new_tokens=settings["max_new_tokens"],
                                 pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        times.append(time.perf_counter() - start)
        completion = out[:, width:]
        # tokens up to and including eos: what the step really generated
        tokens.append(sum(min(len(row), (row == tokenizer.eos_token_id).nonzero()[0].item() + 1
                              if (row == tokenizer.eos_token_id).any() else len(row)) for row in completion))
    return _report(times[1:], tokens[1:], {"threads": torch.get_num_threads()})


def bench_vllm(settings: dict, prompts: list[list[int]], steps: int) -> dict:
    import torch
    from vllm import LLM, SamplingParams

    import eval as ev
    from reasonrl.generation.engines import vllm_engine_kwargs

    args = ev.EvalArgs(seed=settings["seed"], max_model_len=max(map(len, prompts)) + settings["max_new_tokens"])
    start = time.perf_counter()
    llm = LLM(**vllm_engine_kwargs(settings["model"], args, cpu=not torch.cuda.is_available()))
    engine_start = time.perf_counter() - start
    times, tokens = [], []
    for step in range(steps + 1):
        params = SamplingParams(n=settings["samples"], temperature=settings["temperature"], top_p=settings["top_p"],
                                max_tokens=settings["max_new_tokens"], seed=settings["seed"] + step)
        start = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        times.append(time.perf_counter() - start)
        tokens.append(sum(len(c.token_ids) for o in outs for c in o.outputs))
    llm.llm_engine.engine_core.shutdown()
    return _report(times[1:], tokens[1:], {"engine_start_s": round(engine_start, 1)})


def _report(times: list[float], tokens: list[int], extra: dict) -> dict:
    return {"seconds_per_step": round(sum(times) / len(times), 1), "tokens_per_step": round(sum(tokens) / len(tokens)),
            "tokens_per_s": round(sum(tokens) / sum(times), 1), "steps": len(times), **extra}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="recipes/real_cpu.yaml")
    parser.add_argument("--engines", nargs="+", default=["transformers", "vllm"])
    parser.add_argument("--steps", type=int, default=2, help="timed steps per engine, after one warm-up step")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for transformers")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    settings = recipe_settings(args.config)
    prompts = prompt_ids(settings)
    result = {"config": args.config, "load_average_1min": os.getloadavg()[0], "cores": os.cpu_count(),
              **{k: settings[k] for k in ("model", "prompts", "samples", "max_new_tokens", "temperature", "top_p")}}
    for engine in args.engines:
        result[engine] = {"transformers": bench_transformers, "vllm": bench_vllm}[engine](settings, prompts, args.steps)
        print(json.dumps({engine: result[engine]}), flush=True)
    result["load_average_1min_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
