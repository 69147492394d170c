# Session 10, call 3 (nvidia-h200-x4; carry .gpu8 .ab): a single-kernel form of the norm + rotary kernel (one
# kernel for both directions, working tree) against HEAD (.ab/head_s10.py) and the measured two-kernel
# form (.ab/kernels_v1_s10.py).
# GPU0: CUDA tests, tile probe, compare vs the two-kernel form. GPU3: compare vs HEAD.
# GPU1, GPU2: eval (sliding, ngram, ttt at a rank's 8-GPU share) of HEAD and the working tree, in
# the order A B on GPU1 and B A on GPU2.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export DATA_PATH=.gpu8/data TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16
export LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
(
  export CUDA_VISIBLE_DEVICES=0
  python -m pytest -q tests/test_norm_rotary.py > "$OUT/bench/norm_rotary_tests_final_s10_h200.txt" 2>&1; echo "tests rc=$? at $(since) s"
  python tools/norm_rotary_probe.py > "$OUT/bench/norm_rotary_probe_final_s10_h200.txt" 2>&1; echo "probe rc=$? at $(since) s"
  RUN_ID=ab_one_kernel_vs_two_s10_h200 timeout $(( 500 - $(since) )) python tools/bench.py compare --against .ab/kernels_v1_s10.py --steps 20 --rounds 2 > /tmp/cmp0.out 2>&1
  echo "compare vs two kernels rc=$? at $(since) s"
) &
( CUDA_VISIBLE_DEVICES=3 RUN_ID=ab_norm_rotary_final_s10_h200 timeout 500 python tools/bench.py compare --against .ab/head_s10.py --steps 20 --rounds 2 > /tmp/cmp3.out 2>&1; echo "compare vs head rc=$? at $(since) s" ) &
ev() {  # GPU RUN_ID PROGRAM
  CUDA_VISIBLE_DEVICES=$1 RUN_ID=$2 TTT_CHUNK_TOKENS=4096 timeout 250 python tools/bench.py eval --untrained --phases sliding,ngram,ttt --repeat 2 --program $3 > /tmp/$2.out 2>&1
  echo "$2 rc=$? at $(since) s"
}
( ev 1 eval_head_s10_gpu1 .ab/head_s10.py; ev 1 eval_norm_rotary_s10_gpu1 train_gpt.py ) &
( ev 2 eval_norm_rotary_s10_gpu2 train_gpt.py; ev 2 eval_head_s10_gpu2 .ab/head_s10.py ) &
wait
tail -2 "$OUT/bench/norm_rotary_tests_final_s10_h200.txt"; cat "$OUT/bench/norm_rotary_probe_final_s10_h200.txt"
for f in /tmp/cmp0.out /tmp/cmp3.out; do echo "== $f"; grep "^compare round\|speedup\|_ms_per_step\|max_train" $f | cut -c1-200; done
for f in /tmp/eval_*.out; do echo "== $f"; grep -E "^(sliding|ngram|ttt|roundtrip)" $f | cut -c1-200; tail -2 $f | cut -c1-200; done
cd "$OUT" && tar -cJf /tmp/s10_call3.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s10_call3.tar.xz "$OUT/" && ls -la "$OUT"
