"""Run the plan (reasonrl/cluster/plan.py) as Slurm job steps and watch them until training is done: the vLLM server's
step first, until its /health answers, then one step per training node (`srun`, each under slurm/supervise.py, so
no process a step started, vLLM's engine or torchrun's workers, outlives it). launch_slurm.py calls `run`; the time
limit's stop and requeue is reasonrl/cluster/timelimit.py's.

Faults: every job step is watched once a second. When any step exits non-zero (a killed rank, a dead node, a reward
past its time limit) or the server exits, every other step is cancelled at once (SIGTERM, then SIGKILL after the
cluster's KillWait), so no rank waits in a collective for its 30-minute watchdog. The launcher then exits non-zero
naming the node, the rank, the exit code, the step's log and the last checkpoint. The server's /health is also
polled during training (a hung server, or one dead inside a step that has not ended). A server that exits before it
is healthy is reported at once; one that never gets healthy after --server_timeout_s. Relaunching the same command
starts a fresh server and resumes every process from the newest complete checkpoint, with the same data order.

Restarts (--max_restarts K): the launcher does that relaunch itself, in the same allocation, up to K times: a
`[launch] RESTART` line names the cause, a later line its cost (from the failure seen to the first generation step
after the resume), and the last line lists them all. A node blamed for two faults in a row is not restarted on
(restart_refusal: the job stops naming it, for `sbatch --exclude`). Every step's log is appended to, each attempt
under an `[launch] attempt N` line.

One job step per training node, not one `srun -N<n> --ntasks-per-node=1 --kill-on-bad-exit=1` step for all of them
(issue 22). Each step's `srun` has --kill-on-bad-exit=1 too, but one task, so it ends only its own step. With one
step, Slurm would end the other training tasks when one exits non-zero; here the launcher does it, at most a poll
(1 s) after the step exits, with `scancel` of every step (tests/test_slurm.py: every step stopped and the
restart announced less than 60 s after a SIGKILL, 3.5-4 s measured). One step would keep that, the server's step
(another node, another command, healthy before the trainers start: it stays a step of its own, watched and cancelled
here as now), the /health checks, the time-limit stop and the restarts. It would lose, as the steps run today, what
the fault tests assert:
  - which node died. The cause names the node, its host and torchrun's rank ("training node 1 (node2): rank 1 (local
    rank 0), exit code -9 (SIGKILL)": tests/test_slurm.py, tests/test_launch_restarts.py); here the step that ended
    is the node. One step's exit code says only that a task failed; the node would have to be read from srun's
    "srun: error: node2: task 1: Exited with exit code 1" line or from whichever task's log holds torchrun's summary.
  - the node refused after two faults in a row (restart_refusal) needs that host too.
  - one log per node, each attempt under its `[launch] attempt N` line (tests/test_slurm.py reads attempts 1, 2, 3, 1,
    2, 1 in train1-node2.log): one step writes every task to one output, unless `srun --output=train%t-%N.log
    --open-mode=append`, with each attempt's line written into every task's file before the step starts.
  - the literal per-node commands: the nodes' `accelerate launch` differ in --machine_rank, and one step runs one
    command, so the rank would come from $SLURM_NODEID inside a shell, and the plan (the dry run, node_commands'
    tests) would print one template instead of each node's command.
What it would take: those four, and tests/test_launch_restarts.py's stand-in `srun` running one task per node. What it
would gain: the other training tasks end when Slurm sees the exit instead of up to a second later.

The failed rank comes from torchrun's failure summary in the node's log (failed_rank, a regular expression), not
from torch elastic's error files (TORCHELASTIC_ERROR_FILE), for three reasons:
  - the rank is not in the file. A worker whose entry point is decorated with
    torch.distributed.elastic.multiprocessing.errors.record writes its Python exception there (message, traceback,
    timestamp); the rank is only in the file's path (<log_dir>/<run id>_<random>/attempt_<n>/<local rank>/error.json)
    and in torchrun's summary, which already prints the file's traceback when there is one.
  - the file is on the training node, not where the launcher runs: torchrun's log_dir defaults to a fresh
    tempfile.mkdtemp() in that node's /tmp, and `accelerate launch` hands torchrun its own --log_dir (default None,
    which overrides PET_LOG_DIR), so the files reach the shared output_dir only with --log_dir in every node's
    command: a change of the plan and of the dry run.
  - a killed worker writes none (SIGKILL, as tests/test_slurm.py kills rank 1; the kernel's OOM killer; a dead
    node), so the summary is read in any case.
What it would take: @record on train_grpo.py's main (it then returns None on SystemExit(0) and enables faulthandler
in every caller, tests included), `--log_dir <log_dir>/elastic-train<rank>-<host>` in node_commands, and here the
newest run folder's error files: the earliest timestamp, its local rank from the path, the global rank as machine
rank x processes per node + local rank, the exception's message for the cause; the regular expression for a killed
rank.

Test: python -m pytest -q tests/test_launch_restarts.py (the restart loop through a stand-in `srun`, seconds); the
real cluster: tests/test_slurm.py.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request

from reasonrl.cluster.plan import restart_refusal, srun_command
from reasonrl.cluster.timelimit import TimeLimit
from reasonrl.run.plan import last_checkpoint


def failed_rank(log_path: str, start: int = 0) -> str | None:
    """What torch.distributed.run printed about the first failed process ("rank 1 (local_rank 0), exit code -9"),
    read from byte `start` on (a log holds every attempt's output: only the last attempt's failure counts). Not from
    torch elastic's error files: the module's docstring says why."""
    try:
        with open(log_path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")[-200_000:]
    except OSError:
        return None
    rank = re.search(r"rank\s*:\s*(\d+) \(local_rank: (\d+)\)", text)
    code = re.search(r"exitcode\s*:\s*(-?\d+)", text)
    if not rank:
        return None
    signal_name = ""
    if code and int(code.group(1)) < 0:
        try:
            signal_name = f" ({signal.Signals(-int(code.group(1))).name})"
        except ValueError:
            pass
    return (f"rank {rank.group(1)} (local rank {rank.group(2)})"
            + (f", exit code {code.group(1)}{signal_name}" if code else ""))


def tail(path: str, lines: int = 25, start: int = 0) -> str:
    """The last `lines` lines of a log, from byte `start` on."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return "".join(f.read().decode(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError as error:
        return f"(no log: {error})"


