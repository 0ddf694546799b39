"""GRPO training for small reasoning models, on TRL, with the paper recipes' exact batch and loss semantics.

How this departs from TRL's stock GRPOTrainer, and why:
  1. The policy loss is `policy_loss()` (reasonrl/trainer/loss.py), one pure function: PPO ratio with asymmetric
     clipping (1 - epsilon, 1 + epsilon_high: JustRL's "clip higher") and veRL's dual clip for negative advantages,
     whose bound c is TRL's `delta` (TRL caps the ratio at delta before the min; for negative advantages that is the
     same bound, for positive ones it never binds when delta > 1 + epsilon_high). The log-ratio is clamped to
     [-20, 20] against overflow (JustRL's veRL 0.4 fork has no clamp; later veRL does). The vLLM importance-sampling
     weight and the KL term (beta > 0) enter per token, as in TRL. Aggregation: a token mean over the tokens of
     each optimizer update across all processes (TRL's "dapo" divides by the generation's average update instead,
     which scales an update by 2-3% typically, 5-7% at p99, on simulated lengths: benchmarks/bench_normaliser.py),
     or with `seq_mean_loss` the mean over the update's sequences of each sequence's token mean, KL included
     (TRL's GRPO loss when Open-RS ran).
  2. A recipe states the paper's batch: `prompts_per_step` x `num_generations` responses per generation step, then
     `optimizer_updates_per_step` updates. TRL's per-device batch, gradient accumulation and steps_per_generation
     are derived from the world size at launch (`derive_batch`); an impossible cluster shape fails at start-up.
  3. Step units: TRL counts optimizer updates; veRL (JustRL) counts generation steps and steps its LR scheduler
     once per generation step. `*_generation_steps` fields take paper units and are converted (x
     optimizer_updates_per_step x num_iterations, the updates of one generation step); with
     `scheduler_per_generation: true` the learning rate is constant within a generation step, as in veRL.
  4. Optimizer as veRL runs it: `weight_decay_all_params: true` (JustRL recipes) decays biases and norm weights
     too; updates land in fp32 master weights whatever the launch (`precision_plan`: DeepSpeed's fp32 copy under
     ZeRO, else the model is loaded in fp32 and computes under bf16 autocast); an update whose gradient norm is
     NaN/inf is skipped, optimizer and LR scheduler untouched (counted as `nonfinite_grad_updates_skipped`).
  5. Logged besides TRL's metrics: accuracy (reward.py), fractions of tokens clipped low / high / by the dual clip,
     time per phase (generation, reward, update), and the dataset rows of every generation step
     (`<output_dir>/data_order/`), which shows that a resumed run neither skips nor repeats a prompt.
  6. The update computes little padding (reasonrl/trainer/packing.py). TRL pads a process's whole generation to its
     longest response and runs every micro-batch, and every old-policy / reference log-prob chunk, at that width: at
     JustRL's lengths 1.9-3.4x the real tokens. Here each micro-batch and chunk is trimmed to its own longest prompt
     and response, and inside each optimizer update (each process, its own share) responses of similar length share a
     micro-batch (`group_update_by_length`, on in every recipe): 1.0-1.3x (benchmarks/bench_update.py). The
     gradient is the same: the loss is a token mean over the update's tokens, so which micro-batch a response lands
     in does not matter, and the number and size of micro-batches per update are unchanged on every process. Logged
     per update: tokens/real, tokens/computed, tokens/padding_fraction.
  7. Faults end the run instead of hanging it: a reward call longer than `reward_timeout_s` raises, naming the
     reward and the rank (otherwise the other ranks wait at the next collective for its 30-minute watchdog); every
     request to a vLLM server has `vllm_request_timeout_s` (TRL's client has none) and is not re-sent after a read
     fails (TRL's client would re-send it 5 times: ~6x the bound); a relaunch resumes from the newest
     *complete* checkpoint (transformers takes the highest number, even one a kill cut short); a multi-process CPU
     run reloads its optimizer state on "cpu" (transformers maps it to "cpu:0", which torch.load cannot restore).
     Asked to stop (<output_dir>/stop_requested, written by launch_slurm.py before a job's time limit), every process
     saves at the next generation step and exits 0 (reasonrl/trainer/requeue.py); the requeued job resumes there.
  8. Validation inside training, as JustRL's veRL run (val_before_train, test_freq): `validation_*` keys name
     benchmarks, schedule, sampling and grader (veRL's math-verify rule by default); the run's own engine samples
     them (colocated vLLM, the vLLM server or transformers, after the weight sync), and reasonrl/trainer/validation.py
     writes eval.py-format outputs under <output_dir>/validation/step_<N>/, TensorBoard curves and accuracy_vs_step.png.
     It consumes no training randomness and changes no weight (tests/test_validation.py).
  9. Optional overlap in server mode (`async_generation_steps: 1`; every paper recipe keeps 0, on-policy): the vLLM
     server generates step t+1's responses while the trainers update on step t (reasonrl/trainer/overlap.py). Those
     responses are one generation step off-policy: TRL's truncated vLLM importance weight
     (`vllm_importance_sampling_correction`, required) corrects the sampling policy token by token, and the PPO ratio
     stays against the trainer's old-policy log-probs (veRL's one-step-off-policy, NeMo-RL's async GRPO; TRL's
     experimental AsyncGRPOTrainer drops stale samples and has neither this loss nor DeepSpeed). Data order, resume,
     validation and the stop before a time limit are unchanged; staleness is logged per step.

Commands:
    # the embedded CPU demo (builds a tiny model and data once, ~4 min on 2 cores)
    accelerate launch --config_file accelerate_configs/cpu.yaml train_grpo.py --config recipes/tiny.yaml
    # the same with vLLM generation on the CPU: colocated engines (server mode: reasonrl/generation/cpu_vllm.py)
    accelerate launch --config_file accelerate_configs/cpu.yaml train_grpo.py --config recipes/tiny.yaml \\
        --use_vllm true --vllm_mode colocate
    # print the resolved configuration for a cluster of N training processes; loads nothing
    python train_grpo.py --config recipes/justrl.yaml --dry_run --world_size 32
    # JustRL on one 8-GPU node: a vLLM server of 4 data-parallel engines on 4 GPUs, 4 training processes (dividing 512)
    CUDA_VISIBLE_DEVICES=4,5,6,7 trl vllm-serve --model deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B --data_parallel_size 4 \\
        --max_model_len 32768 &
    CUDA_VISIBLE_DEVICES=0,1,2,3 accelerate launch --config_file accelerate_configs/zero3.yaml --num_processes 4 \\
        train_grpo.py --config recipes/justrl.yaml
    # several nodes: see launch_slurm.py
A relaunch with the same output_dir resumes from its latest checkpoint (`--resume_from_checkpoint PATH` to choose).

This script is the glue, in order: configuration (reasonrl/run/config.py, checked before anything loads), assets,
precision, tokenizer, data (reasonrl/run/data.py), model and rewards (reward.py) into the trainer
(reasonrl/trainer/trainer.py), train, save. What each piece of reasonrl/ does: README.md, "What is where".
"""

