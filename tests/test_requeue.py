"""Time limits (issue 20): the launcher's timing from a job's TimeLimit, and training's save-and-stop at a
generation-step boundary when asked. (A two-requeue run on the local Slurm cluster is not in CI yet: README.)

    python -m pytest -q tests/test_requeue.py
"""

import json
import os

import pytest

from reasonrl.cluster.plan import slurm_seconds, stop_margin_s
from reasonrl.cluster.timelimit import TimeLimit, run_finished
from reasonrl.trainer.requeue import clear_stop_request, request_stop, stop_callback, stop_path


@pytest.mark.parametrize("text, seconds", [
    ("3", 180), ("1:30", 90), ("00:03:00", 180), ("48:00:00", 172800), ("2-00:00:00", 172800),
    ("1-12", 129600), ("1-12:30", 131400), ("0:45", 45),
])
def test_slurm_durations_in_seconds(text, seconds):
    assert slurm_seconds(text) == seconds


@pytest.mark.parametrize("text", ["UNLIMITED", "INFINITE", "NOT_SET"])
def test_no_time_limit(text):
    assert slurm_seconds(text) is None


def test_stop_margin_is_a_quarter_of_the_limit_between_30_s_and_15_min():
    assert stop_margin_s(180) == 45
    assert stop_margin_s(60) == 30
    assert stop_margin_s(48 * 3600) == 900


def test_a_3_minute_batch_job_asks_for_the_stop_45_s_before_its_end_and_requeues(tmp_path):
    fields = {"TimeLimit": "00:03:00", "RunTime": "00:00:20", "BatchFlag": "1", "Requeue": "1", "Restarts": "2"}
    limit = TimeLimit(str(tmp_path), "7", fields, now=1000.0)
    assert limit.job_start == 980.0
    assert limit.stop_at == 980 + 180 - 45
    assert limit.exit_by == 980 + 180 - 15  # trainers still running then are stopped; a third of the margin is left
    assert limit.requeue and limit.restarts == 2


def test_48_hour_job_stops_15_min_before_and_leaves_60_s_to_requeue(tmp_path):
    limit = TimeLimit(str(tmp_path), "7", {"TimeLimit": "2-00:00:00", "RunTime": "00:00:00", "BatchFlag": "1",
                                           "Requeue": "1"}, now=0.0)
    assert (limit.stop_at, limit.exit_by) == (172800 - 900, 172800 - 60)


def test_the_limit_is_re_read_every_read_every_s_and_a_cut_limit_makes_the_stop_due(tmp_path):
    limit = TimeLimit(str(tmp_path), "7", {"TimeLimit": "00:15:00", "RunTime": "00:03:20", "BatchFlag": "1",
                                           "Requeue": "1"}, margin_s=180, now=200.0, read_every_s=2)
    assert limit.next_read == 202.0 and limit.stop_at == 900 - 180
    limit.set_limit("00:06:00")  # what tests/test_slurm.py sets 200 s into the job: (200 + 120) s rounded up to minutes
    assert (limit.stop_at, limit.exit_by) == (360 - 180, 360 - 60)  # stop due; the save has 160 s before Slurm's end


def test_a_limit_shorter_than_the_start_up_is_refused_naming_time(tmp_path):
    limit = TimeLimit(str(tmp_path), "7", {"TimeLimit": "00:02:00", "RunTime": "00:01:35", "BatchFlag": "1",
                                           "Requeue": "1"}, now=95.0)
    assert "time limit (00:02:00) leaves no time to train" in limit.trainers_starting(now=95.0)
    assert "Submit with a longer --time" in limit.trainers_starting(now=95.0)


def test_salloc_or_no_requeue_or_no_limit(tmp_path):
    salloc = TimeLimit(str(tmp_path), "7", {"TimeLimit": "00:10:00", "RunTime": "0:0", "BatchFlag": "0",
                                            "Requeue": "1"}, now=0.0)
    assert not salloc.requeue and salloc.stop_at == 600 - 150
    assert TimeLimit(str(tmp_path), "7", {"TimeLimit": "UNLIMITED", "BatchFlag": "1"}, now=0.0).stop_at is None
    assert TimeLimit(str(tmp_path), None, {}).stop_at is None  # outside Slurm


def test_the_requeued_job_reads_what_the_stop_wrote(tmp_path):
    out = str(tmp_path)
    with open(os.path.join(out, "requeue.jsonl"), "w") as f:
        f.write(json.dumps({"job": "7", "restart": 0, "stop_requested": 100.0, "trainers_exited": 109.0,
                            "checkpoint": f"{out}/checkpoint-6", "requeued": 110.0}) + "\n")
    limit = TimeLimit(out, "7", {"TimeLimit": "00:03:00", "RunTime": "00:00:40", "BatchFlag": "1", "Requeue": "1",
                                 "Restarts": "1"}, now=165.0)
    assert limit.trainers_starting(now=170.0) is None
    assert limit.resume["save_s"] == 9.0 and limit.resume["pending_s"] == 15.0 and limit.resume["startup_s"] == 45.0
    assert limit.resume["checkpoint"] == f"{out}/checkpoint-6"


