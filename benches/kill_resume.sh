#!/usr/bin/env bash
# kill -9 a pretraining run at random moments (every third one, once a checkpoint exists,
# while the next checkpoint is being written), resume it each time, and check that the final checkpoint holds exactly the training
# state of an uninterrupted run (examples/checkpoint_diff.rs: every tensor bit for bit, and the
# optimiser state through one more epoch of both runs), that no resume failed, and that no
# completed checkpoint was lost (each one still loads after the kill that followed it).
# Usage: benches/kill_resume.sh [KILLS] [METHOD]   (default: 20 kills, byol)
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${1:-20}
METHOD=${2:-byol}
EPOCHS=8
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release --bin selfsup --example checkpoint_diff 2>&1 | grep -E "^error" || true
BIN=$TARGET/release/selfsup
DATA=data/cifar10-sample-train.pack
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
ARGS=(--data "$DATA" --method "$METHOD" --backbone convnet --width 16 --head-width 0.25
      --epochs "$EPOCHS" --batch-size 128 --workers 2 --seed 7 --no-progress --device cpu)
date -u; nproc; lscpu | grep "Model name" || true

echo "== uninterrupted run"
start=$(date +%s.%N)
"$BIN" pretrain "${ARGS[@]}" --out "$WORK/reference" > "$WORK/reference.log" 2>&1
seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
echo "took ${seconds}s"

echo "== interrupted run: $KILLS kills"
OUT=$WORK/interrupted
kills=0 during_write=0 resumes=0 failed=0 lost=0
while :; do
    resume=()
    [ -f "$OUT/checkpoint.ckpt" ] && resume=(--resume "$OUT/checkpoint.ckpt") && resumes=$((resumes + 1))
    touch "$WORK/launched"
    "$BIN" pretrain "${ARGS[@]}" --out "$OUT" "${resume[@]}" > "$WORK/last.log" 2>&1 &
    pid=$!
    if [ "$kills" -ge "$KILLS" ]; then
        if wait "$pid"; then break; fi
        failed=$((failed + 1)); echo "the final run failed:"; cat "$WORK/last.log"; break
    fi
    if [ $((kills % 3)) -eq 2 ] && [ -f "$OUT/checkpoint.ckpt" ]; then
        # Wait for the next checkpoint write to start, then kill in the middle of it: the
        # previous checkpoint must survive.
        # (A temporary file left by an earlier kill is older than this launch.)
        while kill -0 "$pid" 2> /dev/null \
            && [ -z "$(find "$OUT" -name checkpoint.ckpt.tmp -newer "$WORK/launched")" ]; do
            sleep 0.001
        done
        what="during a checkpoint write"
    else
        # A random moment within about two epochs of the launch: most kills land before the
        # run ends, about half of the launches get past a checkpoint first.
        sleep "$(awk -v s="$RANDOM" -v t="$seconds" -v e="$EPOCHS" \
            'BEGIN { srand(s); print 0.3 + rand() * 2 * t / e }')"
        what="at a random moment"
    fi
    if kill -9 "$pid" 2> /dev/null; then
        wait "$pid" 2> /dev/null || true
        kills=$((kills + 1))
        [ "$what" = "during a checkpoint write" ] && [ -f "$OUT/checkpoint.ckpt.tmp" ] && during_write=$((during_write + 1))
        echo "kill $kills $what"
        # The last completed checkpoint must still load.
        if [ -f "$OUT/checkpoint.ckpt" ] && ! "$BIN" export --checkpoint "$OUT/checkpoint.ckpt" \
            --out "$WORK/probe.safetensors" --device cpu > /dev/null 2>&1; then
            lost=$((lost + 1)); echo "  the checkpoint no longer loads"
        fi
    else
        # The run ended before the kill: it either finished or failed to resume.
        if wait "$pid"; then break; fi
        failed=$((failed + 1)); echo "a resumed run failed:"; cat "$WORK/last.log"; break
    fi
done

echo "== comparing the final checkpoints"
diff_result=$("$TARGET/release/examples/checkpoint_diff" --data "$DATA" \
    "$WORK/reference/checkpoint.ckpt" "$OUT/checkpoint.ckpt" 2> /dev/null | tail -n 1) || true
echo "$diff_result"
steps=$(grep -c '"kind":"step"' "$OUT/metrics.jsonl" || true)
reference_steps=$(grep -c '"kind":"step"' "$WORK/reference/metrics.jsonl" || true)
echo "| method | kills | of them during a checkpoint write | resumes | failed resumes | checkpoints lost | final state | metrics step lines (uninterrupted) |"
echo "|---|---|---|---|---|---|---|---|"
echo "| $METHOD | $kills | $during_write | $resumes | $failed | $lost | ${diff_result%%:*} | $steps ($reference_steps) |"
[ "$failed" -eq 0 ] && [ "$lost" -eq 0 ] && [[ "$diff_result" == identical* ]] && [ "$steps" -eq "$reference_steps" ]
