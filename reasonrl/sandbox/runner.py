"""Run one untrusted Python program in a throwaway, isolated process and capture what it prints.

One job, over 400 lines: the isolation layers below and the checks that each holds on this host (`execute`,
`choose_backend`); the code reward that uses it is reasonrl/sandbox/code_reward.py.

Model-written code is hostile. Every call to `execute` starts one fresh sandbox (nothing is reused
between calls, and no model code ever runs in the caller's process):

    bwrap (preferred) or unshare  ->  launcher (PID 1 of a new PID namespace)  ->  python main.py

1. Namespaces: new PID, network (no route anywhere, not even to the host's 127.0.0.1), IPC and UTS
   namespaces, and a mount namespace in which every host path is read-only (bwrap binds only what
   Python needs) and /tmp (also the working directory, /tmp/work) is a small size-capped tmpfs that
   vanishes with the sandbox.
2. The launcher is PID 1: when the program exits, the launcher exits, and the kernel kills every
   process left in the namespace (daemons, setsid(), double forks) before the call returns.
   On timeout the caller SIGKILLs PID 1, with the same effect.
3. When the caller is root, the program runs as a fresh random unprivileged uid (not a user
   namespace: uid 0 mapped into one is exempt from RLIMIT_NPROC), so it can neither write host
   files nor signal anything outside, and RLIMIT_NPROC counts only its own processes.
4. rlimits: address space (memory_mb), CPU seconds, file size, open files, processes (threads
   count too), no core files. The environment is empty except for a few fixed variables
   (PYTHONHASHSEED=0, so set iteration order, and therefore output, is deterministic).
5. stdout/stderr are read with a byte cap each; past the cap the program is killed and the result
   says output_truncated=True.

Limits: memory is capped per process, so a program may use up to memory_mb * max_processes in all
(no cgroup is used); there is no seccomp filter.

Backends, strongest first: "bwrap" (bubblewrap; install with scripts/install_sandbox_deps.sh),
"unshare" (util-linux, needs root), and, only when asked for with allow_unsafe=True or
SANDBOX_ALLOW_UNSAFE=1, "unsafe" (rlimits and a throwaway uid only, no namespaces).

    python -c "from reasonrl.sandbox import runner; print(runner.execute('print(input()[::-1])', stdin='abc\\n'))"
    python -m pytest tests/test_sandbox.py -q
    python -m benchmarks.bench_sandbox
"""

import json
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass

BACKENDS = ("bwrap", "unshare")  # strongest first; "unsafe" is never chosen automatically

# The environment the program sees. Nothing is inherited from the caller (tokens live there).
PROGRAM_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp/work",
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONIOENCODING": "utf-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@dataclass
class ExecResult:
    stdout: str
    stderr: str
    returncode: int  # exit status, or -N when killed by signal N (as in subprocess)
    timed_out: bool  # wall-clock timeout or CPU-time limit reached
    output_truncated: bool = False  # stdout or stderr went past max_output_bytes; program was killed
    duration_s: float = 0.0
    backend: str = ""


class SandboxUnavailable(RuntimeError):
    pass


