"""GRPO training for small reasoning models, on TRL, with the paper recipes' exact batch and loss semantics.

How this departs from TRL's stock GRPOTrainer, and why:
  1. The policy loss is `policy_loss()` below, one pure function: PPO ratio with asymmetric clipping
     (1 - epsilon, 1 + epsilon_high: JustRL's "clip higher") and veRL's dual clip for negative advantages, whose
     bound c is TRL's `delta` (TRL caps the ratio at delta before the min; for negative advantages that is the
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
  6. The update computes only real tokens (grpo/packing.py). TRL pads a process's whole generation to its longest response
     and runs every micro-batch, and every old-policy / reference log-prob chunk, at that width: at JustRL's lengths
     1.9-3.4x the real tokens. Here each micro-batch and chunk is trimmed to its own longest prompt and response, and
     inside each optimizer update (each process, its own share) responses of similar length share a micro-batch
     (`group_update_by_length`, on in every recipe): 1.0-1.3x (benchmarks/bench_update.py). The gradient is the same:
     the loss is a token mean over the update's tokens, so which micro-batch a response lands in does not matter, and
     the number and size of micro-batches per update are unchanged on every process. Logged per update:
     tokens/real, tokens/computed, tokens/padding_fraction.
  7. Faults end the run instead of hanging it: a reward call longer than `reward_timeout_s` raises, naming the
     reward and the rank (otherwise the other ranks wait at the next collective for its 30-minute watchdog); every
     request to a vLLM server has `vllm_request_timeout_s` (TRL's client has none) and is not re-sent after a read
     fails (TRL's client would re-send it 5 times: ~6x the bound); a relaunch resumes from the newest
     *complete* checkpoint (transformers takes the highest number, even one a kill cut short); a multi-process CPU
     run reloads its optimizer state on "cpu" (transformers maps it to "cpu:0", which torch.load cannot restore).
     Asked to stop (<output_dir>/stop_requested, written by launch_slurm.py before a job's time limit), every process
     saves at the next generation step and exits 0 (grpo/requeue.py); the requeued job resumes there.
  8. Validation inside training, as JustRL's veRL run (val_before_train, test_freq): `validation_*` keys name
     benchmarks, schedule, sampling and grader (veRL's math-verify rule by default); the run's own engine samples
     them (colocated vLLM, the vLLM server or transformers, after the weight sync), and grpo/validation.py writes
     eval.py-format outputs under <output_dir>/validation/step_<N>/, TensorBoard curves and accuracy_vs_step.png.
     It consumes no training randomness and changes no weight (tests/test_validation.py).

Commands:
    # the embedded CPU demo (builds a tiny model and data once, ~4 min on 2 cores)
    accelerate launch --config_file accelerate_configs/cpu.yaml train_grpo.py --config recipes/tiny.yaml
    # the same with vLLM generation on the CPU: colocated engines (server mode: cpu_vllm.py)
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
"""

import asyncio
import functools
import inspect
import json
import math
import os
import socket
import sys
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property

import torch
from transformers import AutoTokenizer, get_scheduler
from trl import GRPOConfig, GRPOTrainer, ModelConfig, TrlParser

from data import JUSTRL_SUFFIX, load_prompts
from grpo.packing import regroup_update, token_counts, trim_micro_batch, trimmed_widths
from plan import (NONFINITE_KEY, check_config_file, derive_batch, json_option, last_checkpoint, precision_plan,
                  resolved_config)



