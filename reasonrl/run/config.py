"""A run's configuration: the recipe keys this project adds (ScriptArguments), GRPOConfig plus the paper's
quantities (JustRLConfig: prompts_per_step, *_generation_steps ... converted to TRL's units at start-up), and a recipe
read as train_grpo.py reads it (read_recipe, for stages.py and the demo's held-out check).

Test: python -m pytest tests/test_train_grpo.py -q -k "derive or config"
"""

import os
from dataclasses import dataclass, field, fields
from functools import cached_property

from trl import GRPOConfig

from reasonrl.run.data import JUSTRL_SUFFIX
from reasonrl.run.plan import check_config_file, derive_batch, json_option


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
    # Validation inside training (reasonrl/trainer/validation.py): benchmarks sampled with the run's engine, avg@k / pass@k curves
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
    # Assets a recipe builds before anything loads, once, main process first (reasonrl.demo.tiny.ensure_tiny_assets
    # for the demo, reasonrl.demo.real_model.ensure_real_assets); by path, so training imports neither
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
        "help": "Inside each update, micro-batches of responses of similar length (same gradient; reasonrl/trainer/packing.py)."})
    async_generation_steps: int = field(default=0, metadata={
        "help": "Server mode: 1 generates the next generation step's responses while the trainers update on this "
                "one (one generation step off-policy, corrected by vLLM's importance weight; "
                "reasonrl/trainer/overlap.py). 0: on-policy, every generation step waits for its own responses."})
    policy_loss: str = field(default="reasonrl.trainer.loss.policy_loss", metadata={
        "help": "module.function computing each micro-batch's loss, with reasonrl.trainer.loss.policy_loss's "
                "signature and return value (README: Change it)."})

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
        check_overlap(self)
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


def check_overlap(args) -> None:
    """Refuse, naming the key, an async_generation_steps that the run cannot honour."""
    steps = args.async_generation_steps
    if steps == 0:
        return
    if steps != 1:
        raise ValueError(f"async_generation_steps={steps}: 0 (on-policy) or 1 (the next generation step's responses "
                         "are generated during this one's updates). The server generates one step at a time, so a "
                         "deeper queue adds staleness without more overlap.")
    if not (args.use_vllm and args.vllm_mode == "server"):
        raise ValueError("async_generation_steps=1 overlaps a vLLM server's generation with the trainers' updates: "
                         "set use_vllm: true and vllm_mode: server (colocated engines share the trainers' devices, "
                         "so there is nothing to overlap), or async_generation_steps: 0.")
    if not args.vllm_importance_sampling_correction:
        raise ValueError("async_generation_steps=1 trains on responses sampled one generation step behind the "
                         "trainers' weights: set vllm_importance_sampling_correction: true, whose importance weight "
                         "corrects that difference, or async_generation_steps: 0.")


def _set_derived(args, key: str, value, default) -> None:
    """Set a TRL field derived from a paper quantity, refusing a conflicting explicit value."""
    current = getattr(args, key)
    if current not in (default, value):
        raise ValueError(f"{key}={current} conflicts with the value {value} derived from the paper quantities "
                         f"(prompts_per_step / *_generation_steps); remove {key} from the recipe.")
    setattr(args, key, value)


# ---------------------------------------------------------------- the recipe, read as train_grpo.py reads it

def _grpo_default(name):
    return next(f.default for f in fields(GRPOConfig) if f.name == name)


@dataclass
class SamplingArgs:
    """The recipe's rollout settings, sampled with exactly as in training (defaults are GRPOConfig's)."""

    temperature: float = field(default_factory=lambda: _grpo_default("temperature"))
    top_p: float = field(default_factory=lambda: _grpo_default("top_p"))
    max_completion_length: int = field(default_factory=lambda: _grpo_default("max_completion_length"))
    seed: int = field(default_factory=lambda: _grpo_default("seed"))


def read_recipe(recipe: str, overrides: list[str] = ()):
    """(ScriptArguments, SamplingArgs) from a recipe YAML plus train_grpo.py-style flags; other keys are ignored."""
    from trl import TrlParser

    check_config_file(["--recipe", recipe], (ScriptArguments, SamplingArgs), flag="--recipe")
    parser = TrlParser((ScriptArguments, SamplingArgs))
    script, sampling, _ = parser.parse_args_and_config(["--config", recipe, *overrides], return_remaining_strings=True)
    script.reward_kwargs = json_option(script.reward_kwargs, "reward_kwargs", '{"dapo": {"correct": 1.0}}')
    return script, sampling
