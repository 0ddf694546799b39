"""Specification of sandbox.execute.

The hostile programs (tests/hostile/) only run inside a contained child pytest process started by
test_every_hostile_program_in_a_contained_child: its own PID namespace (when root), rlimits and a hard
kill timeout, so a broken sandbox cannot take the machine down.

    python -m pytest tests/test_sandbox.py -q
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reasonrl.sandbox import runner as sandbox  # noqa: E402
from conftest import IN_CI  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HOSTILE = Path(__file__).parent / "hostile"
IN_CHILD = os.environ.get("SANDBOX_HOSTILE_CHILD") == "1"
BACKENDS = [b for b in sandbox.BACKENDS if sandbox.backend_problem(b) is None]
# Under CI a missing sandbox fails these tests instead of skipping them (a green run must mean it works).
needs_sandbox = pytest.mark.skipif(not BACKENDS and not IN_CI,
                                   reason="no sandbox backend: run scripts/install_sandbox_deps.sh")
hostile = pytest.mark.skipif(not IN_CHILD or not BACKENDS,
                             reason="runs inside test_every_hostile_program_in_a_contained_child")


def run_hostile(name, backend, stdin="", **kw):
    return sandbox.execute((HOSTILE / name).read_text(), stdin=stdin, backend=backend, **kw)


# ---------------------------------------------------------------- ordinary programs


@needs_sandbox
def test_programs_run_on_the_base_interpreter_with_the_standard_library_only():
    r = sandbox.execute("import sys, json\nprint(sys.prefix == sys.base_prefix)\n"
                        "try:\n    import torch\nexcept ImportError:\n    print('no torch')")
    assert r.stdout == "True\nno torch\n", r.stderr


@needs_sandbox
def test_program_reads_stdin_and_prints():
    r = sandbox.execute("a, b = map(int, input().split())\nprint(a + b)", stdin="2 40\n")
    assert (r.stdout, r.stderr, r.returncode, r.timed_out, r.output_truncated) == ("42\n", "", 0, False, False)


@needs_sandbox
def test_exit_status_and_traceback_are_reported():
    r = sandbox.execute("import sys\nprint('x')\nsys.exit(3)")
    assert (r.stdout, r.returncode) == ("x\n", 3)
    r = sandbox.execute("1/0")
    assert r.returncode == 1 and r.stderr.rstrip().endswith("ZeroDivisionError: division by zero")


@needs_sandbox
def test_unicode_round_trips():
    r = sandbox.execute("print(input().upper())", stdin="é ß 漢\n")
    assert r.stdout == "É SS 漢\n"


@needs_sandbox
def test_program_may_write_its_workdir_and_tmp():
    r = sandbox.execute("open('a.txt','w').write('hi')\nopen('/tmp/b','w').write('yo')\n"
                        "import os\nprint(os.getcwd(), open('a.txt').read(), open('/tmp/b').read())")
    assert r.stdout == "/tmp/work hi yo\n"


@needs_sandbox
def test_multiprocessing_and_threads_work_within_max_processes():
    code = ("import multiprocessing as mp\nwith mp.Pool(2) as pool:\n    print(pool.map(abs, [-1, -2, 3]))")
    r = sandbox.execute(code, max_processes=16)
    assert (r.stdout, r.returncode) == ("[1, 2, 3]\n", 0)


@needs_sandbox
def test_string_hashing_is_deterministic_across_calls():
    code = "print(list({'apple', 'banana', 'cherry', 'date', 'elderberry'}))"
    assert len({sandbox.execute(code).stdout for _ in range(3)}) == 1


@needs_sandbox
def test_nothing_is_shared_between_calls():
    sandbox.execute("open('/tmp/left_behind','w').write('x')")
    r = sandbox.execute("import os\nprint(os.path.exists('/tmp/left_behind'))")
    assert r.stdout == "False\n"


@needs_sandbox
def test_timeout_of_a_sleeping_program():
    start = time.monotonic()
    r = sandbox.execute("import time\ntime.sleep(30)", timeout_s=0.5)
    assert (r.timed_out, r.returncode) == (True, -9)
    assert time.monotonic() - start < 3


def test_no_backend_raises_an_error_naming_the_fix(monkeypatch):
    monkeypatch.setattr(sandbox, "choose_backend", lambda: None)
    monkeypatch.delenv("SANDBOX_ALLOW_UNSAFE", raising=False)
    with pytest.raises(sandbox.SandboxUnavailable, match="install_sandbox_deps.sh.*allow_unsafe=True"):
        sandbox.execute("print(1)")


def test_unsafe_mode_refuses_to_run_as_root_when_it_cannot_drop_to_a_throwaway_uid(monkeypatch):
    monkeypatch.setattr(sandbox, "choose_backend", lambda: None)
    monkeypatch.setattr(sandbox, "_reachable_by_others", lambda path: False)
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 0)
    with pytest.raises(sandbox.SandboxUnavailable, match="unsafe mode as root must run the program as a "
                                                         "throwaway uid"):
        sandbox.execute("print(1)", allow_unsafe=True)


@pytest.mark.skipif(os.geteuid() == 0 and not sandbox._reachable_by_others(sandbox.INTERPRETER),
                    reason="root with an interpreter other users cannot reach: unsafe mode refuses")
def test_unsafe_mode_is_opt_in_and_warns(monkeypatch):
    monkeypatch.setattr(sandbox, "choose_backend", lambda: None)
    monkeypatch.setenv("SANDBOX_ALLOW_UNSAFE", "1")
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    with pytest.warns(RuntimeWarning, match="WITHOUT namespaces"):
        r = sandbox.execute("import os\nprint(input(), os.environ.get('SECRET_TOKEN'))", stdin="hi\n")
    assert (r.stdout, r.backend) == ("hi None\n", "unsafe")


# ---------------------------------------------------------------- hostile programs (child process only)


@pytest.mark.slow
@needs_sandbox
@pytest.mark.skipif(IN_CHILD, reason="this is the child")
def test_every_hostile_program_in_a_contained_child():
    cmd = ["prlimit", f"--as={8 << 30}", f"--fsize={1 << 30}", "--nofile=4096",
           sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "test_hostile_"]
    if os.geteuid() == 0 and shutil.which("unshare"):
        # Own PID namespace: anything a broken sandbox leaves behind, or a kill(-1), stays inside it.
        cmd = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"] + cmd
    env = dict(os.environ, SANDBOX_HOSTILE_CHILD="1", HF_HUB_OFFLINE="1")
    r = subprocess.run(["timeout", "-s", "KILL", "150"] + cmd, env=env, capture_output=True, text=True,
                       cwd=Path(__file__).parents[1])
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1], r.stdout[-3000:]


@pytest.fixture(params=BACKENDS or ["none"])
def backend(request):
    return request.param


@hostile
def test_hostile_network_to_internet_is_unreachable(backend):
    r = run_hostile("net_external.py", backend)
    assert r.stdout == "blocked OSError\n"


@hostile
def test_hostile_network_to_host_loopback_is_unreachable(backend):
    with socket.create_server(("127.0.0.1", 0)) as server:
        r = run_hostile("net_host_loopback.py", backend, stdin=f"{server.getsockname()[1]}\n")
        server.setblocking(False)
        with pytest.raises(BlockingIOError):  # the kernel would have queued a completed connection
            server.accept()
    # bwrap brings the sandbox's own loopback up (nothing listens there); unshare leaves it down.
    assert r.stdout == {"bwrap": "blocked ConnectionRefusedError\n", "unshare": "blocked OSError\n"}[backend]


@hostile
def test_hostile_host_files_cannot_be_written_deleted_or_added(backend):
    # A world-writable directory the sandbox can see (the interpreter's prefix is bound read-only): only
    # the read-only mount, not file permissions, protects it.
    d = tempfile.mkdtemp(dir=sys.base_prefix, prefix="sandbox-marker-")
    try:
        os.chmod(d, 0o777)
        marker = Path(d) / "marker.txt"
        marker.write_text("original")
        marker.chmod(0o666)
        r = run_hostile("host_files.py", backend, stdin=f"{marker}\n")
        assert r.stdout == ("overwrite blocked OSError\ndelete blocked OSError\n"
                            "create blocked OSError\n")
        assert sorted(os.listdir(d)) == ["marker.txt"] and marker.read_text() == "original"
    finally:
        shutil.rmtree(d)


@hostile
def test_hostile_caller_environment_is_invisible(backend, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hf_topsecret123")
    r = run_hostile("read_env.py", backend)
    assert r.returncode == 0 and "PYTHONHASHSEED=0" in r.stdout
    assert "hf_topsecret123" not in r.stdout + r.stderr


@hostile
def test_hostile_fork_bomb_is_capped_by_max_processes(backend):
    r = run_hostile("fork_bomb.py", backend, max_processes=8)
    # 8 tasks for the program's uid: itself plus 7 children.
    assert r.stdout == "forked 7 error BlockingIOError\n"


@hostile
def test_hostile_daemon_dies_with_the_call(backend, tmp_path):
    marker, token = tmp_path / "daemon_was_here", uuid.uuid4().hex
    r = run_hostile("daemon.py", backend, stdin=f"{marker}\n{token}\n")
    assert r.stdout == "daemon started\n"
    assert _processes_with(token) == []
    time.sleep(3)
    assert not marker.exists() and _processes_with(token) == []


def _processes_with(token):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


@hostile
def test_hostile_cannot_signal_the_caller_or_see_its_processes(backend):
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        r = run_hostile("kill_caller.py", backend)
        assert r.stdout == "parent refused PermissionError\nall refused ProcessLookupError\nvisible pids [1, 2]\n"
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


@hostile
def test_hostile_memory_is_capped(backend):
    r = run_hostile("memory_hog.py", backend, memory_mb=512)
    assert r.returncode == 1 and r.stderr.rstrip().endswith("MemoryError")


@hostile
def test_hostile_cpu_loop_times_out(backend):
    r = run_hostile("cpu_loop.py", backend, timeout_s=1.0)
    assert (r.timed_out, r.returncode, r.stdout) == (True, -9, "")
    assert r.duration_s < 3


@hostile
def test_hostile_output_flood_is_truncated_and_stopped(backend):
    r = run_hostile("print_flood.py", backend, max_output_bytes=1 << 20)
    assert r.output_truncated and len(r.stdout) == 1 << 20 and r.returncode == -9
    assert r.duration_s < 3


@hostile
def test_hostile_file_size_is_capped(backend):
    r = run_hostile("huge_file.py", backend, max_file_mb=16)
    assert r.stdout == f"stopped OSError after {16 << 20}\n"


@hostile
def test_hostile_open_files_are_capped(backend):
    r = run_hostile("many_files.py", backend, max_open_files=64)
    # 64 descriptors minus stdin, stdout, stderr and the one Python holds on main.py while running it.
    assert r.stdout.startswith("stopped OSError after ") and int(r.stdout.split()[-1]) < 64