# Every step's command runs under slurm/supervise.py: nothing it starts outlives it, whatever kills it.
SUPERVISE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "slurm", "supervise.py"))


class Steps:
    """The job steps this launcher started (one `srun` per node), watched and cancelled together."""

    def __init__(self, workdir: str):
        self.workdir, self.running = workdir, {}  # name -> (Popen, node dict)
        self.attempt, self.log_start = 1, {}  # log path -> byte where this attempt's output begins (logs are appended)

    def start(self, node: dict, env: dict | None = None) -> None:
        name = f"{node['role']}{'' if node['rank'] is None else node['rank']}"
        os.makedirs(os.path.dirname(os.path.abspath(node["log"])), exist_ok=True)
        log = open(node["log"], "ab+")
        self.log_start[node["log"]] = log.tell()
        log.seek(max(log.tell() - 1, 0))
        newline = b"" if log.read(1) in (b"", b"\n") else b"\n"  # a killed process may have cut its last line
        log.write(newline + f"[launch] attempt {self.attempt}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        cmd = srun_command(node, name) + [
            "bash", "-c", f"cd {shlex.quote(self.workdir)} && exec {shlex.quote(sys.executable)} "
                          f"{shlex.quote(SUPERVISE)} env {node['command']}"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        log.close()
        self.running[name] = (proc, node)
        print(f"[launch] {node['host']}: {'vLLM server' if node['role'] == 'vllm' else 'training node ' + str(node['rank'])}"
              f" -> log {node['log']}\n[launch]   {node['command']}", flush=True)

    def poll(self) -> tuple[str, int, dict] | None:
        """(name, exit code, node) of a step that has ended, removed from the running ones; None if none has."""
        for name, (proc, node) in list(self.running.items()):
            code = proc.poll()
            if code is not None:
                del self.running[name]
                return name, code, node
        return None

    def stop_all(self, grace_s: float = 30.0) -> None:
        """Cancel every running step: `scancel` of its step id where known (SIGTERM to every process of the step,
        SIGKILL after KillWait), SIGTERM to its srun otherwise; srun's left after grace_s are killed."""
        if not self.running:
            return
        job = os.environ.get("SLURM_JOB_ID")
        step_ids = {}
        if job:
            out = subprocess.run(["squeue", "-h", "-s", "-j", job, "-o", "%i %j"], capture_output=True, text=True)
            step_ids = {name: sid for sid, name in (line.split(maxsplit=1) for line in out.stdout.splitlines()
                                                    if len(line.split()) == 2)}
        for name, (proc, _) in self.running.items():
            if name in step_ids:
                subprocess.run(["scancel", "--quiet", step_ids[name]])
            else:
                proc.send_signal(signal.SIGTERM)
        deadline = time.time() + grace_s
        for name, (proc, _) in self.running.items():
            try:
                proc.wait(timeout=max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.running.clear()


def wait_for_server(steps: Steps, name: str, url: str, timeout_s: float) -> float:
    """Seconds until `url`/health/ answers 200; fails at once if the server's step exits, or after timeout_s."""
    start = time.time()
    proc, node = steps.running[name]
    log_start = steps.log_start.get(node["log"], 0)  # this attempt's part of the log
    while time.time() - start < timeout_s:
        code = proc.poll()
        if code is not None:
            del steps.running[name]
            raise RuntimeError(f"the vLLM server on {node['host']} exited with code {code} before it was healthy "
                               f"({time.time() - start:.0f} s); last lines of {node['log']}:\n{tail(node['log'], start=log_start)}")
        try:
            with urllib.request.urlopen(f"{url}/health/", timeout=5) as response:
                if response.status == 200:
                    return time.time() - start
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"the vLLM server on {node['host']} was not healthy at {url} after {timeout_s:.0f} s "
                       f"(--server_timeout_s); last lines of {node['log']}:\n{tail(node['log'], start=log_start)}")


def healthy(url: str, timeout_s: float = 10.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health/", timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


class Fault(Exception):
    """A job step died, or the server stopped answering: what died (`cause`, one line), the node blamed, and the
    last lines of that step's log from this attempt (`details`)."""

    def __init__(self, cause: str, host: str, details: str = "", restartable: bool = True):
        super().__init__(cause + (f". {details}" if details else ""))
        self.cause, self.host, self.restartable = cause, host, restartable


def data_order_lines(output_dir: str) -> int:
    """Generation steps recorded so far in <output_dir>/data_order/ (train_grpo.py appends one line per step and
    rank): a count that grows once training runs again after a restart."""
    folder = os.path.join(output_dir, "data_order")
    try:
        return sum(open(os.path.join(folder, name), "rb").read().count(b"\n") for name in os.listdir(folder))
    except OSError:
        return 0


def attempt(steps: Steps, plan: list[dict], server_url: str | None, server_timeout_s: float, poll_s: float,
            health_every_s: float, health_failures: int, restart: dict | None = None,
            limit: "TimeLimit | None" = None) -> None:
    """Start the server, wait for it, start the trainers and watch them all until every trainer has finished.
    Raises Fault for the first step that dies. restart: the restart this attempt follows; its costs are filled in
    (`server_s`, `first_step_s` from the trainers' start to the first generation step seen) and printed."""
    server = next((n for n in plan if n["role"] == "vllm"), None)

    def last_lines(node: dict) -> str:
        return f"Last lines of {node['log']}:\n{tail(node['log'], start=steps.log_start.get(node['log'], 0))}"

    if server:
        steps.start(server)
        try:
            seconds = wait_for_server(steps, "vllm", server_url, server_timeout_s)
        except RuntimeError as error:
            cause, _, details = str(error).partition("; last lines of ")
            raise Fault(cause, server["host"], "Last lines of " + details) from None
        print(f"[launch] vLLM server healthy at {server_url} after {seconds:.0f} s", flush=True)
        if restart:
            restart["server_s"] = seconds
    if limit and (too_short := limit.trainers_starting()):  # time limit: no time left to train
        raise Fault(too_short, "", restartable=False)
    for node in plan:
        if node["role"] == "train":
            steps.start(node)
    trainers_started = time.time()
    failures, next_check = 0, time.time() + health_every_s
    while any(n["role"] == "train" for _, n in steps.running.values()):
        if limit:
            limit.check(steps)  # time limit: past the margin (or on SIGUSR1) training saves and stops; requeue, exit
        if restart and "first_step_s" not in restart and data_order_lines(restart["output_dir"]) > restart["lines"]:
            restart["first_step_s"] = time.time() - trainers_started
            print(f"[launch] restart {restart['number']} cost {restart_cost(restart):.0f} s from the failure seen to "
                  f"the first generation step after the resume: stop {restart['stop_s']:.0f} s, server start "
                  f"{restart.get('server_s', 0):.0f} s, trainer start-up to that step {restart['first_step_s']:.0f} s",
                  flush=True)
        if server and time.time() >= next_check:
            failures = 0 if healthy(server_url) else failures + 1
            next_check = time.time() + health_every_s
            if failures >= health_failures:
                raise Fault(f"the vLLM server on {server['host']} stopped answering {server_url}/health ({failures} "
                            f"checks in a row, {health_every_s:g} s apart)", server["host"], last_lines(server))
        ended = steps.poll()
        if ended is None:
            time.sleep(poll_s)
            continue
        name, code, node = ended
        if node["role"] == "vllm":
            raise Fault(f"the vLLM server on {node['host']} exited with code {code} during training", node["host"],
                        last_lines(node))
        if code != 0:
            which = failed_rank(node["log"], steps.log_start.get(node["log"], 0)) or "a process (no rank reported)"
            cause = f"training node {node['rank']} ({node['host']}): {which}; its job step exited with code {code}"
            if server and not healthy(server_url, 5.0):  # a trainer that failed on a dead server: the server first
                raise Fault(f"the vLLM server on {server['host']} is not answering {server_url}/health, and {cause}",
                            server["host"], last_lines(node))
            raise Fault(cause, node["host"], last_lines(node))
        print(f"[launch] training node {node['rank']} ({node['host']}) finished", flush=True)


def restart_cost(restart: dict) -> float:
    """Seconds from the failure seen to the first generation step after the resume (stop + server + trainers)."""
    return restart["stop_s"] + restart.get("server_s", 0) + restart.get("first_step_s", float("nan"))


def run(plan: list[dict], output_dir: str, server_url: str | None, server_timeout_s: float, max_restarts: int = 0,
        poll_s: float = 1.0, health_every_s: float = 5.0, health_failures: int = 3,
        stop_margin_s: float | None = None, time_limit_read_s: float = 30.0) -> list[dict]:
    """Start the server, wait for it, start the trainers, and watch them all until they finish; returns the restarts.

    During training the server's /health is also checked every health_every_s: `health_failures` failures in a row
    (a server process dead inside a step that has not ended yet, or hung) count as a dead server. A fault stops
    every step; up to max_restarts times (unless the same node failed just before) the whole job restarts in the
    allocation: a fresh server, every trainer resuming from the newest complete checkpoint (train_grpo.py finds it in
    output_dir). Each restart prints a line with its cause, then one with its cost; the last line sums them up."""
    steps = Steps(os.getcwd())
    started, restarts = time.time(), []

    def fail(message: str) -> None:
        t = time.time()
        steps.stop_all()
        checkpoint = last_checkpoint(output_dir)
        sys.exit(f"[launch] FAILED: {message}\n[launch] every other job step was stopped "
                 f"({time.time() - t:.0f} s after the failure was seen, {t - started:.0f} s into the run). "
                 f"Last checkpoint: {checkpoint or 'none yet (a relaunch starts over)'}. "
                 "Relaunch the same command to resume from it." + restart_summary(restarts))

    signal.signal(signal.SIGTERM, lambda *_: fail("the launcher received SIGTERM (job cancelled or time limit)"))
    # time limit: save, stop, requeue (not a failure)
    limit = TimeLimit.of_job(output_dir, stop_margin_s, time_limit_read_s)
    signal.signal(signal.SIGUSR1, limit.on_signal)
    try:
        restart = None
        while True:
            try:
                attempt(steps, plan, server_url, server_timeout_s, poll_s, health_every_s, health_failures, restart,
                        limit)
                break
            except Fault as fault:
                seen = time.time()
                refusal = (restart_refusal(fault.host, [r["host"] for r in restarts], max_restarts)
                           if fault.restartable else "")
                if refusal is not None:
                    fail(f"{fault}\n[launch] {refusal}" if refusal else str(fault))
                steps.stop_all()
                cause = fault.cause
                restart = {"number": len(restarts) + 1, "host": fault.host, "cause": cause, "output_dir": output_dir,
                           "stop_s": time.time() - seen, "lines": data_order_lines(output_dir)}
                restarts.append(restart)
                checkpoint = last_checkpoint(output_dir)
                print(f"[launch] RESTART {restart['number']} of at most {max_restarts} (--max_restarts): {cause}\n"
                      f"[launch]   every step stopped in {restart['stop_s']:.1f} s; "
                      f"{'a fresh server, and ' if server_url else ''}every trainer resumes from "
                      f"{checkpoint or 'the start (no checkpoint yet)'}", flush=True)
                steps.attempt += 1
    finally:
        steps.stop_all()
    print(f"[launch] done in {time.time() - started:.0f} s; outputs in {output_dir}" + restart_summary(restarts),
          flush=True)
    return restarts


def restart_summary(restarts: list[dict]) -> str:
    """The restarts of this launch, one line each with its cause and cost ("" when there were none)."""
    if not restarts:
        return ""
    lines = [f"\n[launch] {len(restarts)} restart(s), "
             f"{sum(restart_cost(r) for r in restarts if 'first_step_s' in r):.0f} s lost to them in all:"]
    for r in restarts:
        cost = f"{restart_cost(r):.0f} s" if "first_step_s" in r else "cost unknown (no generation step after it)"
        lines.append(f"[launch]   {r['number']}. {r['cause']}: {cost}")
    return "\n".join(lines)