# The launcher runs inside the sandbox as `python -S -c LAUNCHER CONFIG_JSON`. It is PID 1 (except in
# "unsafe" mode): it prepares the working directory, forks the program with its limits applied, reaps
# everything, reports the program's exit status on a pipe and exits, which kills whatever is left.
LAUNCHER = r"""
import json, os, resource, sys
cfg = json.loads(sys.argv[1])

if cfg["remount"]:
    # unshare backend: make every host mount read-only (recursively) in our private mount namespace,
    # then put a fresh size-capped tmpfs on the writable places.
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def check(ret, what):
        if ret != 0:
            sys.stderr.write("sandbox launcher: %s failed: %s\n" % (what, os.strerror(ctypes.get_errno())))
            os._exit(125)
    MS_REC, MS_PRIVATE = 0x4000, 1 << 18
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    # An interpreter under a directory others cannot enter (pyenv in /root is 0700) would not be
    # executable after the uid drop: cover that directory with an empty tmpfs and bind the
    # interpreter back at its own path (which also hides the rest of the directory).
    MS_BIND = 4096
    hidden = []
    for r in cfg["python_roots"]:
        parts = r.split("/")
        for i in range(2, len(parts)):
            if not os.stat("/".join(parts[:i])).st_mode & 0o001:
                hidden.append(("/".join(parts[:i]), r))
                break
    if hidden:
        check(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, b"mode=0700"), "staging tmpfs")
        for i, (_, r) in enumerate(hidden):
            os.mkdir("/tmp/%d" % i)
            check(libc.mount(r.encode(), b"/tmp/%d" % i, None, MS_BIND | MS_REC, None), "stage " + r)
        tops = {a for a, _ in hidden}
        for a in sorted(tops):
            if not any(a.startswith(b + "/") for b in tops):
                check(libc.mount(b"tmpfs", a.encode(), b"tmpfs", 0, b"mode=0755"), "hide " + a)
        for i, (_, r) in enumerate(hidden):
            os.makedirs(r, mode=0o755, exist_ok=True)
            check(libc.mount(b"/tmp/%d" % i, r.encode(), None, MS_BIND | MS_REC, None), "rebind " + r)
    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]
    attr = MountAttr(1 | 2 | 4, 0, 0, 0)  # MOUNT_ATTR_RDONLY | NOSUID | NODEV
    SYS_mount_setattr, AT_FDCWD, AT_RECURSIVE = 442, -100, 0x8000
    check(libc.syscall(SYS_mount_setattr, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr),
                       ctypes.sizeof(attr)), "read-only remount of /")
    opts = b"size=%dm,mode=1777" % cfg["tmpfs_mb"]
    MS_NOSUID, MS_NODEV = 2, 4
    for path in (b"/tmp", b"/var/tmp", b"/dev/shm"):
        if os.path.isdir(path):
            check(libc.mount(b"tmpfs", path, b"tmpfs", MS_NOSUID | MS_NODEV, opts),
                  "tmpfs on %s" % path.decode())
    PR_SET_NO_NEW_PRIVS = 38
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")

work = cfg["workdir"]
os.makedirs(work, exist_ok=True)
with open(os.path.join(work, "main.py"), "wb") as f:
    f.write(os.pread(cfg["code_fd"], cfg["code_len"], 0))
os.close(cfg["code_fd"])
uid = cfg["uid"]
dropping = os.geteuid() == 0
if dropping:
    os.chown(work, uid, uid)
    if cfg["remount"] or cfg["own_tmp"]:
        os.chown("/tmp", uid, uid)
os.chdir(work)
os.set_inheritable(cfg["status_fd"], False)

# Our own deadline, should the caller die without killing us (unshare has no --die-with-parent).
import signal
signal.signal(signal.SIGALRM, lambda *_: os._exit(137))
signal.alarm(cfg["wall_s"])
pid = os.fork()
if pid == 0:
    try:
        for name, value in cfg["rlimits"]:
            resource.setrlimit(getattr(resource, name), (value[0], value[1]))
        if dropping:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        os.execve(sys.executable, [sys.executable, "-s", "-B", "main.py"], cfg["env"])
    except BaseException as e:
        sys.stderr.write("sandbox launcher: could not start the program: %r\n" % (e,))
    os._exit(126)

status = None
while True:
    try:
        reaped, st = os.wait()
    except ChildProcessError:
        break
    if reaped == pid:
        status = st
        break  # as PID 1, exiting now makes the kernel kill everything the program left behind
code = os.waitstatus_to_exitcode(status) if status is not None else 126
os.write(cfg["status_fd"], str(code).encode())
if dropping and os.getpid() != 1 and os.fork() == 0:
    # unsafe mode, root: kill every leftover process of the throwaway uid (kill(-1) spares the caller).
    os.setuid(uid)
    os.kill(-1, 9)
    os._exit(0)
os._exit(0)
"""


# The base interpreter, never a virtual environment's: model programs get the standard library only (not the
# trainer's packages), and a venv inside the checkout (say under /tmp) would be hidden by the sandbox's own /tmp.
INTERPRETER = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _python_roots():
    """Directories the base interpreter needs, outside /usr (pyenv, conda, a custom build)."""
    roots = set()
    for p in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.dirname(INTERPRETER))):
        for q in (p, os.path.realpath(p)):
            if q != "/" and not q.startswith("/usr/") and q != "/usr":
                roots.add(q)
    # Keep only outermost directories so no bind is shadowed by another.
    return sorted(r for r in roots if not any(r != o and r.startswith(o + "/") for o in roots))


def _reachable_by_others(path: str) -> bool:
    path = os.path.realpath(path)
    while (path := os.path.dirname(path)) != "/":
        if not os.stat(path).st_mode & 0o001:
            return False
    return True


