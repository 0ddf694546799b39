"""The README's commands and CI stay in step with the repository."""

import os
import re

from conftest import ROOT


def read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def readme_commands():
    return re.findall(r"```bash\n(.*?)```", read("README.md"), flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    ci_command = [line for line in read(".ci/run").splitlines() if line.startswith("python3 -m venv")]
    readme_tests = [c.strip() for c in readme_commands() if "pytest" in c]
    assert len(ci_command) == 1 and readme_tests == ci_command


def test_quick_start_installs_then_runs_the_tiny_recipe():
    first = readme_commands()[0].strip()
    assert first.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt && ")
    assert first.endswith("train_grpo.py --config recipes/tiny.yaml")


def test_every_file_the_readme_commands_name_exists():
    named = set()
    for command in readme_commands():
        named |= set(re.findall(r"(?:recipes|accelerate_configs|scripts)/[\w.]+\.(?:yaml|sh)", command))
        named |= set(re.findall(r"\b[\w]+\.py\b", command))
    missing = sorted(n for n in named if not os.path.exists(os.path.join(ROOT, n)))
    assert named and not missing, missing


def test_every_recipe_is_listed_in_the_readme():
    recipes = sorted(f for f in os.listdir(os.path.join(ROOT, "recipes")) if f.endswith(".yaml"))
    text = read("README.md")
    unlisted = [r for r in recipes if r not in text and not (r.startswith("acereason_") and "acereason_*.yaml" in text)
                and not (r.startswith("openrs_exp") and "openrs_exp1/2/3.yaml" in text)]
    assert unlisted == []
