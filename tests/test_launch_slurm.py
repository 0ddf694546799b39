"""launch_slurm.py and its plan (reasonrl/cluster/plan.py, on literal inputs): node roles, rendezvous, the commands
each node runs (dry mode) and the inputs it refuses."""

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

import launch_slurm as ls
from conftest import ROOT, require
from reasonrl.cluster.allocation import allocation_gpus
from reasonrl.cluster.plan import (expand_hostlist, gpu_use, node_commands, server_parallelism, srun_command,
                                   unused_or_shared, with_overrides)
from reasonrl.cluster.supervisor import failed_rank


def test_expand_nodelist_reads_slurm_ranges_padding_and_plain_names():
    assert expand_hostlist("gpu[01-03,07],head") == ["gpu01", "gpu02", "gpu03", "gpu07", "head"]
    assert expand_hostlist("n[8-10]") == ["n8", "n9", "n10"]
    assert expand_hostlist("a,b") == ["a", "b"]


def test_expand_nodelist_keeps_suffixes_and_multiplies_several_bracket_groups():
    assert expand_hostlist("gpu[01-02]-ib") == ["gpu01-ib", "gpu02-ib"]
    assert expand_hostlist("gpu[01-02]-ib,login") == ["gpu01-ib", "gpu02-ib", "login"]
    assert expand_hostlist("r[1-2]n[08-09]") == ["r1n08", "r1n09", "r2n08", "r2n09"]
    assert expand_hostlist("c[9-10].cluster,x[1,3-4]y") == ["c9.cluster", "c10.cluster", "x1y", "x3y", "x4y"]
    with pytest.raises(ValueError, match="unbalanced brackets"):
        expand_hostlist("gpu[01-02")
    with pytest.raises(ValueError, match="'a-b' is not a number"):
        expand_hostlist("gpu[a-b]")


def test_the_parser_expands_as_scontrol_does(tmp_path):
    """Where this Slurm's scontrol accepts a list, both give the same hosts (Slurm 22.05 refuses suffixes after a
    bracket, "gpu[01-02]-ib", which newer releases accept: expand_nodelist falls back to the parser for those)."""
    require(shutil.which("scontrol") is not None, "Slurm's scontrol (bash scripts/slurm_local.sh install)")
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=parse\nSlurmctldHost=localhost\n")  # scontrol wants a config even to expand
    compared = 0
    for hosts in ("gpu[01-03,07],head", "gpu[01-02]-ib", "r[1-2]n[08-09]", "c[9-10].cluster,x[1,3-4]y", "n[8-10]"):
        out = subprocess.run(["scontrol", "show", "hostnames", hosts], capture_output=True, text=True,
                             env=dict(os.environ, SLURM_CONF=str(conf)))
        if out.returncode == 0 and out.stdout.split():  # 22.05 says "Invalid hostlist" and may still exit 0
            assert expand_hostlist(hosts) == out.stdout.split(), hosts
            compared += 1
    assert compared >= 3


def test_recipe_overrides_after_the_double_dash_reach_the_launcher():
    recipe = with_overrides({"model_name_or_path": "a", "output_dir": "o", "seed": 1},
                          ["--output_dir", "/scratch/x", "--model_name_or_path=b", "--dry", "--seed", "3"])
    assert recipe == {"model_name_or_path": "b", "output_dir": "/scratch/x", "seed": 3}  # a bare flag sets nothing


def test_failed_rank_reads_torchrun_s_failure_summary(tmp_path):
    log = tmp_path / "train1.log"
    log.write_text("""Root Cause (first observed failure):
[0]:
  time      : 2026-12-02_06:01:02
  host      : vm
  rank      : 3 (local_rank: 1)
  exitcode  : -9 (pid: 4242)
  error_file: <N/A>
""")
    assert failed_rank(str(log)) == "rank 3 (local rank 1), exit code -9 (SIGKILL)"
    log.write_text("  rank      : 0 (local_rank: 0)\n  exitcode  : 1 (pid: 7)\n")
    assert failed_rank(str(log)) == "rank 0 (local rank 0), exit code 1"
    log.write_text("Traceback ... no summary")
    assert failed_rank(str(log)) is None