def test_the_requeued_job_prints_the_cost_once_its_first_new_step_is_logged(tmp_path, capsys):
    out = str(tmp_path)
    os.makedirs(os.path.join(out, "data_order"))
    with open(os.path.join(out, "requeue.jsonl"), "w") as f:
        f.write(json.dumps({"job": "7", "restart": 1, "stop_requested": 100.0, "trainers_exited": 112.0,
                            "checkpoint": f"{out}/checkpoint-6", "requeued": 113.0}) + "\n")
    limit = TimeLimit(out, "7", {"TimeLimit": "00:03:00", "RunTime": "00:00:50", "BatchFlag": "1", "Requeue": "1",
                                 "Restarts": "2"}, now=175.0)
    limit.trainers_starting(now=175.0)
    limit.report_resume()
    assert capsys.readouterr().out == ""  # no new step yet
    with open(os.path.join(out, "data_order", "rank0.jsonl"), "w") as f:
        f.write('{"global_step": 6, "row_ids": [1]}\n')
    limit.report_resume()
    assert capsys.readouterr().out.startswith("[requeue] restart 2 of job 7: ")
    records = [json.loads(line) for line in open(os.path.join(out, "requeue.jsonl"))]
    assert {k: records[-1][k] for k in ("restart", "save_s", "pending_s", "startup_s")} == {
        "restart": 2, "save_s": 12.0, "pending_s": 12.0, "startup_s": 50.0}


def test_a_run_that_reached_its_last_step_during_the_stop_is_not_requeued(tmp_path):
    for step, finished in ((8, True), (6, False)):
        checkpoint = tmp_path / f"checkpoint-{step}"
        checkpoint.mkdir()
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 8}))
        assert run_finished(str(checkpoint)) is finished


class _Accelerator:
    device = "cpu"

    @staticmethod
    def reduce(tensor, reduction):
        return tensor


def _step_end(callback, step: int, max_steps: int = 8):
    from transformers import TrainerControl, TrainerState

    state, control = TrainerState(), TrainerControl()
    state.global_step, state.max_steps = step, max_steps
    callback.on_step_end(None, state, control)
    return control.should_save, control.should_training_stop


def test_training_saves_and_stops_at_the_first_generation_boundary_after_the_request(tmp_path):
    out = str(tmp_path)
    callback = stop_callback(_Accelerator(), out, updates_per_step=2)
    assert _step_end(callback, 2) == (False, False)  # no request
    request_stop(out, "test")
    assert json.load(open(stop_path(out)))["why"] == "test"
    assert _step_end(callback, 3) == (False, False)  # inside a generation step: not yet
    assert callback.stopped_at is None
    assert _step_end(callback, 4) == (True, True)
    assert callback.stopped_at == 4
    assert _step_end(stop_callback(_Accelerator(), out, 2), 8) == (False, False)  # the last step ends the run anyway
    clear_stop_request(out)
    assert not os.path.exists(stop_path(out))


def test_supervise_leaves_sigusr1_to_the_launcher():
    """slurm/supervise.py does not pass SIGUSR1 on (`scancel --signal=USR1 JOB` without --batch reaches every step;
    torchrun's agent would die of it): the command keeps running; SIGTERM still stops it."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    sup = subprocess.Popen([sys.executable, os.path.join(ROOT, "slurm", "supervise.py"), "sleep", "30"])
    deadline = time.time() + 60
    while not int(open(f"/proc/{sup.pid}/status").read().split("SigIgn:\t")[1].split()[0], 16) & (1 << 9):
        assert time.time() < deadline  # SIGUSR1 (10) not yet ignored: the handlers are not installed yet
        time.sleep(0.1)
    sup.send_signal(signal.SIGUSR1)
    time.sleep(1.0)
    assert sup.poll() is None
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=30) == 143


@pytest.mark.slow
def test_a_requested_stop_saves_at_the_generation_boundary_and_the_relaunch_finishes(tiny_assets, tmp_path, capsys):
    """train_grpo.py with <output_dir>/stop_requested present: stops after generation step 1 (2 updates) with
    checkpoint-2 and no summary; the relaunch resumes there and draws each of the 3 steps' prompts once."""
    from test_train_grpo import tiny_argv
    import train_grpo as tg

    out = tmp_path / "run"
    argv = tiny_argv(tiny_assets, out, "--total_generation_steps", "3", "--prompts_per_step", "4",
                     "--per_device_train_batch_size", "16", "--heldout_file", "", "--validation_before_training",
                     "false", "--validation_every_generation_steps", "0", "--save_generation_steps", "10")
    request_stop(str(out), "test")
    assert "global_step" not in tg.main(argv)
    assert "[stop] stopped on request" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    clear_stop_request(str(out))  # as the launcher does at start
    assert tg.main(argv)["global_step"] == 6
    with open(out / "data_order" / "rank0.jsonl") as f:
        order = [json.loads(line) for line in f]
    assert [e["global_step"] for e in order] == [0, 2, 4]
    rows = [r for e in order for r in e["row_ids"]]
    assert len(rows) == len(set(rows)) == 12
