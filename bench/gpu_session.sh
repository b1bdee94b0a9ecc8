#!/usr/bin/env bash
# What was run on a lent GPU machine (see RESULTS.md): CUDA tests, then the throughput
# benchmark with and without torch.compile. Expects pydantic wheels for its Python in
# .whl/ (the machine has no registry) and writes logs to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$OUT/gpu.txt"
timeout 330 python3 -m pytest tests/gpu -q -p no:cacheprovider -x --durations=0 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
python3 bench/train_throughput.py --device cuda --steps 100 --json "$OUT/bench_cuda_compile.json" --compile
python3 bench/train_throughput.py --device cuda --steps 100 --json "$OUT/bench_cuda_eager.json" --no-compile
