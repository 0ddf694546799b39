"""launch_slurm.check_accelerate_config: a wrong --accelerate_config fails before any node starts, naming the file
and the configs that exist.

    python -m pytest tests/test_launch_slurm_inputs.py -q
"""

import os

import pytest

import launch_slurm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_shipped_accelerate_config_passes():
    for name in sorted(os.listdir(os.path.join(ROOT, "accelerate_configs"))):
        launch_slurm.check_accelerate_config(os.path.join(ROOT, "accelerate_configs", name))


def test_an_unknown_accelerate_config_names_it_and_lists_the_shipped_ones(tmp_path):
    with pytest.raises(SystemExit, match=r"--accelerate_config accelerate_configs/zero4\.yaml: no such file; use one "
                                         r"of accelerate_configs/cpu\.yaml, .*accelerate_configs/zero3\.yaml"):
        launch_slurm.check_accelerate_config("accelerate_configs/zero4.yaml")


def test_a_yaml_file_that_is_no_accelerate_config_is_refused(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("model_name_or_path: x\n")
    with pytest.raises(SystemExit, match=r"recipe\.yaml: not an Accelerate config \(no distributed_type key\)"):
        launch_slurm.check_accelerate_config(str(path))


def test_main_checks_the_accelerate_config_before_planning_the_nodes(tmp_path):
    with pytest.raises(SystemExit, match=r"--accelerate_config .*zero4\.yaml: no such file"):
        launch_slurm.main(["--config", os.path.join(ROOT, "recipes", "justrl.yaml"), "--nodes", "gpu[01-05]",
                           "--accelerate_config", str(tmp_path / "zero4.yaml"), "--dry_run"])
