"""The embedded default: a tiny model, tokenizer and arithmetic dataset built on this machine, no downloads.

`recipes/tiny.yaml` trains on what this file builds, through exactly the same code path as the paper recipes
(DAPO-style parquet, chat template, JustRL prompt suffix, strict-box reward), so a laptop CPU can run the whole
pipeline in minutes and show it learning. Built once and cached under `--tiny_dir` (default `.cache/tiny`):

    tokenizer + model   a byte-level BPE tokenizer trained with `tokenizers` on the task's own text, and a
                        ~100k-parameter Qwen2 model (the DeepSeek-R1-Distill-Qwen architecture, shrunk)
    sft/                the model after a short supervised warm start on worked solutions, standing in for a
                        distilled base with a habit: in most traces that need a carry it forgets the carry, so it
                        solves the problems without one and only some of the others. GRPO's outcome reward has
                        to find and keep the carry; nothing in the RL step knows about carries.
    train.parquet       DAPO-Math-17k's schema (prompt as a chat list, reward_model.ground_truth)
    test.parquet        held-out problems with no overlap with train, same schema

Commands (train_grpo.py calls `ensure_tiny_assets` itself: recipes/tiny.yaml names it as `prepare_assets`):

    python -m reasonrl.demo.tiny --tiny_dir .cache/tiny            # build (or reuse) everything, print held-out accuracy
    python -m reasonrl.demo.tiny --tiny_dir .cache/tiny --rebuild  # build again from scratch
"""

import argparse
import json
import os
import random

import pandas as pd
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
# A Qwen-style chat template, so prompts go through apply_chat_template exactly as for the real models.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Sizes of the embedded default. The model is tiny on purpose: it learns two-digit addition with a flaw from the
# warm start, and GRPO removes the flaw on a 2-core CPU within minutes.
N_TRAIN, N_TEST = 4000, 200
# Attention heads of 32 dimensions (64 / 2): vLLM's CPU attention refuses head_dim 16, and the same model then
# generates through vLLM (colocate and server modes) as well as through transformers.
MODEL_SHAPE = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=1, max_position_embeddings=256)
SFT_STEPS, SFT_BATCH, SFT_LR = 600, 32, 3e-3  # learning rate decays linearly to 0, so the warm start converges
FORGET_CARRY = 0.6  # share of warm-start traces that drop a needed carry (the habit GRPO has to unlearn)


def make_arithmetic_problems(n: int, seed: int, exclude: set | None = None) -> list[dict]:
    """n distinct addition problems `a + b` with 10 <= a, b <= 99, never one in `exclude` (set of problem texts)."""
    rng = random.Random(seed)
    exclude = exclude or set()
    seen, out = set(), []
    while len(out) < n:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        problem = f"What is {a} + {b}?"
        if problem in seen or problem in exclude:
            continue
        seen.add(problem)
        out.append({"problem": problem, "answer": str(a + b), "a": a, "b": b})
    return out


def worked_solution(a: int, b: int, forget_carry: bool = False) -> str:
    """A short column-addition trace ending in the boxed answer; with forget_carry, the tens column ignores the
    carry and the (wrong) answer follows from that."""
    ones = a % 10 + b % 10
    if forget_carry:
        tens = a // 10 + b // 10
        return f"{a % 10}+{b % 10}={ones}. {a // 10}+{b // 10}={tens}. \\boxed{{{tens * 10 + ones % 10}}}"
    tens = a // 10 + b // 10 + ones // 10
    return f"{a % 10}+{b % 10}={ones}. {a // 10}+{b // 10}+{ones // 10}={tens}. \\boxed{{{a + b}}}"


def build_tokenizer(texts: list[str], vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, with a chat template and pad/eos tokens.

    Digits are split one per token, as Qwen's tokenizer does, so numbers are spelled the same way everywhere."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM sized for `tokenizer` (about 100k parameters)."""
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), tie_word_embeddings=True, rope_theta=10000.0,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, **MODEL_SHAPE)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def _prompt_text(tokenizer, problem: str) -> str:
    from reasonrl.run.data import build_prompt  # the JustRL prompt, exactly as training builds it

    return tokenizer.apply_chat_template(build_prompt(problem), tokenize=False, add_generation_prompt=True)


