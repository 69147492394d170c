# Session 16, call 1 (four H200s of one host; carry .gpu8 .ab). Phase 1, one job per GPU at once:
#  GPU 0: compare the batch prefetch branch (.ab/prefetch_s16.py) against main (.ab/main_s16.py), 20 steps x 2 rounds;
#  GPU 1: the CUDA tests of main (b2a7478's int64 flag never ran on a GPU), then 5305a81 against main, 20 x 1;
#  GPU 2: gaps profile of main, then of the prefetch branch (is the 2.82 ms FillFunc -> HtoD gap gone?);
#  GPU 3: the sliding pass of main, 5305a81 (before the int64 flag), main: the flag costs eval nothing?
# Phase 2: scaling of main on this host, torchrun bench.py train --steps 20 with 1, 2, 4, then 4, 2, 1 processes.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
rm -rf /tmp/repo_logs; mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
B="$OUT/bench"
(export CUDA_VISIBLE_DEVICES=0; RUN_ID=ab_prefetch_s16_h200 timeout 280 python tools/bench.py compare --against .ab/main_s16.py --program .ab/prefetch_s16.py --steps 20 --rounds 2 > "$B/s16_call1_compare_prefetch_stdout.txt" 2>&1; echo "compare prefetch rc=$? at $(since) s") &
(export CUDA_VISIBLE_DEVICES=1; timeout 170 python -m pytest -q tests/test_mlp_kernels.py tests/test_norm_rotary.py tests/test_training_runs.py -k "cuda or int64" > "$B/cuda_tests_s16_h200.txt" 2>&1; echo "tests rc=$? at $(since) s"
 RUN_ID=ab_wide_flag_s16_h200 timeout $(( 290 - $(since) )) python tools/bench.py compare --against .ab/epi_s15.py --program .ab/main_s16.py --steps 20 --rounds 1 > "$B/s16_call1_compare_wide_stdout.txt" 2>&1; echo "compare wide rc=$? at $(since) s") &
(export CUDA_VISIBLE_DEVICES=2; RUN_ID=gaps_main_s16_h200 timeout 140 python tools/bench.py train --program .ab/main_s16.py --steps 12 --profile 3 --gaps > "$B/gaps_main_s16_h200_stdout.txt" 2>&1; echo "gaps main rc=$? at $(since) s"
 RUN_ID=gaps_prefetch_s16_h200 timeout $(( 290 - $(since) )) python tools/bench.py train --program .ab/prefetch_s16.py --steps 12 --profile 3 --gaps > "$B/gaps_prefetch_s16_h200_stdout.txt" 2>&1; echo "gaps prefetch rc=$? at $(since) s") &
(export CUDA_VISIBLE_DEVICES=3; sl() { [ $(since) -lt 230 ] || return; RUN_ID=$1 timeout 80 python tools/bench.py eval --untrained --phases sliding --program $2 > "$B/$1_stdout.txt" 2>&1; echo "$1 rc=$? at $(since) s"; }
 sl eval_sliding_main_a1_s16_h200 .ab/main_s16.py; sl eval_sliding_epi_b1_s16_h200 .ab/epi_s15.py; sl eval_sliding_main_a2_s16_h200 .ab/main_s16.py) &
wait
echo "phase 1 done at $(since) s"
run() { [ $(since) -lt $3 ] || return; RUN_ID=$1 timeout 100 torchrun --standalone --nproc_per_node=$2 tools/bench.py train --steps 20 --program .ab/main_s16.py > "$B/$1_stdout.txt" 2>&1; echo "$1 rc=$? at $(since) s"; }
run scaling_1gpu_r1_s16_h200 1 470; run scaling_2gpu_r1_s16_h200 2 480; run scaling_4gpu_r1_s16_h200 4 490
run scaling_4gpu_r2_s16_h200 4 500; run scaling_2gpu_r2_s16_h200 2 510; run scaling_1gpu_r2_s16_h200 1 520
tail -1 "$B/cuda_tests_s16_h200.txt"
for f in "$B"/s16_call1_compare_*_stdout.txt; do echo "== $(basename $f)"; tail -8 $f | cut -c1-200; done
for f in "$B"/gaps_*_stdout.txt; do echo "== $(basename $f)"; grep "^ms_per_step \|^profile_total\|^gap_ms\|^long_gap" $f; sed -n '/^gaps by/,+4p' $f | cut -c1-170; done
for f in "$B"/eval_*_stdout.txt; do echo "== $(basename $f)"; grep -E "^sliding +[0-9]/|tokens_per_s|seconds" $f | cut -c1-160 | tail -2; done
for f in "$B"/scaling_*_stdout.txt; do echo "$(basename $f) $(grep -E '^(ms_per_step|ms_per_step_steady|tokens_per_s_per_gpu|peak_memory_mib) ' $f | awk '{print $1"="$2}' | tr '\n' ' ')"; grep -m2 -i "error" $f | cut -c1-200; done
cd "$OUT" && tar -cJf /tmp/s16.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s16.tar.xz "$OUT/"
