"""launch_slurm.py on a real Slurm cluster: 3 nodes on this machine (scripts/slurm_local.sh), CPU nodes, reasonrl/demo/tiny.py's model.

    python -m pytest tests/test_slurm.py -q        # needs root (apt-get, slurmd)

JustRL's topology (2 training nodes with Accelerate's multi-machine rendezvous + 1 node serving `trl vllm-serve`)
learns. The long run: a batch job (slurm/justrl.sbatch, --max_restarts 3, --requeue) meets what two weeks on a
cluster bring, at seeded random moments: a training process, the server and a training process again SIGKILLed
(the launcher stops every step within seconds, restarts in its allocation, prints cause and cost) and two time limits
(the test cuts the job's real Slurm TimeLimit with `scontrol update`; training saves, the launcher requeues the job
and prints the requeue's cost); it finishes with the uninterrupted run's data order. A server that never gets healthy
stops the launcher after --server_timeout_s; ZeRO-3 across the two training nodes and --no_vllm_node run.
(Without --max_restarts a fault stops the job naming what died: tests/test_launch_restarts.py.)
After every launch no process of the job is left. Skipped where Slurm cannot be installed, except under CI, where
that fails (tests/conftest.py).
"""

import json
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, require
from test_vllm import assert_validation_curve

pytestmark = pytest.mark.slow
STEPS = 20           # generation steps of the uninterrupted run (30 gave 64.5% -> 92.0% held-out)
KILLED_STEPS = 12    # generation steps of the long run (its data order is the first 12 of the one above)


def _free_base_port(count: int) -> int:
    """A base port p with p .. p+count free on 127.0.0.1 (slurmctld + one slurmd per node)."""
    for base in range(17817, 30000, 50):
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports for the local Slurm cluster")