@dataclass
class ScriptArguments:
    # Data
    dataset_name: str = field(default="BytedTsinghua-SIA/DAPO-Math-17k",
                              metadata={"help": "Hub id, or a local .parquet/.jsonl/.json file."})
    dataset_config: str | None = None
    dataset_split: str = "train"
    prompt_column: str = field(default="prompt", metadata={"help": "Chat list or string; dotted path for nesting."})
    answer_column: str = field(default="reward_model.ground_truth", metadata={"help": "Dotted path allowed."})
    prompt_suffix: str = field(default=JUSTRL_SUFFIX, metadata={"help": "Appended to the user message."})
    system_prompt: str | None = None
    strip_dapo_instruction: bool = field(default=False, metadata={"help": "Drop DAPO's 'Answer:' instruction."})
    dedup_prompts: bool = field(default=False, metadata={"help": "Keep one row per distinct prompt."})
    max_prompt_length: int = field(default=1024, metadata={"help": "Tokens incl. chat template; longer dropped."})
    dataset_num_proc: int | None = None
    # Rewards: names from reward.REWARDS or dotted paths; weights are GRPOConfig.reward_weights
    reward_funcs: list[str] = field(default_factory=lambda: ["dapo"])
    reward_kwargs: dict | str | None = field(default=None, metadata={"help": "{reward name: {arg: value}}"})
    reward_timeout_s: float = field(default=900.0, metadata={
        "help": "Longest one reward call (a process's batch) may take; past it the process stops with an error "
                "naming the reward, instead of the other processes waiting at a collective for its watchdog."})
    # Held-out greedy accuracy before and after training, written to <output_dir>/summary.json
    heldout_file: str | None = None
    heldout_max_new_tokens: int = 64
    # Validation inside training (grpo/validation.py): benchmarks sampled with the run's engine, avg@k / pass@k curves
    validation_benchmarks: list[str] = field(default_factory=list, metadata={
        "help": "eval.py benchmark names (AIME24 ...), NAME=path (eval.py's --extra) or heldout (heldout_file)."})
    validation_data_dir: str | None = field(default=None, metadata={"help": "<dir>/<NAME>/test.parquet; unset: Hub."})
    validation_every_generation_steps: int = field(default=0, metadata={
        "help": "Validate every N generation steps and after the last (JustRL: 50); 0: never during training."})
    validation_before_training: bool = field(default=False, metadata={"help": "Validate at step 0 (JustRL: true)."})
    validation_n_samples: int | None = field(default=None, metadata={
        "help": "Samples per problem (avg@n); unset: eval.py's k per benchmark (1 for NAME=path)."})
    validation_temperature: float = 0.7
    validation_top_p: float = 0.9
    validation_max_new_tokens: int = 31744
    validation_grader: str = field(default="math_verify", metadata={
        "help": "math_verify: veRL's math-verify rule (JustRL's curves); eval: eval.py's rule grader."})
    validation_limit: int | None = field(default=None, metadata={"help": "First N problems per benchmark."})
    validation_batch_size: int = field(default=16, metadata={"help": "transformers engine: prompts per chunk."})
    validation_prompt_template: str | None = field(default=None, metadata={
        "help": "'{problem}' plus an instruction; unset: eval.py's (JustRL's evaluation prompt)."})
    validation_seed: int = field(default=0, metadata={"help": "Sample round r uses seed + r, as eval.py."})
    # Assets a recipe builds before anything loads, once, main process first (tiny.ensure_tiny_assets for the demo,
    # real_model.ensure_real_assets); by path, so this script imports neither
    prepare_assets: str | None = field(default=None, metadata={"help": "module.function called with prepare_kwargs."})
    prepare_kwargs: dict | str | None = None
    # Run control
    dry_run: bool = field(default=False, metadata={"help": "Print the resolved config as JSON and exit."})
    world_size: int | None = field(default=None, metadata={"help": "With --dry_run: training processes to plan for."})
    log_data_order: bool = True


@dataclass
class JustRLConfig(GRPOConfig):
    """GRPOConfig plus the paper quantities TRL has no field for (all in paper units)."""

    prompts_per_step: int | None = field(default=None, metadata={"help": "Prompts per generation step."})
    optimizer_updates_per_step: int = field(default=1, metadata={"help": "Mini-batches per generation step."})
    total_generation_steps: int | None = field(default=None, metadata={"help": "Sets max_steps (x updates)."})
    warmup_generation_steps: int | None = field(default=None, metadata={"help": "LR warm-up, generation steps."})
    save_generation_steps: int | None = field(default=None, metadata={"help": "Sets save_steps (x updates)."})
    scheduler_per_generation: bool = field(default=False, metadata={"help": "veRL: LR steps once per generation."})
    seq_mean_loss: bool = field(default=False, metadata={"help": "Original GRPO: mean of per-sequence means."})
    vllm_request_timeout_s: float = field(default=3600.0, metadata={
        "help": "Longest any request to the vLLM server may take (a generation included); past it the trainer stops "
                "with an error naming the server, instead of waiting on a dead or hung one."})
    weight_decay_all_params: bool = field(default=False, metadata={
        "help": "veRL: decay every parameter. false: transformers' Trainer exempts biases and norm weights."})
    group_update_by_length: bool = field(default=True, metadata={
        "help": "Inside each update, micro-batches of responses of similar length (same gradient; grpo/packing.py)."})

    @property
    def updates_per_generation_step(self) -> int:
        """Optimizer updates per generation step: optimizer_updates_per_step mini-batches, each used num_iterations
        times (veRL's ppo_epochs; TRL reuses a generation for num_iterations passes over its micro-batches)."""
        return self.optimizer_updates_per_step * self.num_iterations

    def __post_init__(self):
        updates = self.updates_per_generation_step
        if self.prompts_per_step is not None:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            b = derive_batch(self.prompts_per_step, self.num_generations, self.optimizer_updates_per_step, world,
                             self.per_device_train_batch_size)
            _set_derived(self, "gradient_accumulation_steps", b["gradient_accumulation_steps"], default=1)
            _set_derived(self, "steps_per_generation", b["steps_per_generation"], default=None)
        if self.total_generation_steps is not None:
            _set_derived(self, "max_steps", self.total_generation_steps * updates, default=-1)
        if self.save_generation_steps is not None:
            _set_derived(self, "save_steps", self.save_generation_steps * updates, default=500)
        if self.warmup_generation_steps is not None and not self.scheduler_per_generation:
            _set_derived(self, "warmup_steps", self.warmup_generation_steps * updates, default=0)
        if self.loss_type != "dapo":
            raise ValueError(f"loss_type={self.loss_type!r}: this trainer's policy_loss implements 'dapo' (token mean "
                             "over the global mini-batch); set seq_mean_loss: true for the original GRPO mean.")
        unsupported = {"importance_sampling_level": (self.importance_sampling_level, "token"),
                       "top_entropy_quantile": (self.top_entropy_quantile, 1.0),
                       "entropy_coef": (self.entropy_coef, 0.0), "use_adaptive_entropy": (self.use_adaptive_entropy, False),
                       "off_policy_mask_threshold": (self.off_policy_mask_threshold, None)}
        for key, (value, needed) in unsupported.items():
            if value != needed:
                raise ValueError(f"{key}={value!r} is not supported by train_grpo.py's policy_loss; set it to {needed!r}.")
        if self.beta != 0.0 and self.use_bias_correction_kl:
            raise ValueError("use_bias_correction_kl=True (TRL's default) is not implemented by train_grpo.py's "
                             "policy_loss, which adds the plain per-token KL as TRL did when Open-RS ran; set "
                             "use_bias_correction_kl: false.")
        super().__post_init__()
        if self.steps_per_generation % self.gradient_accumulation_steps:
            raise ValueError(f"steps_per_generation={self.steps_per_generation} is not a multiple of "
                             f"gradient_accumulation_steps={self.gradient_accumulation_steps}: an optimizer update "
                             "would span two generations. Make it a multiple, or state the batch with prompts_per_step.")

    @cached_property
    def _setup_devices(self):
        # transformers hands ddp_timeout to the process group except under use_cpu (gloo), where every process would
        # then wait 30 minutes on a lost peer: start that group here, with it (accelerate keeps a started group).
        import torch.distributed as dist

        if (self.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available()
                and not dist.is_initialized()):
            dist.init_process_group(backend=self.ddp_backend or "gloo", timeout=self.ddp_timeout_delta)
        return super()._setup_devices


