# Session 14, call 2 (two H200s; carry .gpu8 .ab; working tree = branch s14-lagged-status, whose train_gpt.py
# is .ab/lag2_s14.py: flat gradients + status read one step late, its cap flag filled on the GPU).
# GPU 0: compare flat vs lag2 (A B B A, 20 steps), then --gaps of lag2 (steps counted by Muon ranges).
# GPU 1: CUDA tests (graphs; waits only at the status reads) on lag2, then the waits test on flat: must fail.
# Then both GPUs: 2-GPU A B B A, main (DDP) vs lag2 (one all-reduce), bench.py train --steps 20.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
( export CUDA_VISIBLE_DEVICES=0
  RUN_ID=ab_lagged_status_gpu_flag_s14_h200 timeout 240 python tools/bench.py compare --against .ab/flat_s14.py --program .ab/lag2_s14.py --steps 20 --rounds 2 > "$OUT/bench/s14_call2_compare_stdout.txt" 2>&1; echo "compare rc=$? at $(since) s"
  RUN_ID=gaps_lagged_status_gpu_flag_s14_h200 timeout 120 python tools/bench.py train --program .ab/lag2_s14.py --steps 12 --profile 3 --gaps > "$OUT/bench/s14_call2_gaps_stdout.txt" 2>&1; echo "gaps rc=$? at $(since) s" ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 220 python -m pytest -q tests/test_training_runs.py -k "cuda_training or waits_for" > "$OUT/bench/cuda_training_tests_lag_s14_h200.txt" 2>&1; echo "cuda tests rc=$? at $(since) s"
  cp train_gpt.py /tmp/lag2.py && cp .ab/flat_s14.py train_gpt.py
  timeout 120 python -m pytest -q tests/test_training_runs.py -k "waits_for" > "$OUT/bench/cuda_waits_test_on_flat_s14_h200.txt" 2>&1; echo "waits test on flat rc=$? (1 expected) at $(since) s"
  cp /tmp/lag2.py train_gpt.py ) &
wait
ddp() { RUN_ID=$1 timeout 110 torchrun --standalone --nproc_per_node=2 tools/bench.py train --steps 20 --program $2 > "$OUT/bench/$1.stdout" 2>&1; echo "$1 rc=$? at $(since) s"; }
ddp train_2gpu_head_a1_s14_h200 .ab/head_s14.py
ddp train_2gpu_lag_b1_s14_h200 .ab/lag2_s14.py
[ $(since) -lt 470 ] && ddp train_2gpu_lag_b2_s14_h200 .ab/lag2_s14.py
[ $(since) -lt 480 ] && ddp train_2gpu_head_a2_s14_h200 .ab/head_s14.py
tail -3 "$OUT/bench/cuda_training_tests_lag_s14_h200.txt" | cut -c1-200; grep -E "assert|waits|passed|failed" "$OUT/bench/cuda_waits_test_on_flat_s14_h200.txt" | head -5 | cut -c1-200
tail -9 "$OUT/bench/s14_call2_compare_stdout.txt" | cut -c1-200
g="$OUT/bench/s14_call2_gaps_stdout.txt"; grep "^ms_per_step \|^profile: \|^profile_total\|^gap_ms\|^long_gap" $g; sed -n '/^gaps by/,+8p' $g | cut -c1-170; tail -3 $g | cut -c1-200
for f in "$OUT"/bench/train_2gpu_*.stdout; do echo "$(basename $f) $(grep -E '^(ms_per_step|peak_memory_mib) ' $f | awk '{print $1"="$2}' | tr '\n' ' ')"; grep -m2 -i "error" $f | cut -c1-200; done
cd "$OUT" && tar -cJf /tmp/s14.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s14.tar.xz "$OUT/"