RECIPE = {"model_name_or_path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "vllm_max_model_length": 16384}


def test_last_node_serves_vllm_on_every_gpu_and_the_others_train_with_one_rendezvous():
    plan = node_commands(["g1", "g2", "g3"], "recipes/justrl.yaml", RECIPE, 8, "accelerate_configs/zero3.yaml",
                         log_dir="out/logs")
    assert [(n["host"], n["role"], n["rank"], n["gpus"]) for n in plan] == [
        ("g3", "vllm", None, 8), ("g1", "train", 0, 8), ("g2", "train", 1, 8)]
    # 8 engines of 1 GPU; no CUDA_VISIBLE_DEVICES: the step's GPUs are the ones Slurm assigns (--gres=gpu:8)
    assert plan[0]["command"] == ("trl vllm-serve --model deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B "
                                  "--tensor_parallel_size 1 --data_parallel_size 8 --host 0.0.0.0 --port 8000 "
                                  "--max_model_len 16384")
    assert [n["log"] for n in plan] == ["out/logs/vllm-g3.log", "out/logs/train0-g1.log", "out/logs/train1-g2.log"]
    rank1 = shlex.split(plan[2]["command"])
    assert rank1 == ["accelerate", "launch", "--config_file", "accelerate_configs/zero3.yaml", "--num_machines", "2",
                     "--machine_rank", "1", "--main_process_ip", "g1", "--main_process_port", "29500",
                     "--num_processes", "16", "train_grpo.py", "--config", "recipes/justrl.yaml", "--use_vllm", "true",
                     "--vllm_mode", "server", "--vllm_server_host", "g3", "--vllm_server_port", "8000"]


def test_cpu_nodes_get_a_float32_eager_server_with_a_bounded_kv_cache_and_node_addresses():
    tiny = {"model_name_or_path": ".cache/tiny/sft", "max_prompt_length": 64, "max_completion_length": 32}
    plan = node_commands(["node1", "node2", "node3"], "recipes/tiny.yaml", tiny, 1, "accelerate_configs/zero3.yaml",
                         addresses={"node1": "10.0.0.1", "node3": "10.0.0.3"}, cpu=True, cpu_kv_cache_gib=2,
                         server_args=["--max_num_seqs", "64"], deepspeed=True)
    assert plan[0]["command"] == ("VLLM_CPU_KVCACHE_SPACE=2 trl vllm-serve --model .cache/tiny/sft --tensor_parallel_size 1 "
                                  "--host 0.0.0.0 --port 8000 --dtype float32 --enforce_eager true "
                                  "--no-enable-chunked-prefill --max_model_len 96 --max_num_seqs 64")
    assert [n["gpus"] for n in plan] == [None, None, None]  # CPU steps ask Slurm for no GPU
    rank0 = plan[1]["command"]
    assert "--main_process_ip 10.0.0.1" in rank0 and "--vllm_server_host 10.0.0.3" in rank0
    assert "--num_processes 2 --mixed_precision no train_grpo.py" in rank0  # DeepSpeed on CPUs: no bf16 engine


def test_only_a_deepspeed_config_runs_cpu_nodes_without_mixed_precision():
    tiny = {"model_name_or_path": "m"}
    ddp = node_commands(["n1", "n2"], "r.yaml", tiny, 2, "accelerate_configs/cpu.yaml", cpu=True)
    zero3 = node_commands(["n1", "n2"], "r.yaml", tiny, 2, "accelerate_configs/zero3.yaml", cpu=True, deepspeed=True)
    gpus = node_commands(["n1", "n2"], "r.yaml", tiny, 2, "accelerate_configs/zero3.yaml", deepspeed=True)
    assert "--num_processes 2 train_grpo.py" in ddp[1]["command"]
    assert "--num_processes 2 --mixed_precision no train_grpo.py" in zero3[1]["command"]
    assert "--num_processes 2 train_grpo.py" in gpus[1]["command"]  # bf16 on GPUs, as the config says


def test_a_cpu_server_holds_a_validation_response():
    tiny = {"model_name_or_path": "m", "max_prompt_length": 64, "max_completion_length": 32,
            "validation_benchmarks": ["heldout"], "validation_max_new_tokens": 40}
    plan = node_commands(["n1", "n2"], "r.yaml", tiny, 1, "accelerate_configs/cpu.yaml", cpu=True)
    assert "--max_model_len 104" in plan[0]["command"]  # 64 + max(32, 40)
    plan = node_commands(["n1", "n2"], "r.yaml", {**tiny, "validation_benchmarks": []}, 1,
                         "accelerate_configs/cpu.yaml", cpu=True)
    assert "--max_model_len 96" in plan[0]["command"]


def test_colocated_generation_uses_every_node_for_training():
    plan = node_commands(["g1", "g2"], "r.yaml", RECIPE, 4, "accelerate_configs/zero3.yaml", vllm_node=False,
                         extra=["--seed", "3"])
    assert [n["role"] for n in plan] == ["train", "train"]
    assert plan[1]["command"].endswith("--num_processes 8 train_grpo.py --config r.yaml --use_vllm true "
                                       "--vllm_mode colocate --seed 3")


def test_the_overlap_key_reaches_every_training_node_of_the_server_topology():
    plan = node_commands(["g1", "g2", "g3"], "r.yaml", RECIPE, 8, "accelerate_configs/zero3.yaml",
                         extra=["--async_generation_steps", "1"])
    trainers = [n["command"] for n in plan if n["role"] == "train"]
    assert len(trainers) == 2 and all("--vllm_mode server" in c and c.endswith(" --async_generation_steps 1")
                                      for c in trainers)


def test_tensor_parallel_groups_split_the_server_node_into_data_parallel_engines():
    plan = node_commands(["g1", "g2"], "r.yaml", RECIPE, 8, "accelerate_configs/zero3.yaml", vllm_tp=4,
                         heads=(12, 2))
    assert "--tensor_parallel_size 4 --data_parallel_size 2 --host" in plan[0]["command"]
    assert server_parallelism(8, 1, (12, 2)) == 8
    assert server_parallelism(8, 2, (12, 2)) == 4
    assert server_parallelism(4, 4, (32, 8)) == 1
    assert server_parallelism(8, 8, None) == 1  # heads unknown: only the GPUs are checked


def test_a_tensor_parallel_size_that_heads_or_gpus_cannot_take_is_refused_naming_the_flag():
    # 12 attention heads (the 1.5B models) do not split 8 ways
    with pytest.raises(ValueError, match=r"--vllm_tensor_parallel_size 8: the model has 12 attention heads and 2 "
                                         r"key-value heads, which vLLM cannot split 8 ways; use one of \[1, 2, 4\]"):
        server_parallelism(8, 8, (12, 2))
    # 12 key-value heads can neither be split 8 ways nor replicated to 8
    with pytest.raises(ValueError, match=r"use one of \[1, 2, 4\]"):
        server_parallelism(8, 8, (32, 12))
    with pytest.raises(ValueError, match=r"--vllm_tensor_parallel_size 3 does not divide the vLLM node's 8 GPUs; "
                                         r"use one of \[1, 2, 4, 8\]"):
        server_parallelism(8, 3, (12, 2))


def test_model_heads_reads_config_json_of_a_local_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 12, "num_key_value_heads": 2}))
    assert ls.model_heads(str(tmp_path)) == (12, 2)
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"num_attention_heads": 16}}))
    assert ls.model_heads(str(tmp_path)) == (16, 16)  # no num_key_value_heads: multi-head attention
    assert ls.model_heads(str(tmp_path / "missing")) is None


