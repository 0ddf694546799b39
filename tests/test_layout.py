"""The repository's layout as a specification: five scripts on top, one package below them, imports pointing down
only, no circle, no private name crossing a module. Reads the sources with `ast` (module-level and function-level
imports alike); imports nothing.

    python -m pytest tests/test_layout.py -q
"""

import ast
import os

from conftest import ROOT

SCRIPTS = ["eval.py", "launch_slurm.py", "reward.py", "stages.py", "train_grpo.py"]
ROOMS = ["cluster", "demo", "generation", "grading", "run", "sandbox", "trainer"]
# Modules over LONG lines: each does one job its docstring names
LONG = 400
ONE_JOB = ["reasonrl/sandbox/runner.py", "reasonrl/trainer/validation.py"]


def sources() -> dict[str, str]:
    """{module name: path} for the top-level scripts and every module of the package."""
    found = {name[:-3]: os.path.join(ROOT, name) for name in os.listdir(ROOT) if name.endswith(".py")}
    for folder, dirs, files in os.walk(os.path.join(ROOT, "reasonrl")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = os.path.join(folder, name)
    return found


def imports(path: str, modules) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for every import of one of `modules` anywhere in the file."""
    found = []
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name in modules]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in modules:
                    found.append((submodule, None))
                elif node.module in modules:
                    found.append((node.module, alias.name))
    return found


def graph() -> dict[str, set[str]]:
    modules = sources()
    return {name: {target for target, _ in imports(path, modules)} for name, path in modules.items()}


def test_the_top_level_holds_only_the_scripts_a_user_runs_or_edits():
    assert sorted(n for n in os.listdir(ROOT) if n.endswith(".py")) == SCRIPTS


def test_the_package_has_one_folder_per_job():
    package = os.path.join(ROOT, "reasonrl")
    assert sorted(d for d in os.listdir(package) if os.path.isdir(os.path.join(package, d))
                  and d != "__pycache__") == ROOMS


def test_no_module_of_the_package_imports_a_top_level_script():
    scripts = {name[:-3] for name in SCRIPTS}
    upward = {name: sorted(targets & scripts) for name, targets in graph().items()
              if name.startswith("reasonrl") and targets & scripts}
    assert upward == {}


def test_no_import_circle_among_the_scripts_and_the_package():
    edges = graph()
    circles, done, path = [], set(), []

    def visit(name):
        if name in path:
            circles.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        path.append(name)
        for target in sorted(edges.get(name, ())):
            visit(target)
        path.pop()
        done.add(name)

    for name in sorted(edges):
        visit(name)
    assert circles == []


def test_no_private_name_crosses_a_module():
    modules = sources()
    crossing = []
    for name, path in modules.items():
        tree = ast.parse(open(path).read(), path)
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in modules:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    elif alias.name.startswith("_"):
                        crossing.append(f"{name}: from {node.module} import {alias.name}")
            elif isinstance(node, ast.Import):
                aliases.update({alias.asname or alias.name: alias.name for alias in node.names if alias.name in modules})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                crossing.append(f"{name}: {aliases[node.value.id]}.{node.attr}")
    assert crossing == []


def test_a_module_over_400_lines_does_one_job_its_docstring_names():
    long = sorted(os.path.relpath(path, ROOT) for path in sources().values() if len(open(path).readlines()) > LONG)
    assert long == sorted(ONE_JOB)
    for rel in ONE_JOB:
        assert "One job" in ast.get_docstring(ast.parse(open(os.path.join(ROOT, rel)).read())), rel
