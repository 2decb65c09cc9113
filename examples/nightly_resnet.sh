#!/usr/bin/env bash
# Two nights of `sleepcl learn` with torchvision's ResNet-18 (BatchNorm) on folders of images, as a user with a
# photo collection and a model of their own would run them:
#
#   1. write two Fashion-MNIST tasks as PNG folders, one subfolder per class (32x32 RGB);
#   2. night 1 creates the model with `--model examples/models.py:resnet18`, night 2 adds the second task;
#   3. task 1's predictions before and after night 2 must be identical (its weights and its own BatchNorm
#      statistics are frozen), and `predict` on each task's validation folder must give the accuracy that
#      `inspect` shows in the history.
#
# Usage:  examples/nightly_resnet.sh [WORKDIR]
# Environment: BUDGET (default 60s), THREADS (default 2), LIMIT (training images per class, default 300),
#              SLEEPCL (default sleepcl), PYTHON (default python).
# Needs the offline Fashion-MNIST (apt-get install dataset-fashion-mnist) and torchvision (pip install -e '.[test]').
set -euo pipefail

WORK=${1:-nightly-resnet}
BUDGET=${BUDGET:-60s}
THREADS=${THREADS:-2}
LIMIT=${LIMIT:-300}
SLEEPCL=${SLEEPCL:-sleepcl}
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=$WORK/data
MODEL=$WORK/photos.safetensors

mkdir -p "$WORK"
rm -rf "$DATA" "$MODEL" "$MODEL.prev" "$MODEL.lock"
echo "== writing two tasks as PNG folders to $DATA"
$PYTHON "$HERE/make_fashion_tasks.py" "$DATA" --images --tasks 2 --limit "$LIMIT"

night() {  # night TASK [FLAGS]: one `sleepcl learn` on the task's image folders
    local task=$1; shift
    echo; echo "== night: $task (budget $BUDGET)"
    $SLEEPCL learn "$MODEL" --task "$task" --data "$DATA/${task}_train" --val-data "$DATA/${task}_val" \
        --budget "$BUDGET" --threads "$THREADS" --final-free 0.5 --expected-tasks 2 --quiet --model "$FACTORY" "$@"
}
FACTORY="$HERE/models.py:resnet18"  # given to every command: sleepcl imports a model file's factory only when asked

night tshirt-trouser
$SLEEPCL predict "$MODEL" --task tshirt-trouser --data "$DATA/tshirt-trouser_val" --output "$WORK/before.csv" --threads "$THREADS" --model "$FACTORY"
night pullover-dress
$SLEEPCL predict "$MODEL" --task tshirt-trouser --data "$DATA/tshirt-trouser_val" --output "$WORK/after.csv" --threads "$THREADS" --model "$FACTORY"
if cmp -s "$WORK/before.csv" "$WORK/after.csv"; then
    echo "task tshirt-trouser predicts exactly as before night 2 (same predictions and confidences)"
else
    echo "FAILED: task tshirt-trouser's predictions changed in night 2" >&2; exit 1
fi
$SLEEPCL predict "$MODEL" --task pullover-dress --data "$DATA/pullover-dress_val" --threads "$THREADS" --model "$FACTORY"
$SLEEPCL inspect "$MODEL"