def _set_derived(args, key: str, value, default) -> None:
    """Set a TRL field derived from a paper quantity, refusing a conflicting explicit value."""
    current = getattr(args, key)
    if current not in (default, value):
        raise ValueError(f"{key}={current} conflicts with the value {value} derived from the paper quantities "
                         f"(prompts_per_step / *_generation_steps); remove {key} from the recipe.")
    setattr(args, key, value)


def policy_loss(logps, old_logps, advantages, mask, clip_low=0.2, clip_high=0.28, clip_c=10.0, *,
                num_tokens=None, token_weights=None, seq_mean=False, ref_logps=None, beta=0.0):
    """PPO-clip policy loss with asymmetric clipping and dual clip, plus an optional KL penalty; returns (loss, stats).

    logps, old_logps, ref_logps, mask, token_weights: (B, T); advantages: (B,) or (B, T). clip_c=None disables the
    dual clip. Per token: l = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)), and for A < 0 also
    l = min(l, -A c); token_weights (e.g. TRL's vLLM importance-sampling ratio) scale l; with beta > 0,
    l += beta * KL, KL = exp(ref - logp) - (ref - logp) - 1 (TRL's k3 estimator against the reference model).
    Aggregation: sum(l * mask) / num_tokens (default: mask.sum(), the token mean); seq_mean=True averages each
    sequence's token mean instead (TRL's GRPO loss of early 2025, KL inside each sequence's mean).
    stats: {name: (numerator, denominator)} for the fractions clipped low / high / by the dual clip and the mean KL."""
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages
    # The log-ratio is clamped to [-20, 20] so that exp() cannot overflow (an inf ratio makes the gradient NaN even
    # where a clip bound removes it). JustRL's veRL 0.4 fork has no clamp (later veRL versions added this one). With
    # the dual clip on, the clamp changes nothing else; without it, it caps a negative-advantage token at r = e^20.
    ratio = torch.exp(torch.clamp(logps - old_logps, -20.0, 20.0))
    per_token = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high))
    if clip_c is not None:
        per_token = torch.where(adv < 0, torch.minimum(per_token, -adv * clip_c), per_token)
    if token_weights is not None:
        per_token = per_token * token_weights
    if beta != 0.0:
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        per_token = per_token + beta * kl
    mask = mask.to(per_token.dtype)
    if seq_mean:
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    else:
        loss = (per_token * mask).sum() / (mask.sum() if num_tokens is None else num_tokens).clamp(min=1.0)
    with torch.no_grad():
        clipped = {"clip_ratio/low": (adv < 0) & (ratio < 1 - clip_low),
                   "clip_ratio/high": (adv > 0) & (ratio > 1 + clip_high),
                   "clip_ratio/dual": (adv < 0) & (ratio > clip_c) if clip_c is not None else torch.zeros_like(mask).bool()}
        stats = {k: ((v.to(mask.dtype) * mask).sum(), mask.sum()) for k, v in clipped.items()}
        if beta != 0.0:
            stats["kl"] = ((kl * mask).sum(), mask.sum())
    return loss, stats


class ClipHigherGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose loss is `policy_loss`, over micro-batches of real tokens (grpo/packing.py), with paper-unit LR
    scheduling and per-phase timing."""

    def __init__(self, *args, **kwargs):
        config = kwargs.get("args")
        check_text_only(kwargs.get("processing_class"), kwargs.get("train_dataset"))
        if uses_cpu_vllm(config):  # TRL's vLLM weight sync needs CUDA: cpu_vllm.py puts a CPU one in its place
            from cpu_vllm import cpu_vllm_generation
        with cpu_vllm_generation(config.output_dir) if uses_cpu_vllm(config) else nullcontext():
            super().__init__(*args, **kwargs)
        check_text_only(self.processing_class, None)  # TRL loads a processor itself when given none
        client = getattr(getattr(self, "vllm_generation", None), "vllm_client", None)
        if client is not None:  # TRL's client sends its requests without a timeout: a hung server would block forever
            bound_requests(client, self.args.vllm_request_timeout_s)
        self._phase_time = {"generation": 0.0, "reward": 0.0, "update": 0.0}
        self._nonfinite_skipped = None  # updates skipped for a non-finite gradient norm, counted from the run's start

    def _load_optimizer_and_scheduler(self, checkpoint):
        # transformers maps a multi-process run's optimizer state to args.device, which for CPU processes is "cpu:N":
        # a location torch.load cannot restore ("don't know how to restore data location ... cpu:0"). Map it to "cpu".
        device = self.args.device
        if checkpoint is None or device.type != "cpu" or device.index is None:
            return super()._load_optimizer_and_scheduler(checkpoint)
        load = torch.load

        def load_on_cpu(*args, **kwargs):
            if kwargs.get("map_location") == device:
                kwargs["map_location"] = "cpu"
            return load(*args, **kwargs)

        torch.load = load_on_cpu
        try:
            return super()._load_optimizer_and_scheduler(checkpoint)
        finally:
            torch.load = load

    def get_decay_parameter_names(self, model):
        if self.args.weight_decay_all_params:  # veRL hands every actor parameter to AdamW with one weight decay
            return [name for name, _ in model.named_parameters()]
        return super().get_decay_parameter_names(model)

    def _get_grad_norm(self, model, grad_norm=None):
        """The Trainer calls this once per update, after clipping and right before optimizer.step(). A non-finite
        norm skips the update, as veRL does: gradients dropped, optimizer state and LR scheduler untouched.

        The norm is global (computed after the gradient all-reduce), so every process takes the same decision.
        DeepSpeed's engine has already stepped inside backward(): with bf16 (check_grad_overflow, on by default) or
        fp32 and any ZeRO stage it skips such an update itself (its "overflow") and leaves the scheduler alone, so
        here it is only counted."""
        grad_norm = super()._get_grad_norm(model, grad_norm)
        norm = None if grad_norm is None else float(grad_norm)  # None: DeepSpeed ZeRO-1/2 without a norm
        nonfinite = norm is not None and not math.isfinite(norm)
        if self.is_deepspeed_enabled:
            skipped = self.accelerator.optimizer_step_was_skipped or nonfinite
        else:
            skipped = nonfinite
            if skipped:
                # No gradient at all: torch optimizers skip parameters whose .grad is None, so AdamW neither moves
                # the weights (not even by weight decay) nor advances its moments and step count.
                self.optimizer.zero_grad(set_to_none=True)
            # accelerate's skipped-step flag (its fp16 GradScaler sets it): the Trainer then leaves the LR scheduler
            self.optimizer._is_overflow = skipped
        if skipped:
            self._nonfinite_skipped = self._skipped_so_far() + 1
            if self.accelerator.is_main_process:
                print(f"[skip] update {self.state.global_step + 1}: gradient norm {norm} is not finite; "
                      "the update is skipped", flush=True)
        return grad_norm

    def _skipped_so_far(self) -> int:
        if self._nonfinite_skipped is None:  # a resumed run continues the count it logged
            self._nonfinite_skipped = max((e.get(NONFINITE_KEY, 0) for e in self.state.log_history), default=0)
        return self._nonfinite_skipped

    def _compute_loss(self, model, inputs):
        """As TRL 1.16's: tool_mask (0 on tool-output tokens) multiplies the completion mask, and a MoE model's router
        load-balancing loss is added (router_aux_loss_coef x aux / accumulation; like TRL's, it is computed per
        micro-batch, whose responses group_update_by_length chooses). Multimodal inputs are refused at start-up
        (check_text_only)."""
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        mask = completion_mask if inputs.get("tool_mask") is None else completion_mask * inputs["tool_mask"]
        logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled)
        old_logps = inputs.get("old_per_token_logps")
        old_logps = logps.detach() if old_logps is None else old_logps
        training = self.model.training
        # Token mean over one optimizer update: each process divides by its share of the update's global token count
        # (gradients are averaged over processes and summed over the accumulated micro-batches). In eval the batch
        # is neither split nor accumulated: TRL's count of the eval batch is that update.
        num_tokens = inputs["update_num_tokens"] if training else inputs["num_items_in_batch"]
        num_tokens = num_tokens.clamp(min=1.0) / self.accelerator.num_processes
        is_weights = inputs.get("importance_sampling_ratio") if self.use_vllm and self.vllm_importance_sampling_correction else None
        loss, stats = policy_loss(logps, old_logps, inputs["advantages"], mask, self.epsilon_low, self.epsilon_high,
                                  self.args.delta, num_tokens=num_tokens, token_weights=is_weights,
                                  seq_mean=self.args.seq_mean_loss, ref_logps=inputs.get("ref_per_token_logps"),
                                  beta=self.beta)
        if self.args.seq_mean_loss and training:  # mean over the update's sequences (equal micro-batches)
            loss = loss / self.current_gradient_accumulation_steps
        mode = "train" if training else "eval"
        if self.aux_loss_enabled:
            accumulation = self.current_gradient_accumulation_steps if training else 1.0
            loss = loss + self.router_aux_loss_coef * aux_loss / accumulation
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())
        stats["entropy"] = ((entropies * mask).sum(), mask.sum())
        # Global token means across processes, all metrics in one all-reduce (this runs every micro-batch).
        sums = torch.stack([torch.stack([t.detach().float(), c.float()]) for t, c in stats.values()])
        sums = self.accelerator.reduce(sums, reduction="sum")
        for name, (total, count) in zip(stats, sums.tolist()):
            self._metrics[mode][name].append(total / max(count, 1.0))
        return loss

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        """TRL's log-prob pass; where TRL chunks a whole generation batch (old policy, reference model), each chunk
        holds rows of similar length, trimmed to its own longest prompt and response (values at the cut padding: 0)."""
        rows = input_ids.size(0)
        if batch_size is None or batch_size >= rows or any(v is not None for v in multimodal.values()):
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              batch_size, compute_entropy, compute_aux_loss, **multimodal)
        prompt_mask, completion_mask = attention_mask[:, :-logits_to_keep], attention_mask[:, -logits_to_keep:]
        length = completion_mask.sum(1) * (prompt_mask.size(1) + 1) + prompt_mask.sum(1)  # as grpo.packing.group_by_length
        order = torch.argsort(length, descending=True, stable=True)
        logps, entropies, aux = None, None, []
        for start in range(0, rows, batch_size):
            idx = order[start:start + batch_size]
            prompt, completion = trimmed_widths(prompt_mask[idx], completion_mask[idx])
            cols = slice(prompt_mask.size(1) - prompt, prompt_mask.size(1) + completion)
            chunk = super()._get_per_token_logps_and_entropies(model, input_ids[idx, cols], attention_mask[idx, cols],
                                                               completion, None, compute_entropy, compute_aux_loss)
            if logps is None:
                logps = chunk[0].new_zeros((rows, logits_to_keep))
                entropies = chunk[1].new_zeros((rows, logits_to_keep)) if compute_entropy else None
            logps[idx, :completion] = chunk[0]
            if compute_entropy:
                entropies[idx, :completion] = chunk[1]
            aux.append(chunk[2])
        return logps, entropies, torch.stack(aux).mean() if compute_aux_loss else None

    def _prepare_inputs(self, generation_batch):
        buffered = self._buffered_inputs
        inputs = super()._prepare_inputs(generation_batch)
        if self.model.training and self._buffered_inputs is not buffered:  # a new generation, just split
            self._buffered_inputs = self._pack_updates(self._buffered_inputs)
            self._count_update_tokens(self._buffered_inputs)
            inputs = self._buffered_inputs[self._step % self.args.steps_per_generation]
        return inputs

    def _pack_updates(self, micro_batches):
        """TRL's shuffled micro-batches, each update's regrouped by length (group_update_by_length) and all trimmed to
        their own longest prompt and response. An update keeps its responses and its number of micro-batches."""
        if not self.args.group_update_by_length:
            return [trim_micro_batch(mb) for mb in micro_batches]
        g = self.args.gradient_accumulation_steps
        return [mb for u in range(0, len(micro_batches), g) for mb in regroup_update(micro_batches[u:u + g])]

    def _count_update_tokens(self, micro_batches):
        """Give every micro-batch the global token count of the optimizer update it belongs to.

        TRL shuffles the generation batch and splits it into steps_per_generation micro-batches; micro-batch i goes
        into update i // gradient_accumulation_steps on every process. TRL's "dapo" normaliser divides all of them by
        the generation's average update (num_items_in_batch / updates), which scales each update by its token
        count over the average's (benchmarks/bench_normaliser.py). One all-reduce per generation; reused for num_iterations."""
        device = micro_batches[0]["completion_mask"].device
        counts = torch.tensor([[_loss_mask(mb).sum().item(), *token_counts(mb)] for mb in micro_batches],
                              dtype=torch.float64, device=device)
        counts = self.accelerator.reduce(counts, reduction="sum")
        per_update = counts.view(-1, self.args.gradient_accumulation_steps, 3).sum(1)
        for i, mb in enumerate(micro_batches):
            mb["update_num_tokens"] = per_update[i // self.args.gradient_accumulation_steps, 0].float()
        # (real, computed) prompt + response tokens of each update, all processes: logged when the update is done
        self._update_tokens = per_update[:, 1:].tolist()

    def create_scheduler(self, num_training_steps, optimizer=None):
        if not self.args.scheduler_per_generation or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        # veRL steps the scheduler once per generation step: build it in those units and hold each value for the
        # generation step's updates (optimizer_updates_per_step x num_iterations).
        updates = self.args.updates_per_generation_step
        self.lr_scheduler = get_scheduler(
            self.args.lr_scheduler_type, optimizer=self.optimizer if optimizer is None else optimizer,
            num_warmup_steps=self.args.warmup_generation_steps or 0,
            num_training_steps=math.ceil(num_training_steps / updates),
            scheduler_specific_kwargs=self.args.lr_scheduler_kwargs or {})
        self.lr_scheduler.lr_lambdas = [lambda step, f=f: f(step // updates) for f in self.lr_scheduler.lr_lambdas]
        for group, lr_lambda, base in zip(self.lr_scheduler.optimizer.param_groups, self.lr_scheduler.lr_lambdas,
                                          self.lr_scheduler.base_lrs):
            group["lr"] = base * lr_lambda(self.lr_scheduler.last_epoch)
        return self.lr_scheduler

    def log(self, logs, start_time=None):
        if self.model.training:
            logs[NONFINITE_KEY] = self._skipped_so_far()
        super().log(logs, start_time)
        if not (self.log_completions and self.accelerator.is_main_process and self._logs["completion"]):
            return
        # TRL sends completion tables to wandb/trackio (and parquet files); TensorBoard gets them as text.
        from grpo.validation import tensorboard_writer
        from reward import completion_text
        writer = tensorboard_writer(self)
        if writer is not None:
            n = self.num_completions_to_print or 4
            samples = zip(list(self._logs["completion"])[-n:], list(self._logs["advantages"])[-n:])
            text = "\n\n---\n\n".join(f"advantage {a:+.2f}\n\n    " + completion_text(c).replace("\n", "\n    ")
                                        for c, a in samples)
            writer.add_text("completions", text, self.state.global_step)

    def _generate_and_score_completions(self, inputs):
        start, reward_before = time.perf_counter(), self._phase_time["reward"]
        output = super()._generate_and_score_completions(inputs)
        self._phase_time["generation"] += time.perf_counter() - start - (self._phase_time["reward"] - reward_before)
        if self.model.training and getattr(self, "_data_order_path", None):
            rows = sorted({x["row_id"] for x in inputs})
            with open(self._data_order_path, "a") as f:
                step = self.state.global_step // self.args.updates_per_generation_step
                f.write(json.dumps({"global_step": self.state.global_step, "generation_step": step,
                                    "row_ids": rows}) + "\n")
        return output

    def _calculate_rewards(self, *args, **kwargs):
        start = time.perf_counter()
        rewards = super()._calculate_rewards(*args, **kwargs)
        self._phase_time["reward"] += time.perf_counter() - start
        return rewards

    def training_step(self, model, inputs, num_items_in_batch):
        start, before = time.perf_counter(), self._phase_time["generation"] + self._phase_time["reward"]
        loss = super().training_step(model, inputs, num_items_in_batch)
        inside = self._phase_time["generation"] + self._phase_time["reward"] - before
        self._phase_time["update"] += time.perf_counter() - start - inside
        if self._step % self.current_gradient_accumulation_steps == 0:  # one optimizer update done
            for phase, seconds in self._phase_time.items():
                self._metrics["train"][f"time/{phase}_s"].append(seconds)
            update = (self._step - 1) % self.args.steps_per_generation // self.current_gradient_accumulation_steps
            real, computed = self._update_tokens[update]
            self._metrics["train"]["tokens/real"].append(real)
            self._metrics["train"]["tokens/computed"].append(computed)
            self._metrics["train"]["tokens/padding_fraction"].append(1.0 - real / max(computed, 1.0))
            self._phase_time = dict.fromkeys(self._phase_time, 0.0)
        return loss


def _loss_mask(batch: dict) -> torch.Tensor:
    """The completion tokens the loss counts: TRL's completion_mask x tool_mask (0 on tool outputs), when present."""
    tool_mask = batch.get("tool_mask")
    return batch["completion_mask"] if tool_mask is None else batch["completion_mask"] * tool_mask


def check_text_only(processing_class, train_dataset) -> None:
    """This trainer's loss and micro-batch trimming handle text only: a processor (a vision-language model) or an
    image column is refused at start-up, naming what to change."""
    from transformers import ProcessorMixin

    if isinstance(processing_class, ProcessorMixin):
        raise ValueError(f"processing_class: {type(processing_class).__name__} is a multimodal processor; "
                         "train_grpo.py trains text-only models (its loss does not pass pixel_values and the like to "
                         "the model). Give the model's tokenizer (AutoTokenizer) and a text-only model_name_or_path.")
    columns = getattr(train_dataset, "column_names", None) or []
    images = [c for c in ("image", "images") if c in columns]
    if images:
        raise ValueError(f"dataset column {images[0]!r}: train_grpo.py trains on text only (its loss does not pass "
                         "images to the model); drop the column or use a text-only dataset_name.")


def uses_cpu_vllm(args) -> bool:
    """Whether the trainer generates with vLLM from a CPU (then cpu_vllm.py's generation replaces TRL's)."""
    return args is not None and args.use_vllm and args.device.type == "cpu"


@torch.no_grad()
def heldout_accuracy(model, tokenizer, dataset, max_new_tokens: int, batch_size: int = 64) -> float:
    """Greedy accuracy under JustRL's strict-box DAPO rule (for the demo's before/after numbers)."""
    from reward import dapo_score

    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    correct = 0
    for i in range(0, len(dataset), batch_size):
        rows = dataset[i:i + batch_size]
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in rows["prompt"]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        done = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        correct += sum(dapo_score(t, gt) > 0 for t, gt in zip(done, rows["solution"]))
    model.train(was_training)
    tokenizer.padding_side = side
    return correct / max(len(dataset), 1)


def bound_requests(client, timeout_s: float) -> None:
    """Every request `client` (TRL's VLLMClient) sends gets `timeout_s` unless it names its own, and a read is never
    retried; a timeout or a refused connection raises, naming the server and the key.

    TRL's session retries a failed read 5 times: a generation that timed out would be sent again, so the real bound
    would be ~6x timeout_s and a slow server would get the same work again. Reads are not retried here (a response
    cut off or never sent ends the request); connection failures still are (TRL's 5, with back-off), since a request
    that never connected did no work. timeout_s bounds the connection and the wait for the response: the vLLM server
    sends nothing until a generation is done, so it bounds the generation."""
    for adapter in client.session.adapters.values():
        adapter.max_retries = adapter.max_retries.new(read=False)  # urllib3: False raises the read error at once
    request = client.session.request

    def request_with_timeout(method, url, **kwargs):
        kwargs.setdefault("timeout", timeout_s)
        try:
            return request(method, url, **kwargs)
        except OSError as error:  # requests' ConnectionError and Timeout are OSErrors
            raise RuntimeError(f"the vLLM server at {client.base_url} did not answer {method} {url} "
                               f"({type(error).__name__}: {error}); timeout {kwargs['timeout']} s "
                               "(vllm_request_timeout_s). Is it still running? Relaunch to resume from the last "
                               "checkpoint.") from error

    client.session.request = request_with_timeout


@contextmanager
def collective_timeout_named(seconds: float):
    """gloo's collective time-out names milliseconds only ("Timed out waiting 5000ms ..."): re-raised naming the
    ddp_timeout key it comes from. (NCCL's watchdog aborts the process itself, printing "Timeout(ms)=...".)"""
    try:
        yield
    except RuntimeError as error:
        if "Timed out waiting" not in str(error):
            raise
        raise RuntimeError(f"rank {os.environ.get('RANK', '0')} ({socket.gethostname()}) waited longer than "
                           f"ddp_timeout={seconds:g} s in a collective: another process is stuck or dead. Find it in "
                           "the log; if it was busy on purpose, raise ddp_timeout. Relaunch to resume from the last "
                           f"checkpoint. ({error})") from error


def time_limited(reward_func, seconds: float):
    """reward_func, raising a RuntimeError that names it when one call takes longer than `seconds` (recipe key
    reward_timeout_s). A reward that hangs on one process would otherwise leave every other process waiting at the
    next collective until its 30-minute watchdog; this process fails instead, and the launcher stops the rest."""
    from reward import TimeLimitExceeded, run_with_time_limit

    name = getattr(reward_func, "__name__", repr(reward_func))
    message = (f"reward '{name}' did not return within reward_timeout_s={seconds:g} s on rank "
               f"{os.environ.get('RANK', '0')} ({socket.gethostname()}); stopping so that no other process waits for "
               "it. Fix or speed up the reward (or raise reward_timeout_s), then relaunch: the run resumes from its "
               "last checkpoint.")
    if inspect.iscoroutinefunction(reward_func):  # TRL awaits async rewards together
        @functools.wraps(reward_func)
        async def limited_async(*args, **kwargs):
            try:
                return await asyncio.wait_for(reward_func(*args, **kwargs), seconds)
            except asyncio.TimeoutError:
                raise RuntimeError(message) from None

        return limited_async

    @functools.wraps(reward_func)
    def limited(*args, **kwargs):
        try:
            return run_with_time_limit(lambda: reward_func(*args, **kwargs), seconds)
        except TimeLimitExceeded:
            raise RuntimeError(message) from None

    return limited


def _import_function(path: str, key: str):
    """The function a recipe names by `module.function` (recipe key `key`); fails at start-up on a typo."""
    import importlib

    module_name, _, name = path.rpartition(".")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"{key}: cannot import {path!r} ({error}); give module.function, e.g. "
                         "real_model.ensure_real_assets") from error
    if not callable(function):
        raise ValueError(f"{key}: {path!r} is not a function")
    return function


def _gathered(model):
    """Full parameters for generation under ZeRO-3 (partitioned at load time); a no-op otherwise."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        import deepspeed
        return deepspeed.zero.GatheredParameters(list(model.parameters()))
    return nullcontext()


def _write_json(path: str, obj) -> None:
    """Atomic write: the other ranks may be reading the previous version at the same moment."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # Bad input fails here, naming the key, before anything loads or is written.
    check_config_file(argv, (ScriptArguments, JustRLConfig, ModelConfig))
    if any(a == "--dry_run" or a.startswith("--dry_run=") for a in argv):
        # A dry run plans for GPU machines from any machine: skip transformers' check of this machine for bf16.
        import transformers.training_args
        transformers.training_args.is_torch_bf16_gpu_available = lambda: True
    parser = TrlParser((ScriptArguments, JustRLConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    script_args.reward_kwargs = json_option(script_args.reward_kwargs, "reward_kwargs", '{"dapo": {"correct": 1.0}}')
    script_args.prepare_kwargs = json_option(script_args.prepare_kwargs, "prepare_kwargs", '{"out": ".cache/smollm2"}')
    from reward import load_reward_funcs  # fails here, before any model loads, on an unknown reward name

    reward_kwargs = dict(script_args.reward_kwargs or {})
    if "overlong" in script_args.reward_funcs:
        reward_kwargs.setdefault("overlong", {}).setdefault("max_completion_length", training_args.max_completion_length)
    if not script_args.reward_timeout_s > 0:
        raise ValueError(f"reward_timeout_s: {script_args.reward_timeout_s} must be > 0 seconds")
    reward_funcs = [time_limited(f, script_args.reward_timeout_s)
                    for f in load_reward_funcs(script_args.reward_funcs, reward_kwargs)]
    prepare = _import_function(script_args.prepare_assets, "prepare_assets") if script_args.prepare_assets else None
    from grpo import requeue, validation
    validation.check_settings(script_args, training_args)
    if script_args.dry_run:
        world = script_args.world_size or int(os.environ.get("WORLD_SIZE", "1"))
        print(json.dumps(resolved_config(script_args, training_args, model_args, world), indent=2, default=str))
        return None

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
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with training_args.main_process_first(desc="prompts"):  # the main process fills the datasets cache
        train_ds, counts = load_prompts(script_args, tokenizer)
        heldout = load_prompts(script_args, tokenizer, path=script_args.heldout_file)[0] if script_args.heldout_file else None
        # validation benchmarks: a missing file or column fails here, before the model loads
        validation_data = validation.load_benchmarks(script_args) if validation.enabled(script_args) else None
    print(f"[data] {json.dumps(counts)}", flush=True)

    training_args.model_init_kwargs = {"revision": model_args.model_revision, "dtype": getattr(torch, plan["load_dtype"]),
                                       "attn_implementation": model_args.attn_implementation}
    trainer = ClipHigherGRPOTrainer(model=model_args.model_name_or_path, reward_funcs=reward_funcs,
                                    args=training_args, train_dataset=train_ds, processing_class=tokenizer)
    if validation_data is not None:
        trainer.add_callback(validation.Validation(trainer, script_args, tokenizer, validation_data).callback())
    out = training_args.output_dir
    # save and stop at a generation-step boundary when launch_slurm.py asks (a time limit ahead): grpo/requeue.py
    stop = requeue.stop_callback(trainer.accelerator, out, training_args.optimizer_updates_per_step)
    trainer.add_callback(stop)
    checkpoint = training_args.resume_from_checkpoint or last_checkpoint(out)
    summary_path = os.path.join(out, "summary.json")
    summary = json.load(open(summary_path)) if checkpoint and os.path.exists(summary_path) else {}
    summary["data"] = counts
    if script_args.log_data_order:
        os.makedirs(os.path.join(out, "data_order"), exist_ok=True)
        trainer._data_order_path = os.path.join(out, "data_order", f"rank{trainer.accelerator.process_index}.jsonl")
    if heldout is not None and "accuracy_before" not in summary:
        with _gathered(trainer.model):
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
    trainer.save_model(out)
    if heldout is not None:
        from trl.models import unwrap_model_for_generation
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as unwrapped:
            summary["accuracy_after"] = heldout_accuracy(unwrapped, tokenizer, heldout, script_args.heldout_max_new_tokens)
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


if __name__ == "__main__":
    main()
