"""Measures whether a vLLM engine driven by train_grpo's trainer scores tokens with the trainer's current weights.

Run by tests/test_vllm.py in a subprocess (vLLM pins threads and patches torch in the process that hosts an engine):

    python tests/vllm_sync_check.py OUT.json -- <train_grpo.py arguments, with --use_vllm true --vllm_mode M>

Builds the trainer from the arguments, then records, as JSON in OUT.json, the largest per-token difference between the
engine's log-probs and the trained model's on fixed sequences (prompt + worked solution):
  initial       before any sync (the engine loaded the checkpoint itself)
  stale_head    after perturbing only the embeddings (the tied output layer) and syncing without the output layer's
                name, i.e. how far a stale lm_head would be off (shows the comparison can fail)
  embeddings    the same perturbation synced by the trainer's sync_weights
  trained       after trainer.train() (real optimizer updates, weights synced by TRL's generation loop) and one more
                sync_weights, as the next generation step would do
and `moved_*`: how much the model's own log-probs changed, so a stale engine could not pass by accident; in colocate
mode also `trl_sync_error`, what TRL's own per-parameter sync raises on this engine.
"""

import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def build_trainer(argv):
    from transformers import AutoTokenizer
    from trl import ModelConfig, TrlParser

    from reward import load_reward_funcs
    from reasonrl.run.config import JustRLConfig, ScriptArguments
    from reasonrl.run.data import load_prompts
    from reasonrl.trainer.trainer import ClipHigherGRPOTrainer

    script_args, training_args, model_args = TrlParser((ScriptArguments, JustRLConfig, ModelConfig)) \
        .parse_args_and_config(args=argv)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    train_ds, _ = load_prompts(script_args, tokenizer)
    training_args.model_init_kwargs = {"dtype": getattr(torch, model_args.dtype)}
    trainer = ClipHigherGRPOTrainer(model=model_args.model_name_or_path,
                                    reward_funcs=load_reward_funcs(script_args.reward_funcs, script_args.reward_kwargs),
                                    args=training_args, train_dataset=train_ds, processing_class=tokenizer)
    return trainer, tokenizer, script_args


def sequences(tokenizer, heldout_file, n=8):
    """Token ids of n held-out prompts (chat template) followed by their correct worked solution."""
    from reasonrl.demo import tiny
    from reasonrl.run.data import build_prompt

    out = []
    for p in tiny.load_problems(heldout_file)[:n]:
        a, b = (int(x) for x in p["problem"].removeprefix("What is ").removesuffix("?").split(" + "))
        text = tokenizer.apply_chat_template(build_prompt(p["problem"]), tokenize=False, add_generation_prompt=True)
        out.append(tokenizer(text + tiny.worked_solution(a, b) + tokenizer.eos_token, add_special_tokens=False)["input_ids"])
    return out


@torch.no_grad()
def model_logprobs(model, seqs):
    """log p(token t | tokens < t) for t >= 1, per sequence, in float64 for the comparison."""
    out = []
    for s in seqs:
        ids = torch.tensor([s])
        logits = model(input_ids=ids).logits[0, :-1].double()
        out.append(torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0])
    return out


def engine_logprobs(generation, seqs):
    if generation.mode == "colocate":
        from vllm import SamplingParams
        outputs = generation.llm.generate([{"prompt_token_ids": s} for s in seqs],
                                          SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
        return [torch.tensor([lp[t].logprob for lp, t in zip(o.prompt_logprobs[1:], s[1:])], dtype=torch.float64)
                for o, s in zip(outputs, seqs)]
    scored = generation.vllm_client.get_sequence_logprobs(seqs, prompt_lengths=[1] * len(seqs), top_logprobs=1)
    return [torch.tensor([x[0] for x in seq], dtype=torch.float64) for seq in scored["actual_logprobs"]]


def max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def main(out_path, argv):
    trainer, tokenizer, script_args = build_trainer(argv)
    generation, model = trainer.vllm_generation, trainer.model
    seqs = sequences(tokenizer, script_args.heldout_file)
    result = {"mode": generation.mode, "engine_class": type(generation).__name__,
              "n_tokens": sum(len(s) - 1 for s in seqs)}
    start = model_logprobs(model, seqs)
    result["initial"] = max_diff(engine_logprobs(generation, seqs), start)

    embeddings = model.get_input_embeddings().weight
    saved = embeddings.detach().clone()
    torch.manual_seed(0)
    with torch.no_grad():
        embeddings.add_(0.5 * torch.randn_like(embeddings))
    perturbed = model_logprobs(model, seqs)
    result["moved_embeddings"] = max_diff(perturbed, start)
    if generation.mode == "colocate":  # TRL's parameters as they are: the output layer gets no weight of its own
        runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.reload_weights(weights_iterator=generation._iter_named_params())
    else:
        generation._reload_server_from_file(generation._iter_named_params())
    generation.vllm_client.reset_prefix_cache() if generation.mode == "server" else generation.llm.reset_prefix_cache()
    result["stale_head"] = max_diff(engine_logprobs(generation, seqs), perturbed)
    generation.sync_weights()
    result["embeddings"] = max_diff(engine_logprobs(generation, seqs), perturbed)
    with torch.no_grad():
        embeddings.copy_(saved)

    syncs = []
    sync = generation.sync_weights
    generation.sync_weights = lambda: (syncs.append(trainer.state.global_step), sync())[1]
    trainer.train()
    generation.sync_weights = sync
    generation.sync_weights()
    trained = model_logprobs(model, seqs)
    result.update(trained=max_diff(engine_logprobs(generation, seqs), trained), moved_trained=max_diff(trained, start),
                  syncs_during_training=syncs, global_step=trainer.state.global_step)
    if generation.mode == "colocate":  # last: TRL's own sync, which leaves the engine half-loaded when it fails
        from trl.generation.vllm_generation import VLLMGeneration
        try:
            VLLMGeneration.sync_weights(generation)
            result["trl_sync_error"] = None
        except Exception as e:  # noqa: BLE001 - recorded for the test to read
            result["trl_sync_error"] = f"{type(e).__name__}: {e}"
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[sys.argv.index("--") + 1:])
