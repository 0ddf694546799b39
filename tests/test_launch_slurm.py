"""launch_slurm.py: node roles, rendezvous and the commands each node runs (dry mode)."""

import json
import os
import shlex
import subprocess
import sys

import pytest

import launch_slurm as ls
from conftest import ROOT


def test_expand_nodelist_reads_slurm_ranges_padding_and_plain_names():
    assert ls.expand_nodelist("gpu[01-03,07],head") == ["gpu01", "gpu02", "gpu03", "gpu07", "head"]
    assert ls.expand_nodelist("n[8-10]") == ["n8", "n9", "n10"]
    assert ls.expand_nodelist("a,b") == ["a", "b"]


RECIPE = {"model_name_or_path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "vllm_max_model_length": 16384}


def test_last_node_serves_vllm_and_the_others_train_with_one_rendezvous():
    plan = ls.node_commands(["g1", "g2", "g3"], "recipes/justrl.yaml", RECIPE, 8, "accelerate_configs/zero3.yaml")
    assert [(n["host"], n["role"]) for n in plan] == [("g3", "vllm"), ("g1", "train rank 0"), ("g2", "train rank 1")]
    assert plan[0]["command"] == ("CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B "
                                  "--tensor_parallel_size 1 --host 0.0.0.0 --port 8000 --max_model_len 16384")
    rank1 = shlex.split(plan[2]["command"])
    assert rank1 == ["accelerate", "launch", "--config_file", "accelerate_configs/zero3.yaml", "--num_machines", "2",
                     "--machine_rank", "1", "--main_process_ip", "g1", "--main_process_port", "29500",
                     "--num_processes", "16", "train_grpo.py", "--config", "recipes/justrl.yaml",
                     "--vllm_mode", "server", "--vllm_server_host", "g3", "--vllm_server_port", "8000"]


def test_colocated_generation_uses_every_node_for_training():
    plan = ls.node_commands(["g1", "g2"], "r.yaml", RECIPE, 4, "z.yaml", vllm_node=False, extra=["--seed", "3"])
    assert [n["role"] for n in plan] == ["train rank 0", "train rank 1"]
    assert plan[1]["command"].endswith("--num_processes 8 train_grpo.py --config r.yaml --vllm_mode colocate --seed 3")


def test_one_node_is_refused_with_a_pointer_to_the_readme():
    with pytest.raises(ValueError, match="need at least 2 nodes"):
        ls.node_commands(["g1"], "r.yaml", RECIPE, 8, "z.yaml")


def test_dry_run_prints_one_json_line_per_node_and_starts_nothing():
    cmd = [sys.executable, "launch_slurm.py", "--config", "recipes/justrl.yaml", "--nodes", "gpu[01-05]",
           "--gpus_per_node", "8", "--dry_run", "--", "--output_dir", "/scratch/run"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True, env=dict(os.environ, PATH="/usr/bin:/bin"))
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [n["host"] for n in lines] == ["gpu05", "gpu01", "gpu02", "gpu03", "gpu04"]
    assert all(n["command"].endswith("--vllm_server_port 8000 --output_dir /scratch/run") for n in lines[1:])
    assert "--num_processes 32" in lines[1]["command"]  # 4 training nodes x 8 GPUs: JustRL's 32-GPU shape