def _bwrap_argv(tmpfs_mb: int, as_root: bool) -> list[str]:
    argv = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--as-pid-1",
            "--clearenv", "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    if not as_root:
        # Unprivileged bwrap needs a user namespace; it then drops all capabilities itself.
        argv += ["--unshare-user", "--disable-userns"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    roots = _python_roots()
    parents = set()
    for r in roots:
        while (r := os.path.dirname(r)) != "/":
            parents.add(r)
    for d in sorted(parents):
        argv += ["--perms", "0755", "--dir", d]  # bwrap would create them 0700: unreadable after setuid
    for r in roots:
        argv += ["--ro-bind", r, r]
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmpfs_mb << 20), "--tmpfs", "/tmp",
             # multiprocessing needs a writable /dev/shm for its semaphores
             "--perms", "01777", "--size", str(tmpfs_mb << 20), "--tmpfs", "/dev/shm",
             "--chdir", "/tmp", "--"]
    return argv


def _unshare_argv() -> list[str]:
    return ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--ipc", "--uts",
            "--mount", "--propagation", "private", "--"]


_probe_lock = threading.Lock()
_probed: dict[str, str | None] = {}  # backend -> None if usable, else why not


def backend_problem(backend: str) -> str | None:
    """None if `backend` works on this host, else a one-line reason. Probed once by running a program."""
    with _probe_lock:
        if backend not in _probed:
            if backend == "bwrap" and shutil.which("bwrap") is None:
                _probed[backend] = "bwrap not found (run scripts/install_sandbox_deps.sh)"
            elif backend == "unshare" and (shutil.which("unshare") is None or os.geteuid() != 0):
                _probed[backend] = "unshare backend needs the unshare binary and root"
            else:
                _probed[backend] = None
                try:
                    r = _run(backend, "print(6*7)", "", 10.0, 256, 1 << 16, 8, 1, 64, 4)
                    if r.stdout != "42\n":
                        _probed[backend] = f"probe failed (rc={r.returncode}): {r.stderr.strip()[-300:]}"
                except OSError as e:
                    _probed[backend] = f"probe failed: {e}"
        return _probed[backend]


def choose_backend() -> str | None:
    return next((b for b in BACKENDS if backend_problem(b) is None), None)


def execute(code: str, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 1024, *,
            max_output_bytes: int = 1 << 20, max_processes: int = 16, max_file_mb: int = 16,
            max_open_files: int = 64, tmpfs_mb: int = 64, backend: str | None = None,
            allow_unsafe: bool | None = None) -> ExecResult:
    """Run `code` as a Python program in a fresh sandbox, feeding it `stdin`."""
    if backend is None:
        backend = choose_backend()
        if backend is None:
            if allow_unsafe is None:
                allow_unsafe = os.environ.get("SANDBOX_ALLOW_UNSAFE") == "1"
            if not allow_unsafe:
                reasons = "; ".join(f"{b}: {backend_problem(b)}" for b in BACKENDS)
                raise SandboxUnavailable(
                    "no process isolation available (" + reasons + "). Fix: run "
                    "scripts/install_sandbox_deps.sh (bubblewrap) and allow user namespaces "
                    "(sysctl kernel.unprivileged_userns_clone=1), or opt in to rlimits-only execution "
                    "with execute(..., allow_unsafe=True) or SANDBOX_ALLOW_UNSAFE=1")
            backend = "unsafe"
    elif backend != "unsafe" and backend_problem(backend) is not None:
        raise SandboxUnavailable(f"sandbox backend {backend!r} is not usable: {backend_problem(backend)}")
    if backend == "unsafe":
        if os.geteuid() == 0 and not _reachable_by_others(INTERPRETER):
            # Model code running as root without a PID namespace can kill(-1) every process on the host.
            raise SandboxUnavailable(
                f"unsafe mode as root must run the program as a throwaway uid, but {INTERPRETER} "
                "lies under a directory other users cannot enter; install bubblewrap "
                "(scripts/install_sandbox_deps.sh) or use a Python installed outside /root")
        warnings.warn("sandbox: running model code WITHOUT namespaces: it can reach the network, read "
                      "host files and, unless the caller is root, kill any process of the caller's user; "
                      "only rlimits apply", RuntimeWarning, stacklevel=2)
    return _run(backend, code, stdin, timeout_s, memory_mb, max_output_bytes, max_processes,
                max_file_mb, max_open_files, tmpfs_mb)