def test_gpu_use_maps_slurm_s_gpu_ids_to_processes_and_engines():
    server = {"host": "g3", "role": "vllm", "gpus": 4}
    trainer = {"host": "g1", "role": "train", "gpus": 4}
    assert gpu_use(server, ["4", "5", "6", "7"], 2) == [["4", "5"], ["6", "7"]]
    assert gpu_use(trainer, ["4", "5", "6", "7"], 2) == [["4"], ["5"], ["6"], ["7"]]
    with pytest.raises(ValueError, match=r"g1 \(train\): its step received 2 GPUs \(0,1\) but the plan runs 4"):
        gpu_use(trainer, ["0", "1"], 1)


def test_unused_or_shared_names_each_gpu_used_twice_idle_or_foreign():
    allocated = {"g1": ["0", "1"], "g2": ["0", "1"]}
    assert unused_or_shared({"g1": [["0"], ["1"]], "g2": [["0", "1"]]}, allocated) == []
    assert unused_or_shared({"g1": [["0"], ["0"]], "g2": [["1", "2"]]}, allocated) == [
        "g1: GPUs ['0'] used twice", "g1: GPUs ['1'] allocated but idle", "g2: GPUs ['0'] allocated but idle",
        "g2: GPUs ['2'] used but not allocated to the job"]


def test_job_steps_ask_slurm_for_the_node_s_gpus():
    node = {"host": "g1", "role": "train", "rank": 0, "gpus": 8}
    assert srun_command(node, "train0") == ["srun", "--nodes=1", "--ntasks=1", "--nodelist=g1", "--job-name=train0",
                                               "--overlap", "--gres=gpu:8", "--kill-on-bad-exit=1"]
    assert "--gres=gpu:8" not in srun_command({**node, "gpus": None}, "train0")


