#!/usr/bin/env bash
# Five nights of `sleepcl learn` on Fashion-MNIST, the way a new user would run them:
#
#   1. write the five tasks (class pairs) as .npz files: train, validation and test part of each;
#   2. night 1..5: `sleepcl learn MODEL --task NAME --data ..._train.npz --val-data ..._val.npz --budget 30s`,
#      each timed from outside (wall clock of the whole command);
#   3. night 3 is first started and SIGKILLed in the middle of its night: the model file must still be
#      night 2's, byte for byte, and predict exactly as before; then night 3 runs again;
#   4. `sleepcl predict` on every task's validation data (accuracy must equal the one `inspect` shows in the
#      history) and test data (reported separately), then `sleepcl inspect`.
#
# Usage:  examples/nightly_fashion.sh [WORKDIR]
# Environment: BUDGET (default 30s), THREADS (torch CPU threads, default 1), SLEEPCL (default sleepcl),
#              PYTHON (default python), LIMIT (at most LIMIT training images per class; default all 6000),
#              EXTRA (more `sleepcl learn` flags, e.g. "--schedule auto").
# Needs the offline Fashion-MNIST in /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist).
set -euo pipefail

WORK=${1:-nightly-fashion}
BUDGET=${BUDGET:-30s}
THREADS=${THREADS:-1}
SLEEPCL=${SLEEPCL:-sleepcl}
PYTHON=${PYTHON:-python}
EXTRA=${EXTRA:-}
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=$WORK/data
MODEL=$WORK/shop.safetensors
TASKS=(tshirt-trouser pullover-dress coat-sandal shirt-sneaker bag-boot)

mkdir -p "$WORK"
rm -f "$MODEL" "$MODEL.prev" "$MODEL.lock" "$WORK/wall.txt"
echo "== writing the five tasks as .npz files to $DATA"
$PYTHON "$HERE/make_fashion_tasks.py" "$DATA" ${LIMIT:+--limit "$LIMIT"}

now() { date +%s.%N; }

night() {  # night TASK: one timed `sleepcl learn`
    local task=$1 t0 t1
    echo
    echo "== night: $task (budget $BUDGET)"
    t0=$(now)
    # shellcheck disable=SC2086
    $SLEEPCL learn "$MODEL" --task "$task" --data "$DATA/${task}_train.npz" --val-data "$DATA/${task}_val.npz" \
        --budget "$BUDGET" --threads "$THREADS" $EXTRA
    t1=$(now)
    awk -v a="$t0" -v b="$t1" -v t="$task" 'BEGIN { printf "%s %.3f\n", t, b - a }' >> "$WORK/wall.txt"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "   wall clock of the command: %.2f s\n", b - a }'
}

night "${TASKS[0]}"
night "${TASKS[1]}"

echo
echo "== night 3, first attempt: SIGKILL in the middle of the night"
for k in 0 1; do
    $SLEEPCL predict "$MODEL" --task "${TASKS[$k]}" --data "$DATA/${TASKS[$k]}_test.npz" \
        --output "$WORK/before_$k.csv" > /dev/null
done
sum_before=$(sha256sum "$MODEL" | cut -d' ' -f1)
: > "$WORK/killed.log"
# shellcheck disable=SC2086
$SLEEPCL learn "$MODEL" --task "${TASKS[2]}" --data "$DATA/${TASKS[2]}_train.npz" \
    --val-data "$DATA/${TASKS[2]}_val.npz" --budget "$BUDGET" --threads "$THREADS" $EXTRA > "$WORK/killed.log" 2>&1 &
pid=$!
until grep -q "^  night:" "$WORK/killed.log" 2> /dev/null; do  # the training is over and the night's rounds have begun
    if ! kill -0 "$pid" 2> /dev/null; then echo "learn ended before it could be killed"; cat "$WORK/killed.log"; exit 1; fi
    sleep 0.1
done
sleep 1
kill -9 "$pid"
wait "$pid" 2> /dev/null || true
sed 's/^/   | /' "$WORK/killed.log"
echo "   killed (SIGKILL) during the night"
sum_after=$(sha256sum "$MODEL" | cut -d' ' -f1)
if [ "$sum_before" != "$sum_after" ]; then echo "FAIL: the model file changed"; exit 1; fi
echo "   $MODEL is byte-identical to night 2's file (sha256 ${sum_after:0:16}...)"
for k in 0 1; do
    $SLEEPCL predict "$MODEL" --task "${TASKS[$k]}" --data "$DATA/${TASKS[$k]}_test.npz" \
        --output "$WORK/after_$k.csv" > /dev/null
    if ! cmp -s "$WORK/before_$k.csv" "$WORK/after_$k.csv"; then echo "FAIL: predictions of ${TASKS[$k]} changed"; exit 1; fi
done
echo "   predictions of ${TASKS[0]} and ${TASKS[1]} identical to before the kill"

night "${TASKS[2]}"
night "${TASKS[3]}"
night "${TASKS[4]}"

echo
for task in "${TASKS[@]}"; do
    echo "== predict $task"
    $SLEEPCL predict "$MODEL" --task "$task" --data "$DATA/${task}_val.npz" --output "$WORK/${task}_val_predictions.csv"
    $SLEEPCL predict "$MODEL" --task "$task" --data "$DATA/${task}_test.npz" | sed -n 2p | sed 's/^/test data: /'
done

echo
$SLEEPCL inspect "$MODEL"

echo
echo "== summary"
$PYTHON - "$MODEL" "$WORK/wall.txt" "$DATA" <<'EOF'
import sys
from sleepcl.nightly import inspect, predict

model, wall_file, data = sys.argv[1:]
wall = dict(line.split() for line in open(wall_file))
info = inspect(model)
print(f"{'night':>5} {'task':>15} {'budget':>7} {'command':>8} {'to save':>8} {'overrun':>8} {'schedule':>14} "
      f"{'val (history)':>13} {'val (predict)':>13} {'test':>7} {'free after':>10}")
ok = True
for h in info["history"]:
    t = h["task"]
    pv = predict(model, t, f"{data}/{t}_val.npz")
    pt = predict(model, t, f"{data}/{t}_test.npz")
    w = float(wall[t])
    over = (w - h["budget_s"]) / h["budget_s"]
    ok &= pv["accuracy"] == h["val_accuracy"]
    print(f"{h['night']:>5} {t:>15} {h['budget_s']:>6g}s {w:>7.2f}s {h['seconds']:>7.2f}s {over:>+8.1%} "
          f"{h['schedule'] + ' N=' + str(h['rounds']):>14} {h['val_accuracy']:>13.4f} {pv['accuracy']:>13.4f} "
          f"{pt['accuracy']:>7.4f} {h['free_after']:>10.2%}")
print("predict's validation accuracy equals the history's for every task:", ok)
print(f"model file {info['file_size']}, {info['free_fraction']:.2%} of {info['weights']} weights free")
sys.exit(0 if ok else 1)
EOF