CLUSTER_CONF = [None]  # the test cluster's slurm.conf, set by the fixture


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    can_install = os.geteuid() == 0 and shutil.which("apt-get")
    require(shutil.which("srun") is not None or bool(can_install), "Slurm is not installed and cannot be (needs root)")
    directory = str(tmp_path_factory.mktemp("slurm"))
    env = dict(os.environ, SLURM_LOCAL_DIR=directory, SLURM_LOCAL_PORT=str(_free_base_port(4)))
    up = subprocess.run(["bash", "scripts/slurm_local.sh", "up", "3"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert up.returncode == 0, up.stdout + up.stderr
    env["SLURM_CONF"] = os.path.join(directory, "etc", "slurm.conf")
    CLUSTER_CONF[:] = [env["SLURM_CONF"]]
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("SLURM_JOB_ID", None)
    yield env
    down = subprocess.run(["bash", "scripts/slurm_local.sh", "down"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.time() + 15  # a daemon SIGKILLed by `down` may take a moment to disappear
    while (pids := [line.split()[0] for line in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True,
                                                              text=True).stdout.splitlines() if directory in line]):
        if time.time() > deadline:
            break
        time.sleep(0.5)
    assert not pids, f"daemons left after slurm_local.sh down: {pids}"


@pytest.fixture(scope="module")
def recipe(tiny_assets, tmp_path_factory):
    """recipes/tiny.yaml on the test session's tiny assets, saving every 2 generation steps."""
    config = yaml.safe_load(open(os.path.join(ROOT, "recipes", "tiny.yaml")))
    config.update(prepare_kwargs={"tiny_dir": os.path.dirname(tiny_assets["model"])}, model_name_or_path=tiny_assets["model"],
                  dataset_name=tiny_assets["train"], heldout_file=tiny_assets["test"], save_generation_steps=2,
                  logging_steps=1, report_to=[], log_completions=False)
    path = tmp_path_factory.mktemp("recipe") / "tiny_slurm.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def job_processes(job_id: str, conf: str | None = None) -> list[tuple[int, str, dict]]:
    """(pid, command line, environment) of every process on this machine that belongs to Slurm job `job_id` of the
    cluster whose config is `conf` (default: the test cluster's; job ids restart at 1 with every cluster)."""
    conf = conf or CLUSTER_CONF[0]
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        env = dict(item.decode(errors="replace").split("=", 1) for item in environ if b"=" in item)
        if env.get("SLURM_JOB_ID") == job_id and env.get("SLURM_CONF") == conf:
            found.append((int(pid), cmdline, env))
    return found


def listener(port: int) -> int:
    """The PID of the process listening on TCP `port` (from /proc/net/tcp and each process's sockets)."""
    inodes = {line.split()[9] for line in open("/proc/net/tcp").readlines()[1:]
              if line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == port}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in {f"socket:[{inode}]" for inode in inodes}:
                    return int(pid)
            except OSError:  # closed meanwhile
                continue
    raise AssertionError(f"nothing listens on port {port}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORTS = ["--vllm_port", str(_free_port()), "--main_port", str(_free_port())]  # not 8000/29500: may be taken here
RUNNING = []  # launches a failed test may leave running; stopped after each test


@pytest.fixture(autouse=True)
def stop_leftover_launches():
    yield
    while RUNNING:
        launch = RUNNING.pop()
        if launch.batch:  # the batch job outlives its `sbatch --wait`
            subprocess.run(["scancel", "--name", launch.name], env=launch.env)
        if launch.proc.poll() is None:  # SIGTERM: salloc gives the allocation back, the launcher cancels its steps
            os.killpg(launch.proc.pid, signal.SIGTERM)
            try:
                launch.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(launch.proc.pid, signal.SIGKILL)
                launch.proc.wait()


class Launch:
    """`salloc -N<nodes> python launch_slurm.py ...` in the background, its output in a file; with batch,
    `sbatch --wait -N<nodes> slurm/justrl.sbatch ...` (job name `name`, the job's output in that file)."""

    def __init__(self, env, tmp_path, name, *args, nodes: int = 3, batch: bool = False, time_min: int | None = None):
        self.log_path, self.name, self.env, self.batch = tmp_path / f"{name}.log", name, env, batch
        self.log = open(tmp_path / f"{name}.sbatch.log" if batch else self.log_path, "w")
        if "--" in args:  # launcher options before the recipe's
            args = args[:args.index("--")] + tuple(PORTS) + args[args.index("--"):]
        limit = [f"--time={time_min}"] if time_min else []
        cmd = (["sbatch", "--wait", f"-N{nodes}", "--gpus-per-node=0", f"--job-name={name}", f"--output={self.log_path}",
                *limit, "slurm/justrl.sbatch", *args] if batch else ["salloc", f"-N{nodes}", sys.executable, "launch_slurm.py", *args])
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.job_id = None
        RUNNING.append(self)

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def job(self) -> str:
        deadline = time.time() + 60
        while self.job_id is None and time.time() < deadline:
            if self.batch:
                self.job_id = subprocess.run(["squeue", "-h", "--name", self.name, "-o", "%i"], env=self.env,
                                             capture_output=True, text=True).stdout.strip() or None
            else:
                match = re.search(r"Granted job allocation (\d+)", self.output())
                self.job_id = match.group(1) if match else None
            time.sleep(0.2)
        assert self.job_id, self.output()
        return self.job_id

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"launcher still running after {timeout_s} s:\n{self.output()[-5000:]}")
        finally:
            self.log.close()

    def assert_nothing_left(self) -> None:
        deadline = time.time() + 20  # slurmd reaps a cancelled step's processes after KillWait (5 s)
        while (left := job_processes(self.job())) and time.time() < deadline:
            time.sleep(0.5)
        assert not left, f"processes of job {self.job_id} left running: {[(p, c[:120]) for p, c, _ in left]}"


def wait_for(predicate, timeout_s: float, what: str, launch: Launch):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        assert launch.proc.poll() is None, f"launcher ended while waiting for {what}:\n{launch.output()[-5000:]}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{launch.output()[-5000:]}")


def checkpoint_done(out, updates: int) -> bool:
    return os.path.isfile(os.path.join(out, f"checkpoint-{updates}", "trainer_state.json"))


def data_order(out) -> dict[int, dict[int, list]]:
    """{rank: {global_step: row_ids}} from <out>/data_order/, checking that a step redone after a resume (its first
    try was lost with the killed run) drew exactly the same rows."""
    orders = {}
    for name in sorted(os.listdir(os.path.join(out, "data_order"))):
        rank = int(re.fullmatch(r"rank(\d+)\.jsonl", name).group(1))
        steps = orders.setdefault(rank, {})
        for line in open(os.path.join(out, "data_order", name)):
            entry = json.loads(line)
            previous = steps.setdefault(entry["global_step"], entry["row_ids"])
            assert previous == entry["row_ids"], f"rank {rank} step {entry['global_step']} drew other rows on resume"
    return orders


@pytest.fixture(scope="module")
def uninterrupted(cluster, recipe, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    out = str(tmp / "run")
    launch = Launch(cluster, tmp, "launch", "--config", recipe, "--",
                    "--output_dir", out, "--total_generation_steps", str(STEPS))
    code = launch.wait(1500)
    launch.assert_nothing_left()
    return {"code": code, "output": launch.output(), "out": out}


def test_justrl_topology_runs_and_learns(uninterrupted):
    text = uninterrupted["output"]
    assert uninterrupted["code"] == 0, text[-5000:]
    out = uninterrupted["out"]
    # the launcher says what runs on each node and where its log is
    assert f"node3: vLLM server -> log {out}/logs/vllm-node3.log" in text
    assert f"node1: training node 0 -> log {out}/logs/train0-node1.log" in text
    assert f"node2: training node 1 -> log {out}/logs/train1-node2.log" in text
    assert "--num_machines 2 --machine_rank 1 --main_process_ip 127.0.0.1" in text
    # no chunked prefill (validation's seeded requests); context 64 + max(32, validation's 40) tokens
    assert "--dtype float32 --enforce_eager true --no-enable-chunked-prefill --max_model_len 104" in text
    summary = json.load(open(os.path.join(out, "summary.json")))
    print(f"[slurm] held-out greedy accuracy {summary['accuracy_before']:.3f} -> {summary['accuracy_after']:.3f} "
          f"after {STEPS} generation steps")
    assert summary["global_step"] == 2 * STEPS
    assert summary["accuracy_after"] - summary["accuracy_before"] >= 0.10, summary
    # both processes generated through the server, whose weights the trainer synced every step
    server_log = open(os.path.join(out, "logs", "vllm-node3.log")).read()
    assert server_log.count("POST /collective_rpc HTTP/1.1\" 200") >= STEPS
    orders = data_order(out)
    assert sorted(orders) == [0, 1] and all(len(steps) == STEPS for steps in orders.values())
    # tiny.yaml validates its held-out split before training and at the last step, through the server, after the
    # weight sync; both ranks graded their half (800 samples)
    assert_validation_curve(pathlib.Path(out), "vllm_server", steps=(0, STEPS))
    assert open(os.path.join(out, "logs", "train0-node1.log")).read().count(
        "[vllm] no CUDA: weights reach the vLLM server") == 1


KILL_SEED = 20        # the random moments of the long run's events
LIMIT_MIN = 15        # the job's --time: generous, cut to "stop now" by the test at a time-limit event
# what befalls the long run, in order, each once its current run has trained a generation step: a training process,
# the server and a training process again SIGKILLed (restarts in the allocation; never one node twice in a row,
# which stops the job: restart_refusal) and two time limits (requeues of the batch job)
EVENTS = ["rank 1", "server", "time limit", "rank 1", "time limit"]


def rank_process(job: str, rank: int) -> list[int]:
    """The PID of training rank `rank` of Slurm job `job` (torchrun's worker, not the agent), as a list."""
    return [pid for pid, cmd, env in job_processes(job)
            if env.get("RANK") == str(rank) and "TORCHELASTIC_RUN_ID" in env and "train_grpo.py" in cmd
            and "accelerate" not in cmd.split()[0]]


def data_order_lines(out) -> int:
    folder = os.path.join(out, "data_order")
    return sum(open(os.path.join(folder, n)).read().count("\n") for n in os.listdir(folder)) if os.path.isdir(folder) else 0


def resumed_runs(text: str) -> int:
    """How many restarts and requeues of the job's output were followed by a generation step (their cost lines)."""
    return len(re.findall(r"^\[(?:launch\] restart \d cost|requeue\] restart \d of job) ", text, re.M))


def job_state(env, job: str) -> dict[str, str]:
    """`scontrol show job -o JOB` of the test cluster as {key: value} (JobState, Restarts, RunTime, TimeLimit...)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def set_time_limit(env, job: str, minutes: int) -> None:
    done = subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={minutes}"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_kills_and_time_limits_in_one_run_restart_requeue_and_finish_with_the_uninterrupted_data_order(
        cluster, recipe, uninterrupted, tmp_path):
    """One batch job (slurm/justrl.sbatch: --max_restarts 3, --requeue) of 12 generation steps meets EVENTS, each at a
    seeded random moment after its current run has drawn a generation step (the first after checkpoint-4, so that every
    restart and requeue resumes from a checkpoint). A kill: the launcher stops every step, starts a fresh server and
    resumes every trainer in the same allocation. A time limit: the test cuts the job's real Slurm TimeLimit (`scontrol
    update`) so that the launcher's stop (--stop_margin_s 180 before it, the limit re-read every 2 s) is due now;
    training saves and stops, the launcher requeues the job, and the test gives the requeued job its 15 minutes back (a
    requeued job keeps the limit it had). The run finishes with the data order of the uninterrupted run, every rank,
    step for step."""
    assert uninterrupted["code"] == 0
    out = str(tmp_path / "run")
    launch = Launch(cluster, tmp_path, "long_run", "--stop_margin_s", "180", "--time_limit_read_s", "2", "--config",
                    recipe, "--", "--output_dir", out, "--total_generation_steps", str(KILLED_STEPS), batch=True,
                    time_min=LIMIT_MIN)
    job = launch.job()
    rng = random.Random(KILL_SEED)
    requeues = 0
    for i, event in enumerate(EVENTS):
        if i == 0:  # from a checkpoint on, every restart and requeue resumes from one
            wait_for(lambda: checkpoint_done(out, 4), 600, "checkpoint-4", launch)
        else:
            wait_for(lambda: resumed_runs(launch.output()) >= i, 600, f"a generation step before event {i + 1}",
                     launch)
        time.sleep(rng.uniform(0.0, 2.0))
        if event == "time limit":
            elapsed = sum(int(x) * 60 ** k for k, x in enumerate(reversed(job_state(cluster, job)["RunTime"].split(":"))))
            # stop due now (limit - 180 s <= elapsed) and Slurm's own end >= 2 min away (the save fits before it)
            set_time_limit(cluster, job, -(-(elapsed + 120) // 60))
            requeues += 1
            wait_for(lambda: job_state(cluster, job).get("Restarts") == str(requeues), 300, f"requeue {requeues}",
                     launch)
            set_time_limit(cluster, job, LIMIT_MIN)
            continue
        restarts = launch.output().count("[launch] RESTART ")
        pids = rank_process(job, 1) if event == "rank 1" else [listener(int(PORTS[1]))]
        assert len(pids) == 1, (event, job_processes(job))
        os.kill(pids[0], signal.SIGKILL)
        killed_at = time.time()
        wait_for(lambda: launch.output().count("[launch] RESTART ") > restarts, 120, f"the restart after {event}",
                 launch)
        seen_s = time.time() - killed_at
        print(f"[slurm] {event} killed: every step stopped and the restart announced {seen_s:.1f} s later")
        assert seen_s < 60  # a dead rank or server never leaves the others waiting on a collective
    assert launch.wait(900) == 0, launch.output()[-5000:]
    final = job_state(cluster, job)
    assert (final["JobState"], final["ExitCode"], final["Restarts"]) == ("COMPLETED", "0:0", "2"), final
    text = launch.output()

    # the kills: three restarts in the allocation (the requeued job's launcher counts its own), each cause named
    restarts = re.findall(r"\[launch\] RESTART (\d) of at most 3 \(--max_restarts\): (.*)", text)
    assert [n for n, _ in restarts] == ["1", "2", "1"], text[-5000:]
    assert "training node 1 (node2): rank 1 (local rank 0), exit code -9 (SIGKILL)" in restarts[0][1]
    assert restarts[1][1].startswith("the vLLM server on node3 "), restarts[1][1]
    assert "training node 1 (node2): rank 1 (local rank 0), exit code -9 (SIGKILL)" in restarts[2][1]
    costs = re.findall(r"\[launch\] restart (\d) cost (\d+) s from the failure seen to the first generation step "
                       r"after the resume: stop (\d+) s, server start (\d+) s, trainer start-up to that step (\d+) s", text)
    assert [c[0] for c in costs] == ["1", "2", "1"], text[-5000:]
    for number, total, stop, server, trainer in costs:
        print(f"[slurm] restart {number}: {total} s (stop {stop} s, server start {server} s, trainer start-up to its "
              f"first generation step {trainer} s)")
        assert int(total) >= int(stop) + int(server) + int(trainer) - 2 and int(server) > 0

    # the time limits: two requeues, each with its cost, each stop saving a later checkpoint
    requeued = re.findall(r"\[requeue\] restart (\d) of job (\d+): (\d+) s from the stop request to the first new "
                          r"generation step: save (\d+) s .*, pending (\d+) s, start-up (\d+) s .*, resume (\d+) s", text)
    assert [(c[0], c[1]) for c in requeued] == [("1", job), ("2", job)], text[-5000:]
    for number, _, total, save, pending, startup, resume in requeued:
        print(f"[slurm] requeue {number}: {total} s (save {save} s, pending {pending} s, start-up {startup} s, "
              f"resume {resume} s)")
        assert abs(int(total) - int(save) - int(pending) - int(startup) - int(resume)) <= 2 and int(pending) > 0
    with open(os.path.join(out, "requeue.jsonl")) as f:
        stops = [r for r in map(json.loads, f) if "requeued" in r]
    saved = [int(r["checkpoint"].rsplit("-", 1)[1]) for r in stops]
    assert len(saved) == 2 and 0 < saved[0] < saved[1] < 2 * KILLED_STEPS, stops

    # one server per attempt: the first, three restarts, two requeues; every step's log appended per attempt, and
    # every attempt after the first resumed
    assert text.count("[launch] vLLM server healthy") == 6, text[-5000:]
    train1 = open(f"{out}/logs/train1-node2.log").read()
    assert [int(n) for n in re.findall(r"^\[launch\] attempt (\d+), ", train1, re.M)] == [1, 2, 3, 1, 2, 1]
    announced = re.findall(r"(?:every trainer resumes from|\); it resumes from) (\S+)", text)
    assert re.findall(r"^\[resume\] from (\S+)", open(f"{out}/logs/train0-node1.log").read(), re.M) == announced
    assert len(announced) == 5 and all(c.startswith(f"{out}/checkpoint-") for c in announced), announced
    launch.assert_nothing_left()
    assert json.load(open(os.path.join(out, "summary.json")))["global_step"] == 2 * KILLED_STEPS

    # the attempts together drew the uninterrupted run's prompts, step for step, on every rank (a step redone after
    # a kill drew the same rows: data_order checks it)
    reference = data_order(uninterrupted["out"])
    orders = data_order(out)
    assert sorted(orders) == [0, 1]
    for rank, steps in orders.items():
        assert sorted(steps) == sorted(reference[rank])[:KILLED_STEPS]
        assert steps == {step: reference[rank][step] for step in steps}


def test_server_that_exits_at_start_or_never_gets_healthy_stops_the_launcher(cluster, recipe, tmp_path):
    # a model path that does not exist: the server exits, and the launcher says so at once, with its log
    launch = Launch(cluster, tmp_path, "bad_model", "--config", recipe, "--",
                    "--output_dir", str(tmp_path / "bad"), "--model_name_or_path", str(tmp_path / "no_such_model"))
    started = time.time()
    assert launch.wait(300) != 0
    text = launch.output()
    assert "the vLLM server on node3 exited with code" in text and "before it was healthy" in text, text[-3000:]
    assert "no_such_model" in text[text.index("[launch] FAILED"):]  # the server log's tail names the bad path
    print(f"[slurm] server exiting at start: launcher exited after {time.time() - started:.1f} s")
    launch.assert_nothing_left()

    # a server slower than --server_timeout_s: stopped after it, with the tail of its log
    launch = Launch(cluster, tmp_path, "slow", "--config", recipe, "--server_timeout_s", "3", "--",
                    "--output_dir", str(tmp_path / "slow"))
    started = time.time()
    assert launch.wait(120) != 0
    elapsed = time.time() - started
    text = launch.output()
    assert f"was not healthy at http://127.0.0.1:{PORTS[1]} after 3 s (--server_timeout_s)" in text, text[-3000:]
    assert elapsed < 60
    launch.assert_nothing_left()


def test_zero3_across_nodes_with_vllm_colocated_on_every_node(cluster, recipe, tmp_path):
    out = str(tmp_path / "run")
    launch = Launch(cluster, tmp_path, "zero3", "--config", recipe, "--no_vllm_node",
                    "--accelerate_config", "accelerate_configs/zero3.yaml", "--",
                    "--output_dir", out, "--total_generation_steps", "2", "--heldout_file", "", nodes=2)
    assert launch.wait(900) == 0, launch.output()[-5000:]
    text = launch.output()
    assert "2 nodes (CPU): 2 training, 0 vLLM server" in text
    assert "--num_machines 2 --machine_rank 1" in text and "--mixed_precision no" in text
    assert "--vllm_mode colocate" in text
    launch.assert_nothing_left()
    assert json.load(open(os.path.join(out, "summary.json")))["global_step"] == 4
    assert sorted(data_order(out)) == [0, 1]
