#!/usr/bin/env bash
# One prepared accelerator check, run from the repository root on a GPU (or TPU) host with JAX installed:
#   bash bench/device_check.sh            # logs and JSON lines under $OUT (default bench/out/device)
# It never installs anything (device hosts may be offline) and runs jaxrec from the checkout (PYTHONPATH).
# Steps, each under its own time limit so that a slow or failing step leaves the others' results:
#   1. environment: the accelerator, the JAX / Flax / Optax versions, JAX's devices;
#   2. tests/test_topk.py on the accelerator (the tests that need 8 fake CPU devices are deselected);
#   3. `jaxrec demo` (the README's main job) on the accelerator;
#   4. bench/topk.py with the device report and GPU-sized variants, its 12 configurations in priority order,
#      under a time budget;
#   5. bench/train_step.py --quick on the real devices;
#   6. bench/topk_profile.py: where one exact top-k call spends its time (device kernels summed by name).
# Limits (seconds) can be overridden: T_TESTS, T_DEMO, T_TOPK, TOPK_BUDGET, T_TRAIN, T_PROFILE; also CONFIGS (d:k:Q:N,...),
# VARIANTS (METHOD:CHUNK:QBLOCK,...), PY (the Python), JAX_PLATFORMS (default cuda) and STEPS (the steps to run,
# default "env tests demo topk train profile").
set -u
OUT=${OUT:-bench/out/device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
PLATFORM=${JAX_PLATFORMS:-cuda}
STEPS=" ${STEPS:-env tests demo topk train profile} "
step() { echo; echo "=== $1 ($(date -u +%T))"; }
want() { [[ $STEPS == *" $1 "* ]]; }

if want env; then
step environment
(nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv 2>&1 || true) |
  tee "$OUT/env.txt"
JAX_PLATFORMS=$PLATFORM $PY - <<'EOF' 2>&1 | tee -a "$OUT/env.txt"
import importlib, platform
import jax
print("python", platform.python_version(), "| backend", jax.default_backend(), "| devices", jax.devices())
for m in ("jax", "jaxlib", "flax", "optax", "chex", "orbax.checkpoint", "numpy", "hypothesis", "faiss", "sklearn"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        print(m, "unavailable:", type(e).__name__)
EOF
fi

if want tests; then
  step "tests/test_topk.py on $PLATFORM"
  JAX_PLATFORMS=$PLATFORM timeout "${T_TESTS:-150}" $PY -m pytest tests/test_topk.py -q -p no:cacheprovider \
    -k "not pmap_over_devices and not sharded_items and not errors_quote_shapes" 2>&1 | tee "$OUT/tests.log" |
    tail -15
fi

if want demo; then
  step "jaxrec demo on $PLATFORM"
  JAX_PLATFORMS=$PLATFORM timeout "${T_DEMO:-60}" $PY -m jaxrec demo --no-progress 2>&1 | tee "$OUT/demo.log" |
    tail -25
fi

if want topk; then
  step "bench/topk.py on $PLATFORM"
  C=64:10:1024:1000000,128:100:4096:200000,64:100:256:100000,128:10:256:100000,64:100:1024:1000000
  C=$C,128:10:4096:200000,128:100:1024:1000000,64:10:4096:200000,64:10:256:100000,128:100:256:100000
  CONFIGS=${CONFIGS:-$C,128:10:1024:1000000,64:100:4096:200000}
  JAX_PLATFORMS=$PLATFORM timeout "${T_TOPK:-270}" $PY bench/topk.py --device-report --host floor --reps 5 \
    --only "$CONFIGS" --variants "${VARIANTS-bucket:16384:4096}" --time-budget "${TOPK_BUDGET:-190}" \
    --jsonl "$OUT/topk.jsonl" 2>&1 | grep -v '^JSON' | tee "$OUT/topk.log"
fi

if want train; then
  step "bench/train_step.py --quick on $PLATFORM"
  JAX_PLATFORMS=$PLATFORM timeout "${T_TRAIN:-40}" $PY bench/train_step.py --quick 2>&1 |
    tee "$OUT/train_step.log" | tail -12
fi
if want profile; then
  step "bench/topk_profile.py on $PLATFORM"
  for shape in 1024:1000000:64:10 4096:200000:128:100; do
    JAX_PLATFORMS=$PLATFORM timeout "${T_PROFILE:-60}" $PY bench/topk_profile.py --shape $shape --top 25 2>&1 |
      grep -v '^[EW][0-9]' | tee -a "$OUT/profile.log" | head -30
  done
fi
step done