def sft_warm_start(model, tokenizer, problems: list[dict], steps: int = SFT_STEPS, seed: int = 0) -> None:
    """Supervised warm start on worked solutions (loss on completion tokens only), FORGET_CARRY of the traces that
    need a carry without it. Converged, the model gets problems without a carry right and sometimes remembers the
    carry when sampling (it rarely does greedily): ~70% greedy and ~45% sampled held-out accuracy.

    A plain loop: a seconds-long warm start of a 100k model needs no Trainer, logging or checkpoints."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=SFT_LR, weight_decay=0.0)
    pad = tokenizer.pad_token_id
    model.train()
    for step in range(steps):
        ids, labels = [], []
        for p in rng.sample(problems, SFT_BATCH):
            carry = p["a"] % 10 + p["b"] % 10 >= 10
            forget = carry and rng.random() < FORGET_CARRY
            prompt = tokenizer(_prompt_text(tokenizer, p["problem"]), add_special_tokens=False)["input_ids"]
            target = tokenizer(worked_solution(p["a"], p["b"], forget) + tokenizer.eos_token,
                               add_special_tokens=False)["input_ids"]
            ids.append(prompt + target)
            labels.append([-100] * len(prompt) + target)
        width = max(map(len, ids))
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
        label_ids = torch.tensor([y + [-100] * (width - len(y)) for y in labels])
        attention = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        for group in opt.param_groups:
            group["lr"] = SFT_LR * (1 - step / steps)
        model(input_ids=input_ids, attention_mask=attention, labels=label_ids).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def greedy_accuracy(model, tokenizer, problems: list[dict], max_new_tokens: int = 48) -> float:
    """Held-out greedy accuracy of {problem, answer} dicts: heldout_accuracy (reasonrl/trainer/heldout.py) (strict-box DAPO rule)."""
    from datasets import Dataset

    from reasonrl.run.data import build_prompt
    from reasonrl.trainer.heldout import heldout_accuracy

    rows = Dataset.from_dict({"prompt": [build_prompt(p["problem"]) for p in problems],
                              "solution": [p["answer"] for p in problems]})
    return heldout_accuracy(model, tokenizer, rows, max_new_tokens)


def _to_dapo_rows(problems: list[dict]) -> pd.DataFrame:
    """DAPO-Math-17k's schema, so the tiny data takes the same loading path as the real dataset."""
    return pd.DataFrame([{
        "data_source": "tiny_arithmetic",
        "prompt": [{"role": "user", "content": p["problem"]}],
        "ability": "MATH",
        "reward_model": {"ground_truth": p["answer"], "style": "rule"},
        "extra_info": {"index": f"tiny-{i}"},
    } for i, p in enumerate(problems)])


def ensure_tiny_assets(tiny_dir: str = ".cache/tiny", rebuild: bool = False, seed: int = 0) -> dict:
    """Build the tokenizer, warm-started model and data under `tiny_dir` unless already there; return their paths.

    The marker file `done.json` is written last, so an interrupted build is redone rather than half-used; it records
    the model shape, so a cache built with another MODEL_SHAPE is rebuilt."""
    paths = {"model": os.path.join(tiny_dir, "sft"), "base_model": os.path.join(tiny_dir, "base"),
             "train": os.path.join(tiny_dir, "train.parquet"), "test": os.path.join(tiny_dir, "test.parquet")}
    marker = os.path.join(tiny_dir, "done.json")
    if os.path.exists(marker) and not rebuild:
        with open(marker) as f:
            info = json.load(f)
        if info.get("model_shape") == MODEL_SHAPE:
            return {**paths, **info}
    os.makedirs(tiny_dir, exist_ok=True)
    # One thread: tiny matrices gain little from two, and two processes each spinning two OpenMP threads on a
    # 2-core machine (two test sessions, or every rank of a launch) slow the build from seconds to many minutes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(tiny_dir, paths, marker, seed)
    finally:
        torch.set_num_threads(threads)


def _build(tiny_dir: str, paths: dict, marker: str, seed: int) -> dict:
    from reasonrl.run.data import JUSTRL_SUFFIX
    test = make_arithmetic_problems(N_TEST, seed=seed + 1)
    train = make_arithmetic_problems(N_TRAIN, seed=seed, exclude={p["problem"] for p in test})
    corpus = [p["problem"] + JUSTRL_SUFFIX + " " + worked_solution(p["a"], p["b"], forget_carry=i % 2 == 1)
              for i, p in enumerate(train)]
    tokenizer = build_tokenizer(corpus)
    model = build_model(tokenizer, seed=seed)
    model.save_pretrained(paths["base_model"])
    tokenizer.save_pretrained(paths["base_model"])
    sft_warm_start(model, tokenizer, train, seed=seed)
    model.save_pretrained(paths["model"])
    tokenizer.save_pretrained(paths["model"])
    _to_dapo_rows(train).to_parquet(paths["train"])
    _to_dapo_rows(test).to_parquet(paths["test"])
    info = {"sft_steps": SFT_STEPS, "sft_heldout_accuracy": greedy_accuracy(model, tokenizer, test),
            "n_params": sum(p.numel() for p in model.parameters()), "model_shape": MODEL_SHAPE}
    with open(marker, "w") as f:
        json.dump(info, f)
    return {**paths, **info}


def load_problems(parquet_path: str) -> list[dict]:
    """Problems of a tiny parquet file as {problem, answer} dicts (for held-out accuracy)."""
    df = pd.read_parquet(parquet_path)
    return [{"problem": row["prompt"][0]["content"], "answer": row["reward_model"]["ground_truth"]}
            for _, row in df.iterrows()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny_dir", default=".cache/tiny")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    print(json.dumps(ensure_tiny_assets(args.tiny_dir, rebuild=args.rebuild), indent=2))
