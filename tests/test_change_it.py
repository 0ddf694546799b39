"""README.md's "Change it" section, run as written: its code blocks are read from the README (so the two cannot drift),
written beside a copy of recipes/tiny.yaml, and the tiny model trains one generation step with all four changes.

    python -m pytest tests/test_change_it.py -q
"""

import json
import os
import re

import pytest
import torch
import yaml

import train_grpo as tg
from reasonrl.run.data import build_prompt
from reasonrl.trainer.loss import policy_loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def change_it_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block of the README's "## Change it" section, in order."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("\n## Change it\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_the_section_shows_two_files_four_recipe_changes_and_a_data_row():
    blocks = change_it_blocks()
    assert [lang for lang, _ in blocks] == ["python", "yaml", "python", "yaml", "yaml", "json", "yaml"]
    assert [text.splitlines()[0] for lang, text in blocks if lang == "python"] == ["# my_rewards.py", "# my_loss.py"]
    assert all(len(text.splitlines()) <= 10 for _, text in blocks)  # "each in ten lines or fewer"


def write_the_changes(folder) -> dict:
    """The section's files written into `folder`; returns the recipe: tiny.yaml with the section's lines."""
    recipe, rows = yaml.safe_load(open(os.path.join(ROOT, "recipes", "tiny.yaml"))), []
    for lang, text in change_it_blocks():
        if lang == "python":
            (folder / text.splitlines()[0].removeprefix("# ")).write_text(text)
        elif lang == "yaml":
            recipe.update(yaml.safe_load(text))
        elif lang == "json":  # the README's row, then 15 more of the same schema
            rows = [json.loads(text)] + [{"question": f"What is {a} + {a + 7}?", "answer": str(2 * a + 7)}
                                         for a in range(11, 26)]
    (folder / recipe["dataset_name"]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return recipe


@pytest.mark.slow
def test_the_four_changes_train_the_tiny_model(tiny_assets, tmp_path, monkeypatch, capsys):
    recipe = write_the_changes(tmp_path)
    assert (recipe["dataset_name"], recipe["policy_loss"]) == ("my_problems.jsonl", "my_loss.cispo")
    (tmp_path / "my_recipe.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)  # the recipe's data file is relative, as a user's beside train_grpo.py
    monkeypatch.syspath_prepend(str(tmp_path))  # where train_grpo.py's folder puts the user's modules
    summary = tg.main(["--config", "my_recipe.yaml", "--prepare_kwargs", json.dumps({"tiny_dir": os.path.dirname(
        tiny_assets["model"])}), "--model_name_or_path", tiny_assets["model"], "--heldout_file", "",
        "--output_dir", str(tmp_path / "run"), "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
        "--total_generation_steps", "1", "--prompts_per_step", "4", "--per_device_train_batch_size", "16"])
    logged = capsys.readouterr().out
    assert summary["data"] == {"rows": 16, "duplicates_dropped": 0, "too_long_dropped": 0, "kept": 16}
    assert summary["global_step"] == 2
    assert "'rewards/brevity/mean'" in logged and "'rewards/dapo_reward/mean'" in logged  # both rewards ran
    assert "'clip_ratio/low'" not in logged  # the default loss logs its clip fractions; cispo returns none
    assert build_prompt("What is 12 + 30?", recipe["prompt_suffix"], recipe["system_prompt"]) == [
        {"role": "system", "content": "Add."}, {"role": "user", "content": "What is 12 + 30? Answer in \\boxed{}."}]


def test_cispo_keeps_the_gradient_the_clip_removes(tmp_path, monkeypatch):
    """One token per case, advantage 0.5, ratio e (above 1 + 0.28): the default loss's clip zeroes the gradient; the
    README's cispo weighs log p by the clipped ratio 1.28, so d loss / d logp = -0.5 * 1.28."""
    write_the_changes(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_loss

    grads = []
    for loss_fn in (policy_loss, my_loss.cispo):
        logps = torch.tensor([[-1.0]], requires_grad=True)
        loss, _ = loss_fn(logps, torch.tensor([[-2.0]]), torch.tensor([0.5]), torch.ones(1, 1), 0.2, 0.28, 10.0)
        loss.backward()
        grads.append(logps.grad.item())
    assert grads == [0.0, pytest.approx(-0.64)]
