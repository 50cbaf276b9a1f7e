#!/usr/bin/env bash
# Test stagewise exports against the trainers that consume them, each installed in its own venv.
#
#   bash benchmarks/consumers_venv.sh tests    # build (once) + run tests/consumers/ in each venv  (= make test-consumers)
#   bash benchmarks/consumers_venv.sh build    # only build the venvs
#
# Three venvs, under $CONSUMERS_VENVS (default ~/.cache/stagewise/consumers):
#   verl/        verl 0.9.x on CPU torch 2.13, with ray and transformers < 5.11 (verl's own pin); stagewise
#                installed --no-deps beside it, plus its light dependencies. About 3 minutes to build.
#   openrlhf/    `--no-deps openrlhf` plus only what `openrlhf.datasets` imports: its releases pin flash-attn
#                and deepspeed, which do not install on a CPU machine.
#   reward-only/ `pip install --no-deps stagewise` + math-verify + reasoning-gym and nothing else: what a
#                trainer's environment needs to run the exported reward.py / reward_func.py.
# The main .venv is left untouched; the test files run with each venv's python.
set -euo pipefail

MODE="${1:-tests}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
BASE="${CONSUMERS_VENVS:-$HOME/.cache/stagewise/consumers}"
PYTHON="${PYTHON:-python3}"
VERL_VERSION="${VERL_VERSION:-0.9.1}"
OPENRLHF_VERSION="${OPENRLHF_VERSION:-0.11.2}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

new_venv() {  # new_venv DIR: a fresh venv with a current pip
    rm -rf "$1"
    "$PYTHON" -m venv "$1"
    "$1/bin/python" -m pip install -q --upgrade pip
}

build_verl() {
    local venv="$BASE/verl" stamp="$BASE/verl/.stagewise-verl-$VERL_VERSION"
    [ -f "$stamp" ] && return
    echo "== building $venv (verl==$VERL_VERSION, torch==$TORCH_VERSION CPU)"
    new_venv "$venv"
    local constraints
    constraints="$(mktemp)"
    printf 'torch==%s\ntransformers<5.11\n' "$TORCH_VERSION" > "$constraints"
    # CPU torch first, so verl's unpinned torch does not pull CUDA wheels.
    "$venv/bin/python" -m pip install -q -c "$constraints" "torch==$TORCH_VERSION"
    "$venv/bin/python" -m pip install -q -c "$constraints" "verl==$VERL_VERSION"
    # stagewise itself, without letting its dependencies move verl's torch or transformers.
    "$venv/bin/python" -m pip install -q -c "$constraints" --no-deps -e "$ROOT"
    # cachetools, fastapi, uvicorn: from verl's own `verl-core` extra, imported by its PPO trainer module
    # (the rest of that extra is GPU rollout machinery).
    "$venv/bin/python" -m pip install -q -c "$constraints" click polars duckdb pyarrow rich pyyaml matplotlib \
        math-verify reasoning-gym pytest cachetools fastapi uvicorn
    rm -f "$constraints"
    "$venv/bin/python" -c "import verl, transformers, torch, ray; print('verl', verl.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__, 'ray', ray.__version__)"
    touch "$stamp"
}

build_openrlhf() {
    local venv="$BASE/openrlhf" stamp="$BASE/openrlhf/.stagewise-openrlhf-$OPENRLHF_VERSION"
    [ -f "$stamp" ] && return
    echo "== building $venv (--no-deps openrlhf==$OPENRLHF_VERSION)"
    new_venv "$venv"
    "$venv/bin/python" -m pip install -q "torch==$TORCH_VERSION"
    "$venv/bin/python" -m pip install -q --no-deps "openrlhf==$OPENRLHF_VERSION"
    # What openrlhf.datasets and its reward executor import (no deepspeed, no flash-attn; transformers at
    # the version OpenRLHF pins), then what stagewise needs to build the test export.
    "$venv/bin/python" -m pip install -q "transformers==5.15.0" datasets jsonlines tqdm einops pylatexenc aiohttp pytest \
        math-verify reasoning-gym pyarrow polars duckdb matplotlib pyyaml rich click
    "$venv/bin/python" -m pip install -q --no-deps -e "$ROOT"
    "$venv/bin/python" -c "import openrlhf, transformers; print('openrlhf', getattr(openrlhf, '__version__', '$OPENRLHF_VERSION'), 'transformers', transformers.__version__)"
    touch "$stamp"
}

build_reward_only() {
    local venv="$BASE/reward-only" stamp="$BASE/reward-only/.stagewise-reward-only"
    if [ ! -f "$stamp" ]; then
        echo "== building $venv (stagewise --no-deps + math-verify + reasoning-gym)"
        new_venv "$venv"
        "$venv/bin/python" -m pip install -q math-verify reasoning-gym
        touch "$stamp"
    fi
    # stagewise itself as a regular (non-editable) install from a freshly built wheel, as a trainer's image
    # would have it; rebuilt on every run so the test sees the current code.
    local wheels
    wheels="$(mktemp -d)"
    "$venv/bin/python" -m pip wheel -q --no-deps -w "$wheels" "$ROOT"
    "$venv/bin/python" -m pip install -q --no-deps --force-reinstall "$wheels"/stagewise-*.whl
    rm -rf "$wheels" "$ROOT/build"
}

build() {
    mkdir -p "$BASE"
    build_reward_only
    build_verl
    build_openrlhf
}

build
case "$MODE" in
    build)
        ;;
    tests)
        cd "$ROOT"
        status=0
        # The export is built with the project's own venv (MAIN_PYTHON), then scored in the reward-only one.
        STAGEWISE_REWARD_ONLY_PYTHON="$BASE/reward-only/bin/python" HF_HUB_OFFLINE=1 \
            PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
            "${MAIN_PYTHON:-$ROOT/.venv/bin/python}" -m pytest -p no:cacheprovider -q \
            tests/consumers/test_reward_only_env.py -rs || status=1
        # Each consumer runs even when another failed; the exit code says whether all passed.
        # The venvs' editable install points at the checkout that built them; PYTHONPATH makes this one win.
        HF_HUB_OFFLINE=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$BASE/verl/bin/python" -m pytest -p no:cacheprovider -q tests/consumers/test_verl.py -rs \
            || status=1
        HF_HUB_OFFLINE=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$BASE/openrlhf/bin/python" -m pytest -p no:cacheprovider -q tests/consumers/test_openrlhf.py \
            -rs || status=1
        exit "$status"
        ;;
    *)
        echo "usage: $0 [tests|build]" >&2
        exit 2
        ;;
esac
