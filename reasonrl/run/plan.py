"""Planning a run: a recipe's paper quantities -> TRL's settings for a given number of training processes.

    derive_batch      the paper's generation step (prompts x rollouts, then N optimizer updates) as TRL's per-device
                      batch, gradient accumulation and steps_per_generation; an impossible cluster shape fails here
    precision_plan    for one launch mode, the dtype the policy loads in and where its fp32 master weights live
    resolved_config   everything a run would use, as the JSON that `--dry_run` prints
    check_config_file a `--config` recipe that is missing, not a YAML mapping, or holds a value of the wrong type
                      ("32" for a number, a string for a list) fails here, naming the key, before anything loads
    json_option       `--reward_kwargs` / `--prepare_kwargs` given as JSON text -> a dict, or an error naming the flag
    import_function   the function a recipe names by `module.function` (prepare_assets), or an error naming the key
    bf16_gpu_assumed  while open, transformers takes this machine for a bf16 GPU (the dry run plans for GPU clusters)

Pure functions: nothing here loads a model or data. The command that shows them for a recipe and a cluster shape:

    python train_grpo.py --config recipes/justrl.yaml --dry_run --world_size 32
"""

import dataclasses
import enum
import importlib
import json
import os
import re
import types
import typing
from contextlib import contextmanager
from dataclasses import asdict

NONFINITE_KEY = "nonfinite_grad_updates_skipped"  # logged: updates skipped for a NaN/inf gradient norm


def derive_batch(prompts_per_step: int, rollouts_per_prompt: int, optimizer_updates_per_step: int,
                 world_size: int, per_device_train_batch_size: int) -> dict:
    """TRL's batch settings that realise the paper's generation step on `world_size` training processes.

    One generation step = prompts_per_step x rollouts_per_prompt responses, then optimizer_updates_per_step updates
    of responses_per_update responses each (veRL's ppo_mini_batch_size counts prompts: 64 prompts' worth of
    responses in JustRL). Which responses go together: each process generates its share of the step (advantages are
    computed per prompt group over all processes), then TRL shuffles that share and cuts it into steps_per_generation
    micro-batches of per_device_train_batch_size; an update is gradient_accumulation_steps consecutive
    micro-batches on every process, so a random subset of the responses, not whole prompts."""
    responses = prompts_per_step * rollouts_per_prompt
    if prompts_per_step % optimizer_updates_per_step:
        raise ValueError(f"prompts_per_step={prompts_per_step} does not split into optimizer_updates_per_step="
                         f"{optimizer_updates_per_step} mini-batches of whole prompts.")
    per_update = responses // optimizer_updates_per_step
    if per_update % world_size:
        ok = [n for n in range(1, per_update + 1) if per_update % n == 0]
        raise ValueError(f"{per_update} responses per optimizer update cannot be split over {world_size} training "
                         f"processes; use a number of training processes that divides {per_update}: {ok}.")
    per_process = per_update // world_size
    if per_process % per_device_train_batch_size:
        ok = [n for n in range(1, per_process + 1) if per_process % n == 0]
        raise ValueError(f"per_device_train_batch_size={per_device_train_batch_size} does not divide the "
                         f"{per_process} responses each process handles per update at world size {world_size}; "
                         f"choose one of {ok}.")
    accumulation = per_process // per_device_train_batch_size
    return {"prompts_per_step": prompts_per_step, "rollouts_per_prompt": rollouts_per_prompt,
            "optimizer_updates_per_step": optimizer_updates_per_step, "world_size": world_size,
            "responses_per_step": responses, "responses_per_update": per_update,
            "per_device_train_batch_size": per_device_train_batch_size,
            "gradient_accumulation_steps": accumulation,
            "steps_per_generation": accumulation * optimizer_updates_per_step,
            "generation_batch_size": responses}


