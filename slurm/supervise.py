"""Run one command as a job step's task so that nothing it starts outlives it (launch_slurm.py runs every step so:
reasonrl/cluster/supervisor.py).

    python slurm/supervise.py COMMAND [ARG ...]       # e.g. env VLLM_CPU_KVCACHE_SPACE=1 trl vllm-serve --model M

Why: a process whose parent dies is re-parented, and Slurm's proctrack/linuxproc (the plugin of clusters without
cgroups, and of scripts/slurm_local.sh) finds a step's processes through their parents, so it loses such orphans:
when the vLLM API server is killed (say, by the kernel's OOM killer), its engine process lives on after the step is
cancelled, holding memory. Slurm's cgroup plugin would catch it; this works under any plugin: the command runs in a
process group of its own, this process is its children's subreaper (orphans are re-parented here, not to init), and
when the command exits or a signal arrives (scancel, srun's forwarding) the whole group and every orphan are
stopped: SIGTERM, then SIGKILL after --grace_s. The exit code is the command's (128 + N for signal N).
"""

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 10.0


def orphans() -> list[int]:
    """Processes re-parented to this one (the command's descendants whose parent died)."""
    me, found = os.getpid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        if f"\nPPid:\t{me}\n" in status:
            found.append(int(pid))
    return found


def stop(group: int, grace_s: float = GRACE_S) -> None:
    """SIGTERM to the command's process group and to every orphan, then SIGKILL to what is left after grace_s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        targets = orphans()
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            pass
        for pid in targets:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.time() < deadline:
            try:  # reap what has exited; stop waiting once nothing of ours is left
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                return
            if not orphans() and not _group_alive(group):
                return
            time.sleep(0.1)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def main(argv: list[str]) -> int:
    if not argv:
        sys.exit("usage: python slurm/supervise.py COMMAND [ARG ...]")
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    proc = subprocess.Popen(argv, start_new_session=True)
    received = []

    def forward(signum, frame):
        received.append(signum)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
        signal.signal(signum, forward)
    # SIGUSR1 (`scancel --signal=USR1` without --batch reaches every step) is the launcher's: it stops training
    # through a file (reasonrl/trainer/requeue.py). Forwarded, it would end torchrun's agent, whose default action it is.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    code = proc.wait()
    if received:
        print(f"[supervise] {signal.Signals(received[0]).name} received: stopping {argv[0]}'s processes", flush=True)
    stop(proc.pid)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
