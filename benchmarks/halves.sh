#!/usr/bin/env bash
# Builds the artefacts of the independent-judge measurement (docs/scorers.md, "An independent
# judge"): a detoxkit-minilm judge on half b of the corpus's training pool, and every compared
# method's artefact on half a. Finished artefacts go to benchmarks/halves/ (committed, so the
# trade-off tables can be re-run without rebuilding them); trainings work in
# benchmarks/runs/halves/ (checkpoints: stop at any time, run again to continue). A step
# whose artefact already exists is skipped. Usage: bash benchmarks/halves.sh [step ...]
# with steps judge scorer-a banlist vocab-shift cfl experts gedi pplm-head trace tradeoff
# (default: all but pplm-head, whose method takes about 4 h at 100 x 25 and is not in the table).
set -euo pipefail
cd "$(dirname "$0")/.."
M=smollm2-135m
OUT=benchmarks/halves
A=$OUT/a
WORK=benchmarks/runs/halves
mkdir -p "$A" "$WORK"
S="detoxkit-minilm:weights=$A/scorer-a.safetensors"
# float32 steps by default; PRECISION="--precision bfloat16" about doubles the speed on CPUs
# with native bf16 (AVX-512 BF16) and is very slow on CPUs without it
PRECISION=${PRECISION:-}
# torch threads of the trade-off step (0: all cores); THREADS=1 where other jobs share the machine

# copy a scorer training's result (weights + report) out of its work directory
take_scorer() { cp "$WORK/$1/detoxkit-minilm.safetensors" "$2.safetensors"
                cp "$WORK/$1/report.json" "$2.report.json"; }
# copy an adapter pair's result (its detoxkit.json and the adapters, not the checkpoints)
take_adapters() { rm -rf "$A/$1.tmp"; mkdir -p "$A/$1.tmp"
                  cp "$WORK/$1/detoxkit.json" "$A/$1.tmp/"
                  for d in "$WORK/$1"/*/adapter_model.safetensors; do
                    sub=$(basename "$(dirname "$d")"); mkdir -p "$A/$1.tmp/$sub"
                    cp "$(dirname "$d")"/adapter_* "$A/$1.tmp/$sub/"; done
                  mv "$A/$1.tmp" "$A/$1"; }

step() {
  case "$1" in
    # the judge: the shipped default's recipe (rank 64, every row) on half b
    judge) [ -f "$OUT/judge-b.safetensors" ] && return
      [ -f "$WORK/judge-b/detoxkit-minilm.safetensors" ] ||
      detoxkit train scorer --corpus-half b --rows 0 --lora-rank 64 --lora-alpha 128 \
        $PRECISION --threads 2 --out "$WORK/judge-b"
      take_scorer judge-b "$OUT/judge-b" ;;
    # the scorer whose judgement shapes CFL's table, the word list's filter and the gate: the
    # previous default's recipe (rank 16, 30,000 rows) on half a (the shipped artefacts used
    # profanity-svm, fitted on the whole corpus, so it cannot serve here)
    scorer-a) [ -f "$A/scorer-a.safetensors" ] && return
      [ -f "$WORK/scorer-a/detoxkit-minilm.safetensors" ] ||
      detoxkit train scorer --corpus-half a --rows 30000 --lora-rank 16 --lora-alpha 32 \
        $PRECISION --threads 2 --out "$WORK/scorer-a"
      take_scorer scorer-a "$A/scorer-a" ;;
    banlist) [ -f "$A/banned_words.txt" ] && return
      detoxkit train banlist --corpus-half a --filter-scorer "$S" --out "$A/banned_words.txt" ;;
    vocab-shift) [ -f "$A/vocab_shift.safetensors" ] && return
      detoxkit train vocab-shift --model $M --corpus-half a --out "$A/vocab_shift.safetensors" ;;
    cfl) [ -f "$A/cfl.safetensors" ] && return
      detoxkit train cfl --model $M --corpus-half a --scorer "$S" --threads 2 \
        --out "$A/cfl.safetensors" ;;
    experts) [ -d "$A/experts" ] && return
      detoxkit train experts --model $M --corpus-half a --steps 60 --max-len 32 --lr 0.002 \
        --out "$WORK/experts"
      take_adapters experts ;;
    gedi) [ -d "$A/gedi" ] && return
      detoxkit train gedi --model $M --corpus-half a --steps 50 --max-len 32 --lr 0.002 \
        --out "$WORK/gedi"
      take_adapters gedi ;;
    pplm-head) [ -f "$A/pplm.safetensors" ] && return
      detoxkit train pplm-head --model $M --corpus-half a --rows 1200 --epochs 40 --max-len 48 \
        --out "$A/pplm.safetensors" ;;
    trace) [ -f "$A/trace-nontoxic.safetensors" ] && return
      detoxkit train trace-classifier --model $M --corpus-half a \
        --out "$A/trace-nontoxic.safetensors" ;;
    # the trade-off tables under the half-b judge and, on the same samples, jigsaw-bilstm; each
    # method is its own resumable run, and the last lines say whether the two rankings agree;
    # moral goes last: its paper mode scores 50 candidates a step (about 2.5 h at 100 x 25)
    tradeoff)
      J="detoxkit-minilm:weights=$OUT/judge-b.safetensors" X="path=$A/experts"
      python benchmarks/tradeoff.py --threads "${THREADS:-0}" --out "$WORK/tradeoff" --judge "$J" \
        --results "$OUT/tradeoff-results.json" \
        --also jigsaw-bilstm --only base --extra \
        "wordban-a=wordban:words=$A/banned_words.txt" \
        "vocab-shift-a=vocab-shift:path=$A/vocab_shift.safetensors" \
        "vocab-shift12-a=vocab-shift:strength=12,path=$A/vocab_shift.safetensors" \
        "cfl-a=cfl:path=$A/cfl.safetensors" "cfl40-a=cfl:strength=40,path=$A/cfl.safetensors" \
        "dexperts-a=dexperts:alpha=2.0,$X" "gedi-a=gedi:path=$A/gedi" \
        "trace-a=trace:classifier=$A/trace-nontoxic.safetensors" \
        "trace32+vocab-shift12-a=trace:strength=32,classifier=$A/trace-nontoxic.safetensors|vocab-shift:strength=12,path=$A/vocab_shift.safetensors" \
        "gate+dexperts-a=gate:wrap=(dexperts:alpha=2.0,$X),scorer=($S)" \
        "wordban+dexperts-a=wordban:words=$A/banned_words.txt|dexperts:alpha=2.0,$X" \
        "cfl+vocab-shift+dexperts1-a=cfl:path=$A/cfl.safetensors|vocab-shift:strength=5,path=$A/vocab_shift.safetensors|dexperts:alpha=1.0,$X" \
        "moral=moral" ${TRADEOFF_ARGS:-} | tee "$WORK/tradeoff.txt" ;;
    *) echo "unknown step: $1" >&2; exit 2 ;;
  esac
}

main() {
  local steps=("$@")
  [ ${#steps[@]} -eq 0 ] && steps=(judge scorer-a banlist vocab-shift cfl experts gedi trace tradeoff)
  for s in "${steps[@]}"; do echo "== $s ($(date -u +%H:%M:%S))"; step "$s"; done
}
# one line, read whole before it runs: editing this file during a run cannot change the run
main "$@"; exit