def precision_plan(dtype: str, bf16: bool, fp16: bool = False, zero_stage: int | None = None) -> dict:
    """Where a run keeps its fp32 master weights, and the dtype to load the policy in, for one launch mode.

    dtype: the recipe's (a checkpoint's "auto" resolved first); bf16/fp16: the recipe's autocast flags; zero_stage:
    the ZeRO stage of a DeepSpeed launch, None without DeepSpeed (one process, DDP, FSDP). veRL keeps the actor in
    fp32 and computes in bf16. DeepSpeed with bf16 keeps an fp32 master copy in its optimizer at every ZeRO stage,
    so a bf16 checkpoint loads as it is. Without DeepSpeed, AdamW would update bf16 weights in place, and an update
    below half their spacing (2^-8 relative: most updates at lr 1e-6) rounds away; the model is loaded in float32
    and computes under autocast instead. A half-precision model with no fp32 copy anywhere is refused."""
    autocast = "bf16" if bf16 else "fp16" if fp16 else None
    half = dtype in ("bfloat16", "float16")
    if zero_stage is not None:
        if autocast:
            return {"load_dtype": dtype, "compute": f"{autocast} (DeepSpeed casts the model)",
                    "master_weights": f"fp32 copy in DeepSpeed's ZeRO-{zero_stage} optimizer"}
        if not half:
            return {"load_dtype": dtype, "compute": "fp32", "master_weights": "the model's fp32 weights"}
    elif autocast:
        return {"load_dtype": "float32", "compute": f"{autocast} autocast",
                "master_weights": "the model's weights, loaded in float32" + (f" (not {dtype})" if half else "")}
    elif not half:
        return {"load_dtype": dtype, "compute": "fp32", "master_weights": "the model's fp32 weights"}
    raise ValueError(f"dtype: {dtype} with bf16: false keeps no fp32 copy of the weights: AdamW would update {dtype} "
                     "weights directly and most small updates would round away. Set bf16: true (the model then "
                     "trains from fp32 weights under bf16 autocast, or from DeepSpeed's fp32 master copy under "
                     "accelerate_configs/zero2.yaml or zero3.yaml), or dtype: float32.")


def validation_plan(script_args, training_args) -> dict | str:
    """What in-training validation (reasonrl/trainer/validation.py) will do, in words and numbers, for the dry run."""
    from reasonrl.trainer.validation import benchmark_specs, enabled

    s = script_args
    if not enabled(s):
        return ("off (no validation_benchmarks, heldout without a heldout_file, or neither "
                "validation_before_training nor validation_every_generation_steps)")
    when = (["before training"] if s.validation_before_training else []) + (
        [f"every {s.validation_every_generation_steps} generation steps and after the last"]
        if s.validation_every_generation_steps else [])
    engine = (f"vLLM ({training_args.vllm_mode} mode), after the weight sync" if training_args.use_vllm
              else "transformers' generate on the training model")
    return {"benchmarks": benchmark_specs(s), "when": " and ".join(when),
            "samples_per_problem": s.validation_n_samples or "eval.py's k per benchmark",
            "temperature": s.validation_temperature, "top_p": s.validation_top_p,
            "max_new_tokens": s.validation_max_new_tokens,
            "grader": {"math_verify": "veRL's math-verify rule (JustRL's validation)",
                       "eval": "eval.py's rule grader"}.get(s.validation_grader, s.validation_grader),
            "engine": engine, "outputs": f"{training_args.output_dir}/validation/step_<N>/ (N: generation step)"}


