#!/usr/bin/env bash
# Everything issue 4 measures on a GPU, in steps that each fit one 10-minute call of the device tool.
#
# Prepare once, on the machine without a GPU (the data travels with the working tree, 30 MB):
#   echo /.data/ >> .git/info/exclude
#   mkdir -p .data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
# Then one device call per step, each with carry [".data"] and the command
#   bash benchmarks/gpu_session.sh STEP
# STEP: check (GPU tests, ~1 min), mlp (the Figure 2 MLP grid, fp32 then TF32), vgg (the conv-net grid;
# SEEDS=5 halves it if 10 seeds do not fit a call), speed and speed-vgg (population_speed on CUDA: head to
# head and scaling over S; SIZES=1,10,50 shortens the scaling), models (a user's nn.Sequential MLP on the
# generic path, all members in one vmap, against the tuned kernels; ResNet-18 populations where torchvision
# is installed). Logs go to $OUT (the device tool's folder
# that comes back) or ./gpu-results.
# No install: the machine's image has torch, numpy, scipy, pandas, safetensors, rich and pytest; sleepcl
# is imported from src/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 SLEEPCL_DATA="$PWD/.data"
out="${OUT:-gpu-results}"
mkdir -p "$out"
step="${1:?usage: bash benchmarks/gpu_session.sh check|mlp|vgg|speed|speed-vgg|models}"
sizes="${SIZES:-1,2,5,10,20,50}"

case "$step" in
  check)
    nvidia-smi | tee "$out/nvidia-smi.txt"
    python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/torch.txt"
    python3 -m pytest tests/test_cuda.py -p no:cacheprovider -rs 2>&1 | tee "$out/test_cuda.txt"
    ;;
  mlp)
    python3 benchmarks/figure2_grid.py --device cuda --plain-runs 1 2>&1 | tee "$out/figure2_mlp.txt"
    python3 benchmarks/figure2_grid.py --device cuda --plain-runs 0 --tf32 2>&1 | tee "$out/figure2_mlp_tf32.txt"
    ;;
  vgg)
    python3 benchmarks/figure2_grid.py --device cuda --workload vgg --seeds "${SEEDS:-10}" --plain-runs 1 2>&1 \
      | tee "$out/figure2_vgg.txt"
    ;;
  speed)
    python3 benchmarks/population_speed.py --device cuda --workloads mlp --sizes "$sizes" 2>&1 \
      | tee "$out/population_speed_cuda_mlp.txt"
    ;;
  speed-vgg)
    python3 benchmarks/population_speed.py --device cuda --workloads vgg --repeats 1 --sizes "$sizes" 2>&1 \
      | tee "$out/population_speed_cuda_vgg.txt"
    ;;
  models)
    parts=generic
    python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torchvision') is None)" && parts=generic,resnet
    python3 benchmarks/models_speed.py --device cuda --parts "$parts" 2>&1 | tee "$out/models_speed_cuda.txt"
    ;;
  *)
    echo "unknown step '$step'; choose check, mlp, vgg, speed, speed-vgg or models" >&2
    exit 2
    ;;
esac