def test_one_node_is_refused_with_a_pointer_to_the_readme():
    with pytest.raises(ValueError, match="need at least 2 nodes"):
        node_commands(["g1"], "r.yaml", RECIPE, 8, "z.yaml")


def _dry_run(*args, env=None):
    cmd = [sys.executable, "launch_slurm.py", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env or dict(os.environ, PATH="/usr/bin:/bin"))


def test_dry_run_prints_one_json_line_per_node_and_starts_nothing():
    out = _dry_run("--config", "recipes/justrl.yaml", "--nodes", "gpu[01-05]", "--gpus_per_node", "8", "--dry_run",
                   "--", "--output_dir", "/scratch/run")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [n["host"] for n in lines] == ["gpu05", "gpu01", "gpu02", "gpu03", "gpu04"]
    assert all(n["command"].endswith("--vllm_server_port 8000 --output_dir /scratch/run") for n in lines[1:])
    assert "--num_processes 32" in lines[1]["command"]  # 4 training nodes x 8 GPUs: JustRL's 32-GPU shape
    assert lines[1]["log"] == "/scratch/run/logs/train0-gpu01.log"  # -- --output_dir moves the logs too
    assert "--tensor_parallel_size 1 --data_parallel_size 8 " in lines[0]["command"]


def test_dry_run_refuses_a_tensor_parallel_size_the_model_s_heads_cannot_take(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 12, "num_key_value_heads": 2}))
    out = _dry_run("--config", "recipes/justrl.yaml", "--nodes", "gpu[01-05]", "--gpus_per_node", "8", "--dry_run",
                   "--vllm_tensor_parallel_size", "8", "--", "--model_name_or_path", str(tmp_path))
    assert out.returncode == 2 and "--vllm_tensor_parallel_size 8: the model has 12 attention heads" in out.stderr


def test_an_allocation_without_gpus_plans_cpu_nodes():
    env = dict(os.environ, PATH="/usr/bin:/bin", SLURM_JOB_NODELIST="node[1-3]", SLURM_GPUS_PER_NODE="0")
    out = _dry_run("--config", "recipes/tiny.yaml", "--dry_run", env=env)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0]["command"].startswith("VLLM_CPU_KVCACHE_SPACE=1 trl vllm-serve --model .cache/tiny/sft")
    assert "--config_file accelerate_configs/cpu.yaml" in lines[1]["command"]
    assert "--num_processes 2 train_grpo.py" in lines[1]["command"]


def test_missing_config_and_unknown_accelerate_config_fail_before_anything_runs():
    out = _dry_run("--config", "recipes/nope.yaml", "--nodes", "a,b", "--dry_run")
    assert out.returncode != 0 and "--config recipes/nope.yaml: no such file" in out.stderr
    out = _dry_run("--config", "recipes/tiny.yaml", "--nodes", "a,b", "--accelerate_config", "zero9.yaml", "--dry_run")
    assert out.returncode != 0 and "--accelerate_config zero9.yaml: no such file" in out.stderr
    assert "zero3.yaml" in out.stderr  # it lists the ones that exist


def test_every_shipped_accelerate_config_passes():
    for name in sorted(os.listdir(os.path.join(ROOT, "accelerate_configs"))):
        ls.check_accelerate_config(os.path.join(ROOT, "accelerate_configs", name))


def test_a_yaml_file_that_is_no_accelerate_config_is_refused(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("model_name_or_path: x\n")
    with pytest.raises(SystemExit, match=r"recipe\.yaml: not an Accelerate config \(no distributed_type key\)"):
        ls.check_accelerate_config(str(path))


def test_allocation_gpus_reads_slurm_s_environment(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    for key in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        monkeypatch.delenv(key, raising=False)
    assert allocation_gpus() is None
    monkeypatch.setenv("SLURM_GPUS_PER_NODE", "h100:4")
    assert allocation_gpus() == 4
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "8")
    assert allocation_gpus() == 8
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "0")
    assert allocation_gpus() == 0


def test_probe_gpus_outside_an_allocation_says_where_it_runs():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    out = _dry_run("--config", "recipes/tiny.yaml", "--nodes", "a,b", "--gpus_per_node", "2", "--probe_gpus",
                   env=dict(env, PATH="/usr/bin:/bin"))
    assert out.returncode == 2
    assert "--probe_gpus runs inside an allocation with GPUs (salloc/sbatch --gpus-per-node N)" in out.stderr