def resolved_config(script_args, training_args, model_args, world_size: int) -> dict:
    """Everything a run would use, as one JSON-able dict (the --dry_run output)."""
    config = training_args.to_dict()
    derived = {"prompts_per_step": training_args.prompts_per_step,
               "rollouts_per_prompt": training_args.num_generations,
               "optimizer_updates_per_step": training_args.optimizer_updates_per_step,
               "num_iterations": training_args.num_iterations,
               # what *_generation_steps are multiplied by: max_steps, save_steps, warm-up, the LR hold, validation
               "optimizer_updates_per_generation_step": training_args.optimizer_updates_per_step * training_args.num_iterations,
               "max_prompt_length": script_args.max_prompt_length, "world_size": world_size}
    if training_args.prompts_per_step is not None:
        b = derive_batch(training_args.prompts_per_step, training_args.num_generations,
                         training_args.optimizer_updates_per_step, world_size, training_args.per_device_train_batch_size)
        derived.update(b)
        config.update({k: b[k] for k in ("gradient_accumulation_steps", "steps_per_generation", "generation_batch_size")})
    else:
        derived["generation_batch_size"] = training_args.per_device_train_batch_size * world_size * training_args.steps_per_generation
        config["generation_batch_size"] = derived["generation_batch_size"]
    derived["loss_normaliser"] = ("mean over the update's sequences of each sequence's token mean" if training_args.seq_mean_loss
                                  else "token mean over each optimizer update's tokens, all processes")
    derived["weight_decay"] = {"value": training_args.weight_decay, "decayed_parameters": (
        "every parameter (veRL)" if training_args.weight_decay_all_params
        else "all but biases and norm weights (transformers' Trainer)")}
    derived["precision"] = {}
    for mode, stage in (("no DeepSpeed: one process, ddp.yaml, cpu.yaml", None), ("zero2.yaml", 2), ("zero3.yaml", 3)):
        if model_args.dtype in ("auto", None):
            derived["precision"][mode] = "decided at launch from the checkpoint's dtype"
            continue
        try:
            derived["precision"][mode] = precision_plan(model_args.dtype, training_args.bf16, training_args.fp16, stage)
        except ValueError as e:
            derived["precision"][mode] = f"refused: {e}"
    derived["validation"] = validation_plan(script_args, training_args)
    derived["nonfinite_grad_norm"] = f"update skipped, optimizer and LR scheduler untouched; logged as {NONFINITE_KEY}"
    return {"training_args": config, "script_args": asdict(script_args), "model_args": asdict(model_args),
            "derived": derived}


def last_checkpoint(output_dir: str) -> str | None:
    """The newest complete `checkpoint-N` in output_dir, or None. transformers' get_last_checkpoint takes the highest
    number even when a kill interrupted its writing; trainer_state.json is the last file a checkpoint gets, so a
    folder without it is skipped (a relaunch resumes from the one before)."""
    if not os.path.isdir(output_dir):
        return None
    done = [(int(m.group(1)), name) for name in os.listdir(output_dir)
            if (m := re.fullmatch(r"checkpoint-(\d+)", name))
            and os.path.isfile(os.path.join(output_dir, name, "trainer_state.json"))]
    return os.path.join(output_dir, max(done)[1]) if done else None


# ---------------------------------------------------------------- checking a recipe before anything loads

