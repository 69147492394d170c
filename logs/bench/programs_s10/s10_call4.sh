# Session 10, call 4 (nvidia-h200-x2; carry .gpu8 .ab): the single norm + rotary kernel with call 3's
# slowdown fixed (partner offsets as in the two-kernel form, per-row scalars before the per-element
# products; the same PTX instruction mix as the two-kernel form), working tree, against HEAD
# (.ab/head_s10.py) and the measured two-kernel form (.ab/kernels_v1_s10.py).
# GPU0: CUDA tests, tile probe, compare vs HEAD (A B B A).
# GPU1: eval (sliding, ngram, ttt at a rank's 8-GPU share) of the working tree then HEAD; then one
# round (A B) against the two-kernel form.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export DATA_PATH=.gpu8/data TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16
export LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
(
  export CUDA_VISIBLE_DEVICES=0
  python -m pytest -q tests/test_norm_rotary.py > "$OUT/bench/norm_rotary_tests_fixed_s10_h200.txt" 2>&1; echo "tests rc=$? at $(since) s"
  python tools/norm_rotary_probe.py > "$OUT/bench/norm_rotary_probe_fixed_s10_h200.txt" 2>&1; echo "probe rc=$? at $(since) s"
  RUN_ID=ab_norm_rotary_fixed_s10_h200 timeout $(( 360 - $(since) )) python tools/bench.py compare --against .ab/head_s10.py --steps 20 --rounds 2 > /tmp/cmp0.out 2>&1
  echo "compare vs head rc=$? at $(since) s"
) &
ev() {  # GPU RUN_ID PROGRAM
  CUDA_VISIBLE_DEVICES=$1 RUN_ID=$2 TTT_CHUNK_TOKENS=4096 timeout 170 python tools/bench.py eval --untrained --phases sliding,ngram,ttt --repeat 2 --program $3 > /tmp/$2.out 2>&1
  echo "$2 rc=$? at $(since) s"
}
(
  ev 1 eval_norm_rotary_fixed_s10_h200 train_gpt.py; ev 1 eval_head_s10_h200 .ab/head_s10.py
  CUDA_VISIBLE_DEVICES=1 RUN_ID=ab_one_kernel_fixed_vs_two_s10_h200 timeout $(( 360 - $(since) )) python tools/bench.py compare --against .ab/kernels_v1_s10.py --steps 20 --rounds 1 > /tmp/cmp1.out 2>&1
  echo "compare vs two kernels rc=$? at $(since) s"
) &
wait
tail -1 "$OUT/bench/norm_rotary_tests_fixed_s10_h200.txt"; cat "$OUT/bench/norm_rotary_probe_fixed_s10_h200.txt"
for f in /tmp/cmp0.out /tmp/cmp1.out; do echo "== $f"; grep "^compare round\|speedup\|_ms_per_step\|max_train" $f | cut -c1-200; done
for f in /tmp/eval_*.out; do echo "== $f"; grep -E "^(sliding|ngram|ttt) " $f | cut -c1-200; done
cd "$OUT" && tar -cJf /tmp/s10_call4.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s10_call4.tar.xz "$OUT/" && ls -la "$OUT"
