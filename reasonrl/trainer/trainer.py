"""ClipHigherGRPOTrainer: TRL's GRPOTrainer with this project's loss (reasonrl/trainer/loss.py), micro-batches of
real tokens (reasonrl/trainer/packing.py), paper-unit LR scheduling, skipped non-finite updates, per-phase timing and
the data-order log. One job, the trainer subclass; train_grpo.py's docstring lists each departure from TRL and why.

Test: python -m pytest tests/test_train_grpo.py -q
"""

import json
import math
import time
from contextlib import contextmanager, nullcontext

import torch
from transformers import get_scheduler
from trl import GRPOTrainer

from reasonrl.run.plan import NONFINITE_KEY
from reasonrl.trainer.faults import bound_requests
from reasonrl.trainer.loss import policy_loss
from reasonrl.trainer.overlap import Overlap
from reasonrl.trainer.packing import regroup_update, token_counts, trim_micro_batch, trimmed_widths


class ClipHigherGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose loss is `policy_loss`, over micro-batches of real tokens (packing.py), with paper-unit LR
    scheduling and per-phase timing."""

    def __init__(self, *args, data_order_path: str | None = None, loss_fn=policy_loss, **kwargs):
        """data_order_path: a .jsonl file that gets one line per generation step, the dataset rows it drew (None:
        not logged); loss_fn: the micro-batch loss, `policy_loss` or a function with its signature (recipe key
        policy_loss); TRL's GRPOTrainer arguments otherwise."""
        config = kwargs.get("args")
        check_text_only(kwargs.get("processing_class"), kwargs.get("train_dataset"))
        if uses_cpu_vllm(config):  # TRL's vLLM weight sync needs CUDA: generation/cpu_vllm.py puts a CPU one in its place
            from reasonrl.generation.cpu_vllm import cpu_vllm_generation
        with cpu_vllm_generation(config.output_dir) if uses_cpu_vllm(config) else nullcontext():
            super().__init__(*args, **kwargs)
        check_text_only(self.processing_class, None)  # TRL loads a processor itself when given none
        client = getattr(getattr(self, "vllm_generation", None), "vllm_client", None)
        if client is not None:  # TRL's client sends its requests without a timeout: a hung server would block forever
            bound_requests(client, self.args.vllm_request_timeout_s)
        self._phase_time = {"generation": 0.0, "reward": 0.0, "update": 0.0}
        self._nonfinite_skipped = None  # updates skipped for a non-finite gradient norm, counted from the run's start
        self.data_order_path = data_order_path
        self.loss_fn = loss_fn
        # async_generation_steps: 1 generates the next step's responses during this step's updates (overlap.py)
        self._overlap = Overlap(self) if self.args.async_generation_steps else None

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        if self._overlap is None:
            return super().get_batch_samples(epoch_iterator, num_batches, device)
        batches = self._overlap.next_batch_of(epoch_iterator, num_batches)  # read ahead: the next step's prompts
        return super().get_batch_samples(iter(batches), num_batches, device)

    def _load_optimizer_and_scheduler(self, checkpoint):
        device = self.args.device
        if checkpoint is None or device.type != "cpu" or device.index is None:
            return super()._load_optimizer_and_scheduler(checkpoint)
        with torch_load_on_cpu(device):
            return super()._load_optimizer_and_scheduler(checkpoint)

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
        loss, stats = self.loss_fn(logps, old_logps, inputs["advantages"], mask, self.epsilon_low, self.epsilon_high,
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
        length = completion_mask.sum(1) * (prompt_mask.size(1) + 1) + prompt_mask.sum(1)  # as packing.group_by_length
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
        counts = torch.tensor([[loss_mask(mb).sum().item(), *token_counts(mb)] for mb in micro_batches],
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
        from reasonrl.grading.answers import completion_text
        from reasonrl.trainer.validation import tensorboard_writer
        writer = tensorboard_writer(self)
        if writer is not None:
            n = self.num_completions_to_print or 4
            samples = zip(list(self._logs["completion"])[-n:], list(self._logs["advantages"])[-n:])
            text = "\n\n---\n\n".join(f"advantage {a:+.2f}\n\n    " + completion_text(c).replace("\n", "\n    ")
                                        for c, a in samples)
            writer.add_text("completions", text, self.state.global_step)

    def _generate_and_score_completions(self, inputs):
        start, reward_before = time.perf_counter(), self._phase_time["reward"]
        overlap = self._overlap if self.model.training else None
        staleness = overlap.before_generation() if overlap is not None else 0
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            if overlap is not None:
                overlap.after_generation()
        if overlap is not None:
            self._metrics["train"]["async/staleness_updates"].append(float(staleness))
        self._phase_time["generation"] += time.perf_counter() - start - (self._phase_time["reward"] - reward_before)
        if self.model.training and self.data_order_path:
            rows = sorted({x["row_id"] for x in inputs})
            with open(self.data_order_path, "a") as f:
                step = self.state.global_step // self.args.updates_per_generation_step
                line = {"global_step": self.state.global_step, "generation_step": step, "row_ids": rows}
                if overlap is not None:  # optimizer updates between the sampling weights and the trained ones
                    line["staleness_updates"] = staleness
                f.write(json.dumps(line) + "\n")
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


def loss_mask(batch: dict) -> torch.Tensor:
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
    """Whether the trainer generates with vLLM from a CPU (then reasonrl/generation/cpu_vllm.py's generation replaces TRL's)."""
    return args is not None and args.use_vllm and args.device.type == "cpu"


@contextmanager
def torch_load_on_cpu(device):
    """While open, torch.load maps `device` ("cpu:N") to "cpu"; restored on exit.

    transformers maps a multi-process run's optimizer state to args.device, which for CPU processes is "cpu:N": a
    location torch.load cannot restore ("don't know how to restore data location ... cpu:0"). transformers offers no
    argument for the map location, so the optimizer reload runs inside this block."""
    load = torch.load

    def load_on_cpu(*args, **kwargs):
        if kwargs.get("map_location") == device:
            kwargs["map_location"] = "cpu"
        return load(*args, **kwargs)

    torch.load = load_on_cpu
    try:
        yield
    finally:
        torch.load = load
