"""The job's time limit: before it, training saves at a generation step and stops, and a batch job submitted with
--requeue requeues itself and resumes there (issue 20). The supervisor (reasonrl/cluster/supervisor.py) calls
TimeLimit once a second; the training side of the stop is reasonrl/trainer/requeue.py; the arithmetic (durations,
the margin) is reasonrl/cluster/plan.py's. Not reasonrl/timelimit.py, which bounds one call.

    sbatch --time=48:00:00 slurm/justrl.sbatch        # stops 15 min before each limit, requeues, until the run is done
    scancel --batch --signal=USR1 <jobid>            # the same, now

Test: python -m pytest -q tests/test_requeue.py (the timing on literal job fields); the requeues on a real cluster:
tests/test_slurm.py -k kills_and_time_limits.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from reasonrl.cluster.plan import slurm_seconds, stop_margin_s
from reasonrl.run.plan import last_checkpoint
from reasonrl.trainer.requeue import clear_stop_request, request_stop


def job_fields(job_id: str) -> dict[str, str]:
    """`scontrol show job -o` as {key: value} (TimeLimit, RunTime, BatchFlag, Requeue, Restarts...)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def run_finished(checkpoint: str) -> bool:
    """Whether the checkpoint is the run's last step (its trainer_state.json: global_step reached max_steps)."""
    state = json.load(open(os.path.join(checkpoint, "trainer_state.json")))
    return state["global_step"] >= state["max_steps"]


