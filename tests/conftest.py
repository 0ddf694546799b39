import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The one rule for optional dependencies (vLLM, the sandbox, the real model's download, the local Slurm cluster):
# where one is missing a test skips, except under CI (CI set to anything but "", 0, false or no; .ci/run sets
# CI=true), where it fails: a green CI run must mean that every path ran.
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(available: bool, what: str) -> None:
    """Skip the calling test when `what` is not available, or fail it under CI."""
    if not available:
        (pytest.fail if IN_CI else pytest.skip)(f"{what} (CI=true: every optional path must run)")


# CI runs the suite on two workers (pytest-xdist: `-n 2 --dist loadfile --no-loadscope-reorder`): most of its time
# is start-ups (a vLLM server, torchrun, a Slurm job) that leave a core idle. A work unit is a whole test file, so a
# module's fixtures (a cluster, a run, an engine) are built once; files go out longest first (by their times in the
# README, Slurm's first), so that the quick files fill the end and both workers finish together. (xdist 3.8's
# `--dist loadgroup` groups do not apply under pytest 9: it renames a test's `_nodeid`, which pytest 9 no longer reads.)
#
# Each worker computes on one thread (and so do the processes it starts, unless a test sets its own count): two workers
# on two cores then never run more compute threads than cores. With torch's default (a thread per core) in both workers,
# a parallel op waits for its descheduled second thread. The results do not depend on it: the real model's learning
# test printed the same accuracies on one thread as on two (held-out 0.1125 -> 0.3000, rollouts 0.0312 -> 0.2188).
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:  # a plugin imported it before this file: set the live pool too
        sys.modules["torch"].set_num_threads(1)
LONGEST_FIRST = ["test_slurm.py", "test_slurm_gpus.py", "test_collectives.py", "test_vllm.py", "test_real_model.py",
                 "test_train_grpo.py", "test_validation.py", "test_vllm_dp.py", "test_update_packing.py",
                 "test_vllm_cpu.py", "test_stages.py", "test_eval.py", "test_faults.py", "test_sandbox.py"]


def pytest_collection_modifyitems(config, items):
    if "PYTEST_XDIST_WORKER" in os.environ:  # a plain run keeps the files' order
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(LONGEST_FIRST)))  # stable


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """reasonrl/demo/tiny.py's warm-started model, tokenizer and data, built once per test session (~30 s on 2 cores)."""
    from reasonrl.demo import tiny

    return tiny.ensure_tiny_assets(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def tokenizer():
    """A small tokenizer trained on one JustRL prompt, with reasonrl/demo/tiny.py's chat template (builds in a second)."""
    from reasonrl.run import data
    from reasonrl.demo import tiny

    return tiny.build_tokenizer(["What is 1 + 1?" + data.JUSTRL_SUFFIX] * 4)


@pytest.fixture(scope="session")
def server(tiny_assets, tmp_path_factory):
    """One `trl vllm-serve` of the tiny model for the session, as a user starts it (tests/test_vllm.py and
    tests/test_collectives.py share it: a start-up is about a minute on 2 cores); stopped by its process group.
    The trainers that use it sync their weights into it at their first generation step."""
    from test_vllm import descendants, free_port, start_server, stop_group

    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    proc = start_server(tiny_assets["model"], port, log_path)
    try:
        yield {"port": port, "proc": proc, "log": log_path, "tree": descendants(proc.pid)}
    finally:
        stop_group(proc)