# PyYAML (YAML 1.1) reads 5e-5 without a dot as a string; argparse then converts it: such a string is a number.
_YAML_EXPONENT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _type_ok(value, annotation) -> bool | None:
    """Does a YAML value fit a dataclass field's annotation? None where the annotation is not checked here."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        verdicts = [_type_ok(value, a) for a in args]
        return True if True in verdicts else None if None in verdicts else False
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
            isinstance(value, str) and _YAML_EXPONENT.fullmatch(value) is not None)
    if annotation is str:
        return isinstance(value, str)
    if annotation is list or origin is list:
        if not isinstance(value, list):
            return False
        verdicts = [_type_ok(v, args[0]) for v in value] if args else []
        return False if False in verdicts else True
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in args
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return None  # the parser lists the allowed values itself
    return None


def _type_name(annotation) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null",
             list: "a list", dict: "a mapping"}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        return f"a list of {_type_name(typing.get_args(annotation)[0]).removeprefix('a ').removeprefix('an ')}s"
    if typing.get_origin(annotation) is dict:
        return "a mapping"
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _fix_hint(value, annotation) -> str:
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        if not isinstance(parsed, str) and _type_ok(parsed, annotation):
            return f"; write it without quotes: {json.dumps(parsed)}"
        if _type_ok([value], annotation):
            return f"; write a list: [{value}]"
    if isinstance(value, list) and len(value) == 1 and _type_ok(value[0], annotation):
        return f"; write the value itself, not a list: {json.dumps(value[0])}"
    return ""


def check_recipe(recipe: dict, dataclass_types, source: str) -> None:
    """Every key of a recipe that names a field of one of `dataclass_types` must hold a value of that field's type.
    Keys no dataclass has are left to the parser (it refuses them)."""
    fields = {}
    for cls in dataclass_types:
        try:
            hints = typing.get_type_hints(cls)
        except (NameError, TypeError):  # an annotation that does not resolve is left unchecked
            hints = {}
        for f in dataclasses.fields(cls):
            fields.setdefault(f.name, hints.get(f.name, f.type))
    for key, value in recipe.items():
        if key not in fields or _type_ok(value, fields[key]) is not False:
            continue
        annotation = fields[key]
        raise ValueError(f"{source}: {key}: {value!r} is {type(value).__name__}, expected {_type_name(annotation)}"
                         f"{_fix_hint(value, annotation)}")


def check_config_file(argv: list[str], dataclass_types, flag: str = "--config") -> dict | None:
    """The recipe named by `flag` in argv, read and checked (check_recipe); None when argv has no such flag.
    A missing file, YAML that does not parse, or a file that is not a mapping fails naming the file."""
    import yaml

    path = next((a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")), None)
    if path is None and flag in argv:
        i = argv.index(flag)
        path = argv[i + 1] if i + 1 < len(argv) else ""
    if path is None:
        return None
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        nearby = sorted(f for f in os.listdir(folder) if f.endswith((".yaml", ".yml"))) if os.path.isdir(folder) else []
        raise FileNotFoundError(f"{flag} {path}: no such file" + (
            f"; recipes in {folder}/: {', '.join(nearby)}" if nearby else "; give the path of a recipe YAML file"))
    try:
        with open(path) as f:
            recipe = yaml.safe_load(f)
    except yaml.YAMLError as error:
        raise ValueError(f"{flag} {path}: not valid YAML: {error}") from None
    if not isinstance(recipe, dict):
        raise ValueError(f"{flag} {path}: a recipe is a mapping of keys to values (key: value lines), "
                         f"not {type(recipe).__name__}")
    check_recipe(recipe, dataclass_types, path)
    return recipe


def json_option(value, key: str, example: str) -> dict | None:
    """A `--key` option that takes a mapping, given as JSON text on the command line or a mapping in the recipe."""
    if value is None or isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"--{key} {value!r} is not valid JSON ({error}); write a JSON object in single quotes, "
                         f"e.g. --{key} '{example}'") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"--{key} {value!r} is JSON {type(parsed).__name__}, expected an object, e.g. --{key} "
                         f"'{example}'")
    return parsed


def import_function(path: str, key: str):
    """The function a recipe names by `module.function` (recipe key `key`); fails at start-up on a typo."""
    module_name, _, name = path.rpartition(".")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"{key}: cannot import {path!r} ({error}); give module.function, e.g. "
                         "my_module.my_function (a file my_module.py beside train_grpo.py)") from error
    if not callable(function):
        raise ValueError(f"{key}: {path!r} is not a function")
    return function


@contextmanager
def bf16_gpu_assumed():
    """While open, transformers' check of this machine for a bf16 GPU answers yes; restored on exit. A dry run plans
    for GPU machines from any machine, and GRPOConfig (TrainingArguments) refuses bf16: true without such a GPU."""
    import transformers.training_args

    probe = transformers.training_args.is_torch_bf16_gpu_available
    transformers.training_args.is_torch_bf16_gpu_available = lambda: True
    try:
        yield
    finally:
        transformers.training_args.is_torch_bf16_gpu_available = probe