class TimeLimit:
    """Outlive the job's time limit: `margin` seconds before it (stop_margin_s, or --stop_margin_s), or on SIGUSR1
    (`scancel --batch --signal=USR1 JOB`), ask training to save and stop at its next generation-step boundary
    (reasonrl/trainer/requeue.py), wait for the trainers to exit, stop the server, and requeue the job with `scontrol requeue`
    (a batch job submitted with --requeue, as slurm/justrl.sbatch is); otherwise exit 0 saying how to resume.
    Trainers that have not exited a third of the margin (at most 60 s) before the limit are stopped: the relaunch
    resumes from the newest complete checkpoint, losing the steps since it. The requeued job (SLURM_RESTART_COUNT
    > 0) prints the requeue's cost from the times in <output_dir>/requeue.jsonl."""

    def __init__(self, output_dir: str, job_id: str | None, fields: dict, margin_s: float | None = None,
                 now: float | None = None, read_every_s: float = 30.0):
        now = time.time() if now is None else now
        self.output_dir, self.job_id, self.signalled, self.fixed_margin_s = output_dir, job_id, False, margin_s
        self.job_start = now - (slurm_seconds(fields.get("RunTime", "0:0")) or 0)
        self.set_limit(fields.get("TimeLimit", ""))
        self.requeue = fields.get("BatchFlag") == "1" and fields.get("Requeue") == "1"
        self.restarts = int(fields.get("Restarts", os.environ.get("SLURM_RESTART_COUNT", "0")))
        self.log = os.path.join(output_dir, "requeue.jsonl")
        self.resume_noted = False
        self.resume = None  # a requeued job: {what the requeue cost so far, "watch": file whose growth is resumed work}
        self.read_every_s = read_every_s  # how often the limit is re-read: an administrator may change it
        self.next_read, self.start_checkpoint = now + read_every_s, last_checkpoint(output_dir)

    def set_limit(self, text: str) -> None:
        """The job's TimeLimit (scontrol's text) sets when to ask for the stop and how long to wait for it."""
        self.limit_text, limit = text, slurm_seconds(text)
        self.margin_s = (self.fixed_margin_s if self.fixed_margin_s is not None else stop_margin_s(limit)) if limit else None
        self.stop_at = self.job_start + limit - self.margin_s if limit else None
        self.exit_by = self.job_start + limit - min(60.0, self.margin_s / 3) if limit else None

    @classmethod
    def of_job(cls, output_dir: str, margin_s: float | None = None, read_every_s: float = 30.0) -> "TimeLimit":
        job = os.environ.get("SLURM_JOB_ID")
        limit = cls(output_dir, job, job_fields(job) if job and shutil.which("scontrol") else {}, margin_s,
                    read_every_s=read_every_s)
        if limit.stop_at:
            print(f"[launch] time limit in {limit.stop_at + limit.margin_s - time.time():.0f} s: training is asked "
                  f"to save and stop {limit.margin_s:.0f} s before it, then the job "
                  f"{'requeues itself' if limit.requeue else 'ends (not a batch job with --requeue: relaunch to resume)'}",
                  flush=True)
        clear_stop_request(output_dir)
        return limit

    def on_signal(self, signum, frame) -> None:
        self.signalled = True

    def trainers_starting(self, now: float | None = None) -> str | None:
        """Called when the server is healthy: a requeued job notes its start-up and watches for its first new step.
        Returns why the job cannot train when its stop is already due (the limit is shorter than the start-up)."""
        now = time.time() if now is None else now
        if self.stop_at is not None and now >= self.stop_at:
            return (f"the job's time limit ({self.limit_text}) leaves no time to train: the stop, {self.margin_s:.0f} s "
                    f"before it, is due {now - self.job_start:.0f} s into the job, before the trainers start. "
                    "Submit with a longer --time (or a smaller --stop_margin_s).")
        stops = [r for r in self._records() if "requeued" in r and r["restart"] == self.restarts - 1]
        if self.restarts and stops and not self.resume_noted:  # once: an in-job restart is not a requeue
            self.resume_noted = True
            stop, watch = stops[-1], os.path.join(self.output_dir, "data_order", "rank0.jsonl")
            self.resume = {"job": self.job_id, "restart": self.restarts, "checkpoint": stop["checkpoint"],
                           "save_s": stop["trainers_exited"] - stop["stop_requested"],
                           "pending_s": self.job_start - stop["requeued"], "startup_s": now - self.job_start,
                           "watch": watch, "size": os.path.getsize(watch) if os.path.exists(watch) else 0,
                           "trainers_started": now}
        return None

    def check(self, steps) -> None:
        """Once per second in the supervisor's attempt() (steps: its Steps): report a resume's cost once its first
        step is done; stop when it is time."""
        self.report_resume()
        # an administrator may change a running job's limit
        if self.job_id and shutil.which("scontrol") and time.time() >= self.next_read:
            self.next_read = time.time() + self.read_every_s
            text = job_fields(self.job_id).get("TimeLimit")
            if text and text != self.limit_text:
                print(f"[launch] the job's time limit changed from {self.limit_text} to {text}", flush=True)
                self.set_limit(text)
        if self.signalled or (self.stop_at is not None and time.time() >= self.stop_at):
            self.stop_and_requeue(steps)

    def report_resume(self) -> None:
        """A requeued job: once its first new generation step is logged, print and record what the requeue cost."""
        r = self.resume
        if r and os.path.exists(r["watch"]) and os.path.getsize(r["watch"]) > r["size"]:
            r["resume_s"] = time.time() - r.pop("trainers_started")
            total = r["save_s"] + r["pending_s"] + r["startup_s"] + r["resume_s"]
            print(f"[requeue] restart {r['restart']} of job {r['job']}: {total:.0f} s from the stop request to the "
                  f"first new generation step: save {r['save_s']:.0f} s (the step in progress, the checkpoint, exits), "
                  f"pending {r['pending_s']:.0f} s, start-up {r['startup_s']:.0f} s (job start to healthy server), "
                  f"resume {r['resume_s']:.0f} s (trainers' start-up from {r['checkpoint']} to their first step)",
                  flush=True)
            self._append({k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()
                          if k not in ("watch", "size")})
            self.resume = None

    def stop_and_requeue(self, steps) -> None:
        why = "SIGUSR1" if self.signalled else f"time limit in {self.stop_at + self.margin_s - time.time():.0f} s"
        record = {"job": self.job_id, "restart": self.restarts, "why": why, "stop_requested": time.time()}
        request_stop(self.output_dir, why)
        exit_by = self.exit_by if self.exit_by and not self.signalled else time.time() + 600
        print(f"[launch] {why}: training asked to save and stop at its next generation step "
              f"(waiting until {exit_by - time.time():.0f} s from now)", flush=True)
        trainers = {name: proc for name, (proc, node) in steps.running.items() if node["role"] == "train"}
        while any(p.poll() is None for p in trainers.values()) and time.time() < exit_by:
            self.report_resume()  # a requeued job whose first new step ends during the stop
            time.sleep(0.5)
        codes = {name: p.poll() for name, p in trainers.items()}
        record["trainers_exited"] = time.time()
        steps.stop_all(grace_s=15)
        checkpoint = last_checkpoint(self.output_dir)
        record["checkpoint"] = checkpoint
        if checkpoint and all(c == 0 for c in codes.values()) and run_finished(checkpoint):
            print("[launch] training reached its last step during the stop: not requeued", flush=True)
            return
        if any(c != 0 for c in codes.values()):
            print(f"[launch] trainers did not all stop cleanly ({codes}; None: still running at the deadline, "
                  "stopped): the relaunch resumes from the newest complete checkpoint", flush=True)
        if checkpoint == self.start_checkpoint:  # requeued, it would repeat this job and fail the same way
            self._append(record)
            sys.exit(f"[launch] FAILED: no checkpoint was written in this job before its time limit (still "
                     f"{checkpoint or 'none'}); not requeued. Submit with a longer --time.")
        if not self.requeue:
            self._append(record)
            print(f"[launch] stopped before the time limit; last checkpoint {checkpoint}. Relaunch the same command "
                  "to resume (a batch job submitted with --requeue requeues itself).", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the requeue ends this job's batch step
        record["requeued"] = time.time()
        self._append(record)
        out = subprocess.run(["scontrol", "requeue", self.job_id], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"[launch] scontrol requeue {self.job_id} failed: {out.stderr.strip()}; last checkpoint "
                     f"{checkpoint}. Resubmit to resume.")
        print(f"[launch] requeued job {self.job_id} (restart {self.restarts + 1}); it resumes from {checkpoint}",
              flush=True)
        sys.exit(0)

    def _records(self) -> list[dict]:
        try:
            return [json.loads(line) for line in open(self.log) if line.strip()]
        except OSError:
            return []

    def _append(self, record: dict) -> None:
        with open(self.log, "a") as f:
            f.write(json.dumps(record) + "\n")
