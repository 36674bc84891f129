#!/usr/bin/env bash
# GPU readiness check for a maintainer with a CUDA GPU: under 5 minutes, prints tiles/s for
# inference (naive loop, eager, default), explain (gradient x input) and training, the
# Classifier's precision choice (autocast bf16/fp16 after the probe), and peak GPU memory.
#   bash benchmarks/gpu_check.sh            # extra arguments go to bench_engine.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: this PyTorch ({torch.__version__}) sees no CUDA GPU")
p = torch.cuda.get_device_properties(0)
print(f"GPU 0: {p.name}, {p.total_memory / 2**30:.1f} GiB, compute {p.major}.{p.minor}, "
      f"bf16 {torch.cuda.is_bf16_supported()}, torch {torch.__version__} (CUDA {torch.version.cuda})")
PYEOF
# ~2.5 min of measurement + start-up; the timeout keeps the whole check under 5 minutes.
timeout 280 "$PY" benchmarks/bench_engine.py --device cuda --seconds 20 --rounds 4 \
  --field 2048 "$@"
