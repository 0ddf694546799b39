"""What in-training validation costs at a recipe's scale, in generated tokens, against one training step's generation.

    python -m benchmarks.validation_cost                                   # recipes/justrl.yaml
    python -m benchmarks.validation_cost --recipe recipes/justrl.yaml --train_tokens 8000 4500 --val_tokens 8000 12000

Arithmetic, no model: samples per validation = sum over the validation benchmarks of problems (eval.py's row counts)
x validation_n_samples; a training step generates prompts_per_step x num_generations responses. Tokens are the
number of responses times an assumed mean response length (--train_tokens: JustRL reports ~8k early, 4-5k after step
1000; --val_tokens: validation samples at temperature 0.7 with a 31744-token cap, so its responses can run longer than
training's 15360-token cap allows; no measured figure is published). Printed per assumption: tokens per validation,
its ratio to one training step's generation, and the share of all generated tokens when it runs every N steps.
The ratio in tokens is a lower bound of the ratio in time: a generation batch waits for its longest response, and
validation's cap is twice training's.
"""

import argparse
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None) -> list[dict]:
    from eval import BENCHMARKS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=os.path.join(ROOT, "recipes", "justrl.yaml"))
    parser.add_argument("--train_tokens", type=int, nargs="+", default=[8000, 4500])
    parser.add_argument("--val_tokens", type=int, nargs="+", default=[8000, 12000])
    args = parser.parse_args(argv)
    recipe = yaml.safe_load(open(args.recipe))
    names = recipe["validation_benchmarks"]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        sys.exit(f"{args.recipe}: validation_benchmarks {unknown} have no known row count (eval.BENCHMARKS)")
    problems = sum(BENCHMARKS[n][1] for n in names)
    samples = problems * recipe["validation_n_samples"]
    responses = recipe["prompts_per_step"] * recipe["num_generations"]
    every = recipe["validation_every_generation_steps"]
    total = recipe["total_generation_steps"]
    count = (bool(recipe.get("validation_before_training")) + total // every + (total % every != 0)
             if every else int(bool(recipe.get("validation_before_training"))))
    print(f"{os.path.relpath(args.recipe, ROOT)}: validation = {problems} problems ({', '.join(names)}) x {recipe['validation_n_samples']} = "
          f"{samples} samples, cap {recipe['validation_max_new_tokens']} tokens; a training step = {responses} "
          f"responses, cap {recipe['max_completion_length']} tokens; validation every {every} steps")
    print(f"samples per validation / responses per step = {samples / responses:.2f}; validations in a {total}-step "
          f"run: {count} (before training, every {every} steps, the last)")
    rows = []
    print("| mean tokens, training | mean tokens, validation | tokens per validation | x one step's generation | "
          f"share of all generated tokens (every {every} steps) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for train in args.train_tokens:
        for val in args.val_tokens:
            ratio = samples * val / (responses * train)
            share = ratio / (every + ratio)
            rows.append({"train_tokens": train, "val_tokens": val, "ratio": ratio, "share": share})
            print(f"| {train} | {val} | {samples * val / 1e6:.1f}M | {ratio:.2f} | {100 * share:.1f}% |")
    return rows


if __name__ == "__main__":
    main()