import json
import os
import sys
from collections import defaultdict
from contextlib import nullcontext

import torch
from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser

from reasonrl.run.config import JustRLConfig, ScriptArguments
from reasonrl.run.data import load_prompts
from reasonrl.run.plan import (bf16_gpu_assumed, check_config_file, import_function, json_option, last_checkpoint,
                               precision_plan, resolved_config)
from reasonrl.trainer import requeue, validation
from reasonrl.trainer.faults import collective_timeout_named, time_limited
from reasonrl.trainer.heldout import gathered, heldout_accuracy
from reasonrl.trainer.trainer import ClipHigherGRPOTrainer
from reward import load_reward_funcs


def configure(argv: list[str]):
    """Everything a run is told, checked before anything loads or is written (bad input fails naming the key):
    (script_args, training_args, model_args, reward_funcs, prepare, loss_fn)."""
    check_config_file(argv, (ScriptArguments, JustRLConfig, ModelConfig))
    parser = TrlParser((ScriptArguments, JustRLConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    script_args.reward_kwargs = json_option(script_args.reward_kwargs, "reward_kwargs", '{"dapo": {"correct": 1.0}}')
    script_args.prepare_kwargs = json_option(script_args.prepare_kwargs, "prepare_kwargs", '{"out": ".cache/smollm2"}')
    reward_kwargs = dict(script_args.reward_kwargs or {})
    if "overlong" in script_args.reward_funcs:
        reward_kwargs.setdefault("overlong", {}).setdefault("max_completion_length", training_args.max_completion_length)
    if not script_args.reward_timeout_s > 0:
        raise ValueError(f"reward_timeout_s: {script_args.reward_timeout_s} must be > 0 seconds")
    reward_funcs = [time_limited(f, script_args.reward_timeout_s)  # an unknown reward name fails here
                    for f in load_reward_funcs(script_args.reward_funcs, reward_kwargs)]
    prepare = import_function(script_args.prepare_assets, "prepare_assets") if script_args.prepare_assets else None
    loss_fn = import_function(training_args.policy_loss, "policy_loss")
    validation.check_settings(script_args, training_args)
    return script_args, training_args, model_args, reward_funcs, prepare, loss_fn


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    dry_run = any(a == "--dry_run" or a.startswith("--dry_run=") for a in argv)
    # configuration; a dry run plans for GPU machines from any machine, so it skips the check of this one for bf16
    with bf16_gpu_assumed() if dry_run else nullcontext():
        script_args, training_args, model_args, reward_funcs, prepare, loss_fn = configure(argv)
        if script_args.dry_run:
            world = script_args.world_size or int(os.environ.get("WORLD_SIZE", "1"))
            print(json.dumps(resolved_config(script_args, training_args, model_args, world), indent=2, default=str))
            return None

    # assets, precision (the trainer seeds itself from `seed`)
    if prepare is not None:
        with training_args.main_process_first(desc="assets"):  # built (or fetched) once, then found by the others
            prepare(**(script_args.prepare_kwargs or {}))
    dtype = model_args.dtype
    if dtype in ("auto", None):  # the checkpoint's own dtype decides whether an fp32 copy is needed
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
        dtype = str(getattr(config, "dtype", None) or torch.float32).removeprefix("torch.")
    plugin = training_args.deepspeed_plugin
    zero_stage = None if plugin is None else plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0)
    plan = precision_plan(dtype, training_args.bf16, training_args.fp16, zero_stage)
    print(f"[precision] {json.dumps(plan)}", flush=True)

    # tokenizer and data
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with training_args.main_process_first(desc="prompts"):  # the main process fills the datasets cache
        train_ds, counts = load_prompts(script_args, tokenizer)
        # summary.json's held-out accuracy: read from validation when it measures the same thing, else measured here
        from_validation = validation.measures_heldout(script_args)
        heldout = (load_prompts(script_args, tokenizer, path=script_args.heldout_file)[0]
                   if script_args.heldout_file and not from_validation else None)
        # validation benchmarks: a missing file or column fails here, before the model loads
        validation_data = validation.load_benchmarks(script_args) if validation.enabled(script_args) else None
    print(f"[data] {json.dumps(counts)}", flush=True)

    # model, rewards, trainer
    out = training_args.output_dir
    data_order_path = None
    if script_args.log_data_order:
        os.makedirs(os.path.join(out, "data_order"), exist_ok=True)
        data_order_path = os.path.join(out, "data_order", f"rank{training_args.process_index}.jsonl")
    training_args.model_init_kwargs = {"revision": model_args.model_revision, "dtype": getattr(torch, plan["load_dtype"]),
                                       "attn_implementation": model_args.attn_implementation}
    trainer = ClipHigherGRPOTrainer(model=model_args.model_name_or_path, reward_funcs=reward_funcs,
                                    args=training_args, train_dataset=train_ds, processing_class=tokenizer,
                                    data_order_path=data_order_path, loss_fn=loss_fn)
    if validation_data is not None:
        run_validation = validation.Validation(trainer, script_args, tokenizer, validation_data)
        run_validation.check_engine_length()  # now, not at the first validation hours later
        trainer.add_callback(run_validation.callback())
    # save and stop at a generation-step boundary when launch_slurm.py asks (a time limit ahead): requeue.py
    stop = requeue.stop_callback(trainer.accelerator, out, training_args.updates_per_generation_step)
    trainer.add_callback(stop)

    # train (resuming from the newest complete checkpoint)
    checkpoint = training_args.resume_from_checkpoint or last_checkpoint(out)
    summary_path = os.path.join(out, "summary.json")
    summary = json.load(open(summary_path)) if checkpoint and os.path.exists(summary_path) else {}
    summary["data"] = counts
    if heldout is not None and "accuracy_before" not in summary:
        with gathered(trainer.model):
            summary["accuracy_before"] = heldout_accuracy(trainer.model, tokenizer, heldout, script_args.heldout_max_new_tokens)
    if trainer.accelerator.is_main_process:
        _write_json(summary_path, summary)
    if checkpoint:
        print(f"[resume] from {checkpoint}", flush=True)
    with collective_timeout_named(training_args.ddp_timeout):
        result = trainer.train(resume_from_checkpoint=checkpoint)
    if stop.stopped_at is not None:
        print(f"[stop] stopped on request ({requeue.stop_path(out)}) at global step {stop.stopped_at}, after saving "
              f"checkpoint-{stop.stopped_at} in {stop.saved_in_s:.1f} s; a relaunch resumes from it", flush=True)
        trainer.accelerator.end_training()
        return summary

    # save, held-out accuracy after, summary
    trainer.save_model(out)
    if heldout is not None:
        from trl.models import unwrap_model_for_generation
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as unwrapped:
            summary["accuracy_after"] = heldout_accuracy(unwrapped, tokenizer, heldout, script_args.heldout_max_new_tokens)
    elif from_validation and trainer.accelerator.is_main_process:  # its files are written by the main process
        summary["accuracy_before"] = validation.heldout_accuracy_at(out, 0)
        summary["accuracy_after"] = validation.heldout_accuracy_at(out, run_validation.last_step)
        summary["heldout_source"] = (f"validation/step_0 and step_{run_validation.last_step} (greedy, graded by "
                                     f"{script_args.validation_grader})")
    logs = defaultdict(list)
    for entry in trainer.state.log_history:
        for key in ("reward", "accuracy", "entropy", "completions/mean_length"):
            if key in entry:
                logs[key].append(entry[key])
    summary.update(global_step=trainer.state.global_step, train_runtime_s=result.metrics.get("train_runtime"),
                   first_logged={k: v[0] for k, v in logs.items()}, last_logged={k: v[-1] for k, v in logs.items()})
    if trainer.accelerator.is_main_process:
        _write_json(summary_path, summary)
        print(f"[summary] {json.dumps(summary)}", flush=True)
    # Leave the process group before the interpreter exits: a finished 2-process ZeRO-3 CPU run once aborted in
    # teardown ("terminate called without an active exception"), turning a successful run into a failed one.
    trainer.accelerator.end_training()
    return summary


def _write_json(path: str, obj) -> None:
    """Atomic write: the other ranks may be reading the previous version at the same moment."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
