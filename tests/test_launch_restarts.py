"""The supervisor's restart loop (reasonrl/cluster/supervisor.py; launch_slurm.py --max_restarts) without a cluster:
job steps run through a stand-in `srun` that runs its command here, so the loop's decisions (restart, stop past K,
stop when one node fails twice in a row), its lines and its logs are checked in seconds. The real cluster's kill loop
is tests/test_slurm.py's.

    python -m pytest -q tests/test_launch_restarts.py
"""

import os
import shlex
import signal
import stat

import pytest

import launch_slurm as ls
from reasonrl.cluster import supervisor
from reasonrl.cluster.plan import restart_refusal


def test_restart_refusal_restarts_up_to_k_and_never_on_the_same_node_twice_in_a_row():
    assert restart_refusal("node2", [], 0) == ""  # no restarts asked for: today's failure message only
    assert restart_refusal("node2", [], 3) is None
    assert restart_refusal("node2", ["node3"], 3) is None
    assert restart_refusal("node2", ["node2", "node3"], 3) is None  # not in a row
    assert restart_refusal("node2", ["node1", "node2"], 3) == (
        "not restarted: node2 failed twice in a row (a faulty node?); resubmit without it, e.g. "
        "`sbatch --exclude=node2 ...`.")
    assert restart_refusal("node1", ["node2", "node3", "node2"], 3) == (
        "not restarted: all 3 restarts used (--max_restarts).")


def test_failed_rank_and_tail_read_only_the_last_attempt_of_an_appended_log(tmp_path):
    log = tmp_path / "train1-node2.log"
    first = "[launch] attempt 1, 2026-12-03 09:00:00\n  rank      : 1 (local_rank: 0)\n  exitcode  : -9 (pid: 42)\n"
    log.write_text(first + "[launch] attempt 2, 2026-12-03 09:01:00\n  rank      : 3 (local_rank: 1)\n"
                   "  exitcode  : 1 (pid: 43)\n")
    assert supervisor.failed_rank(str(log)) == "rank 1 (local rank 0), exit code -9 (SIGKILL)"
    assert supervisor.failed_rank(str(log), start=len(first)) == "rank 3 (local rank 1), exit code 1"
    assert supervisor.tail(str(log), lines=2, start=len(first)) == (
        "  rank      : 3 (local_rank: 1)\n  exitcode  : 1 (pid: 43)\n")


def test_restart_summary_lists_each_cause_and_cost():
    restarts = [{"number": 1, "cause": "training node 1 (node2): rank 1", "stop_s": 2.0, "server_s": 40.0,
                 "first_step_s": 30.4},
                {"number": 2, "cause": "the vLLM server on node3 exited with code 137 during training", "stop_s": 1.0}]
    assert supervisor.restart_summary(restarts) == (
        "\n[launch] 2 restart(s), 72 s lost to them in all:\n"
        "[launch]   1. training node 1 (node2): rank 1: 72 s\n"
        "[launch]   2. the vLLM server on node3 exited with code 137 during training: "
        "cost unknown (no generation step after it)")
    assert supervisor.restart_summary([]) == ""


