#!/usr/bin/env bash
# Install what reasonrl/sandbox/runner.py needs to isolate model-written programs: bubblewrap (bwrap).
# Idempotent; run as root (no sudo needed) or as a user with sudo. Debian/Ubuntu (apt) only.
#   bash scripts/install_sandbox_deps.sh
set -euo pipefail

if command -v bwrap >/dev/null 2>&1; then
    echo "install_sandbox_deps: bubblewrap already installed: $(bwrap --version)"
else
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "install_sandbox_deps: need root or sudo to apt-get install bubblewrap" >&2; exit 1; }
        SUDO="sudo"
    fi
    echo "install_sandbox_deps: installing bubblewrap with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap
    echo "install_sandbox_deps: installed $(bwrap --version)"
fi

# Report what the host allows; reasonrl/sandbox/runner.py picks the strongest working backend by itself.
if [ "$(id -u)" -ne 0 ] && [ "$(cat /proc/sys/kernel/unprivileged_userns_clone 2>/dev/null || echo 1)" = "0" ]; then
    echo "install_sandbox_deps: WARNING unprivileged user namespaces are disabled; bwrap needs them when not root:" \
         "sysctl -w kernel.unprivileged_userns_clone=1" >&2
fi
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$(command -v python || command -v python3)}"
(cd "$HERE" && "$PY" -c 'import sys
from reasonrl.sandbox import runner as sandbox
problems = {b: sandbox.backend_problem(b) for b in sandbox.BACKENDS}
for b, problem in problems.items():
    print("install_sandbox_deps: backend %-8s %s" % (b, problem or "ok"))
if all(problems.values()):
    sys.exit("install_sandbox_deps: no sandbox backend works on this host; code rewards cannot run")')