def _run(backend, code, stdin, timeout_s, memory_mb, max_output_bytes, max_processes, max_file_mb,
         max_open_files, tmpfs_mb) -> ExecResult:
    as_root = os.geteuid() == 0
    cpu_s = math.ceil(timeout_s) + 1
    # RLIMIT_NPROC counts the program's uid; in a user namespace (non-root caller) the launcher is
    # that uid too, so allow it one more.
    nproc = max_processes if as_root else max_processes + 1
    rlimits = [("RLIMIT_AS", (memory_mb << 20,) * 2), ("RLIMIT_CPU", (cpu_s, cpu_s + 1)),
               ("RLIMIT_FSIZE", (max_file_mb << 20,) * 2), ("RLIMIT_NOFILE", (max_open_files,) * 2),
               ("RLIMIT_NPROC", (nproc,) * 2), ("RLIMIT_CORE", (0, 0))]
    code_bytes = code.encode("utf-8", errors="surrogateescape")
    code_fd = os.memfd_create("sandbox-code")
    stdin_fd = os.memfd_create("sandbox-stdin")
    status_r, status_w = os.pipe()
    host_workdir = None
    try:
        os.write(code_fd, code_bytes)
        os.write(stdin_fd, stdin.encode("utf-8", errors="surrogateescape"))
        os.lseek(stdin_fd, 0, os.SEEK_SET)
        cfg = {"remount": backend == "unshare", "own_tmp": backend == "bwrap", "workdir": "/tmp/work",
               "code_fd": code_fd, "code_len": len(code_bytes), "status_fd": status_w,
               "uid": 2_000_000 + secrets.randbelow(1 << 24),  # fresh per call: RLIMIT_NPROC is per uid
               "rlimits": rlimits, "env": PROGRAM_ENV, "tmpfs_mb": tmpfs_mb, "wall_s": cpu_s + 2,
               "python_roots": _python_roots()}
        if backend == "unsafe":
            host_workdir = tempfile.mkdtemp(prefix="sandbox-")
            os.chmod(host_workdir, 0o755)
            cfg["workdir"] = os.path.join(host_workdir, "work")
            cfg["env"] = dict(PROGRAM_ENV, HOME=cfg["workdir"])
        prefix = {"bwrap": lambda: _bwrap_argv(tmpfs_mb, as_root), "unshare": _unshare_argv,
                  "unsafe": lambda: []}[backend]()
        argv = prefix + [INTERPRETER, "-S", "-c", LAUNCHER, json.dumps(cfg)]
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(code_fd, status_w), env={"PATH": PROGRAM_ENV["PATH"]},
                                cwd="/", start_new_session=True)
        os.close(status_w)
        status_w = -1
        out, err, timed_out, truncated = _collect(proc, start + timeout_s, max_output_bytes)
        if timed_out or truncated:
            _kill(proc)  # before closing the pipes, so the program dies of SIGKILL, not of EPIPE
        proc.stdout.close()
        proc.stderr.close()
        proc.wait()
        duration = time.monotonic() - start
        os.set_blocking(status_r, False)
        try:
            status = os.read(status_r, 64).decode()
        except BlockingIOError:
            status = ""
        if status:
            returncode = int(status)
        else:  # the launcher never reported: we killed the whole sandbox (timeout, output cap)
            returncode = -signal.SIGKILL
        timed_out = timed_out or returncode == -signal.SIGXCPU
        if backend == "unsafe":
            _sweep_process_group(proc.pid)
        return ExecResult(stdout=out.decode("utf-8", errors="replace"),
                          stderr=err.decode("utf-8", errors="replace"), returncode=returncode,
                          timed_out=timed_out, output_truncated=truncated, duration_s=duration,
                          backend=backend)
    finally:
        for fd in (code_fd, stdin_fd, status_r, status_w):
            if fd >= 0:
                os.close(fd)
        if host_workdir:
            shutil.rmtree(host_workdir, ignore_errors=True)


def _collect(proc, deadline, cap):
    """Read stdout and stderr until both close, the deadline passes or one exceeds `cap` bytes."""
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    sel = selectors.DefaultSelector()
    for f in bufs:
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ)
    timed_out = truncated = False
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.fileobj]
                buf += chunk[: cap - len(buf) + 1]
                if len(buf) > cap:
                    del buf[cap:]
                    truncated = True
            if truncated:
                break
    finally:
        sel.close()
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), timed_out, truncated


def _kill(proc):
    """SIGKILL the sandbox's PID 1 (its namespace dies with it), then the launcher process group."""
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            children = [int(p) for p in f.read().split()]
    except OSError:
        children = []
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)  # bwrap/unshare exit only once PID 1 and its namespace are gone
    except subprocess.TimeoutExpired:
        pass
    _sweep_process_group(proc.pid)


def _sweep_process_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
