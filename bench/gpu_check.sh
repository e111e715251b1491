#!/usr/bin/env bash
# GPU check: train the tiny student and a SmolLM2-135M-shaped model (from its config, random init)
# for a few dozen steps in bf16 with gradient checkpointing, then evaluate both with the hf backend
# on a GSM8K test subset; prints tokens/s, peak GPU memory, loss and accuracy. Budget: 8 minutes.
#
#   bash bench/gpu_check.sh [STEPS]        # default 40 steps per model
#   GPU_CHECK_ON_CPU=1 GPU_CHECK_MODELS=tiny EVAL_LIMIT=2 \
#     GPU_CHECK_OVERRIDES="micro_batch=1 global_batch=1 max_length=512" bash bench/gpu_check.sh 2   # rehearse on a CPU
#
# Without a CUDA device it prints one SKIP line and exits 0. Made for an offline CUDA machine whose
# Python has torch, transformers, accelerate and peft: datasets, trl and math-verify come as wheels
# from $MATHFORGE_WHEELS (default ./wheels, carried with the repository), installed only when
# missing; GSM8K comes from $MATHFORGE_DATA (default ../shared/data, else ./shared/data). SmolLM2's
# weights (93 MB) cannot travel, so the 135M model has its shape (576 wide, 30 layers, 9/3 heads)
# with a BPE tokenizer trained on the GSM8K train texts, not its weights: its accuracy is ~0 by design.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-40}"
if [ -z "${GPU_CHECK_ON_CPU:-}" ] && ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: SKIP (no CUDA device visible to torch)"
  exit 0
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WHEELS="${MATHFORGE_WHEELS:-wheels}"
for module in datasets math_verify; do
  if ! python -c "import $module" 2>/dev/null; then
    python -m pip install -q --no-index --find-links "$WHEELS" datasets math-verify
    break
  fi
done
DATA="${MATHFORGE_DATA:-../shared/data}"
[ -f "$DATA/gsm8k/train.jsonl" ] || DATA=shared/data
[ -f "$DATA/gsm8k/train.jsonl" ] || { echo "gpu_check: FAIL (no GSM8K under \$MATHFORGE_DATA)"; exit 1; }
OUT="$(mktemp -d /tmp/gpu_check.XXXX)"
cat > "$OUT/recipe.yaml" <<EOF
stages:
  - {name: gsm8k, dataset: "gsm8k:$DATA/gsm8k/train.jsonl", epochs: 1, lr: 1.0e-3, max_samples: 4000}
max_length: 1024
global_batch: 32
micro_batch: 8
packing: true
precision: bf16
gradient_checkpointing: true
save_steps: 100000
logging_steps: 5
max_steps: $STEPS
EOF
SMOL="student.vocab_size=49152 student.hidden_size=576 student.intermediate_size=1536 student.num_layers=30 student.num_heads=9 student.num_kv_heads=3"
for model in ${GPU_CHECK_MODELS:-tiny smollm2-shape}; do
  overrides="${GPU_CHECK_OVERRIDES:-}"
  [ "$model" = smollm2-shape ] && overrides="$overrides $SMOL"
  start=$SECONDS
  # shellcheck disable=SC2086  # the overrides are separate key=value words
  python -m mathforge.cli train "$OUT/recipe.yaml" --out "$OUT/$model" $overrides > "$OUT/$model.train.log" 2>&1 \
    || { tail -30 "$OUT/$model.train.log"; echo "gpu_check: FAIL ($model training)"; exit 1; }
  python -m mathforge.cli eval --out "$OUT/$model-eval" --backend hf --model "$OUT/$model/model" -b gsm8k \
    --data-dir "$DATA" --limit "${EVAL_LIMIT:-64}" --max-tokens 256 --batch-size 32 --graders strict > "$OUT/$model.eval.log" 2>&1 \
    || { tail -30 "$OUT/$model.eval.log"; echo "gpu_check: FAIL ($model evaluation)"; exit 1; }
  python - "$OUT/$model" "$OUT/$model-eval" "$model" $((SECONDS - start)) <<'EOF'
import json, sys
from pathlib import Path
run, evaluation, name, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
steps = [r for r in rows if "loss" in r]
speed = sum(r["tokens"] for r in steps[1:]) / max(sum(r["tokens"] / r["tokens_per_s"] for r in steps[1:]), 1e-9)
params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(run / "model").parameters())
[summary] = [json.loads(p.read_text()) for p in evaluation.rglob("summary.json")]
strict = summary["accuracy"]["strict"]
print(f"gpu_check {name}: {params / 1e6:.1f}M params, {steps[-1]['step']} steps, {speed:,.0f} tokens/s, "
      f"peak GPU memory {max(r.get('gpu_mem_peak_gb', 0) for r in steps):.2f} GB, loss {steps[0]['loss']:.3f} -> "
      f"{steps[-1]['loss']:.3f}; GSM8K eval: {strict['correct']}/{strict['n']} strict, generation "
      f"{summary['tokens_per_s']:,.0f} tokens/s, truncated {summary['truncation_rate']:.0%}; {seconds} s")
EOF
done
echo "gpu_check: OK (runs in $OUT)"