@pytest.fixture
def local_steps(tmp_path, monkeypatch):
    """A stand-in `srun` on PATH that drops its options and runs the step's command on this machine; the launcher's
    SIGTERM handler is put back afterwards."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text('#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    handler = signal.getsignal(signal.SIGTERM)
    yield tmp_path
    signal.signal(signal.SIGTERM, handler)


def trainer(tmp_path, rank: int, host: str, fail_on: list[int]) -> dict:
    """A training node whose command records one generation step, then exits 1 on the attempts in fail_on (counted
    in a file), else 0 after a second (a peer that would have gone on)."""
    count, order = tmp_path / f"attempts{rank}", tmp_path / "out" / "data_order" / f"rank{rank}.jsonl"
    script = (f"n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}; mkdir -p {order.parent}; "
              f"echo '{{}}' >> {order}; case $n in {'|'.join(map(str, fail_on)) or 0}) echo '  rank      : {rank} "
              f"(local_rank: 0)'; echo '  exitcode  : -9 (pid: 1)'; sleep 0.3; exit 1;; esac; sleep 1")
    return {"host": host, "role": "train", "rank": rank, "command": f"bash -c {shlex.quote(script)}",
            "log": str(tmp_path / "logs" / f"train{rank}-{host}.log")}


def test_faults_on_alternating_nodes_restart_and_the_run_finishes(local_steps, capsys):
    plan = [trainer(local_steps, 0, "node1", fail_on=[1]), trainer(local_steps, 1, "node2", fail_on=[2])]
    restarts = supervisor.run(plan, str(local_steps / "out"), None, 10, max_restarts=3, poll_s=0.1)
    text = capsys.readouterr().out
    assert [r["cause"] for r in restarts] == [
        "training node 0 (node1): rank 0 (local rank 0), exit code -9 (SIGKILL); its job step exited with code 1",
        "training node 1 (node2): rank 1 (local rank 0), exit code -9 (SIGKILL); its job step exited with code 1"]
    assert "[launch] RESTART 1 of at most 3 (--max_restarts): training node 0 (node1): rank 0" in text
    assert "[launch] RESTART 2 of at most 3 (--max_restarts): training node 1 (node2): rank 1" in text
    assert "every trainer resumes from the start (no checkpoint yet)" in text
    assert text.count("[launch] restart 1 cost ") == 1 and text.count("[launch] restart 2 cost ") == 1
    assert "[launch] 2 restart(s), " in text and "\n[launch]   2. training node 1 (node2)" in text
    # each step's log holds every attempt, in order
    log = open(plan[1]["log"]).read()
    assert [line.split(",")[0] for line in log.splitlines() if line.startswith("[launch] attempt")] == [
        "[launch] attempt 1", "[launch] attempt 2", "[launch] attempt 3"]


def test_the_same_node_failing_twice_in_a_row_stops_the_job_naming_it(local_steps, capsys):
    plan = [trainer(local_steps, 0, "node1", fail_on=[1, 2]), trainer(local_steps, 1, "node2", fail_on=[])]
    with pytest.raises(SystemExit) as stopped:
        supervisor.run(plan, str(local_steps / "out"), None, 10, max_restarts=3, poll_s=0.1)
    message = str(stopped.value.code)
    assert message.startswith("[launch] FAILED: training node 0 (node1): rank 0 (local rank 0), exit code -9 "
                              "(SIGKILL); its job step exited with code 1. Last lines of "), message
    assert "[launch] not restarted: node1 failed twice in a row" in message
    assert "Last checkpoint: none yet" in message and "[launch]   1. training node 0 (node1)" in message
    assert capsys.readouterr().out.count("[launch] RESTART") == 1


def test_past_max_restarts_the_job_stops_with_the_failure_message(local_steps, capsys):
    plan = [trainer(local_steps, 0, "node1", fail_on=[1, 3]), trainer(local_steps, 1, "node2", fail_on=[2])]
    with pytest.raises(SystemExit) as stopped:
        supervisor.run(plan, str(local_steps / "out"), None, 10, max_restarts=2, poll_s=0.1)
    message = str(stopped.value.code)
    assert message.startswith("[launch] FAILED: training node 0 (node1): rank 0"), message
    assert "[launch] not restarted: all 2 restarts used (--max_restarts)." in message
    assert capsys.readouterr().out.count("[launch] RESTART") == 2


def test_max_restarts_must_not_be_negative(capsys):
    with pytest.raises(SystemExit):
        ls.main(["--config", "recipes/tiny.yaml", "--nodes", "a,b", "--max_restarts", "-1", "--dry_run"])
    assert "--max_restarts -1: must be 0 (stop at the first fault) or more" in capsys.readouterr().err


def test_each_attempt_appends_its_header_on_a_line_of_its_own(local_steps):
    log = local_steps / "logs" / "train0-node1.log"
    log.parent.mkdir()
    log.write_bytes(b"Loading weights:  50%|#####     | 13/26\r")  # a progress bar cut by a kill
    steps = supervisor.Steps(str(local_steps))
    steps.attempt = 2
    steps.start({"host": "node1", "role": "train", "rank": 0, "command": "echo resumed", "log": str(log)})
    assert steps.running["train0"][0].wait(timeout=60) == 0
    text = log.read_bytes()
    assert text.startswith(b"Loading weights:  50%|#####     | 13/26\r\n[launch] attempt 2, ") and text.endswith(b"\nresumed\n")
    assert steps.log_start[str(log)] == len(b"Loading weights:  50%|#####     | 13/26\r")
