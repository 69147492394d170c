# Session 10, call 1 (nvidia-h200-x4; carry .gpu8 .ab): one A/B per GPU against HEAD (.ab/head_s10.py),
# 20 timed steps, A B B A: (0) q, k, v from one GEMM; (1) q's gain before rotary; (2) both (working tree);
# (3) the working tree's step profiled with each compiled kernel's bytes.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs
export DATA_PATH=.gpu8/data TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16
export LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
cmp() {  # GPU RUN_ID PROGRAM
  CUDA_VISIBLE_DEVICES=$1 RUN_ID=$2 timeout 540 python tools/bench.py compare --against .ab/head_s10.py --program $3 --steps 20 --rounds 2 > /tmp/$2.out 2>&1
  echo "$2 rc=$? at $(since) s"
}
cmp 0 ab_qkv_gemm_s10_h200 .ab/qkv_s10.py &
cmp 1 ab_gain_before_rotary_s10_h200 .ab/gain_s10.py &
cmp 2 ab_qkv_gain_s10_h200 train_gpt.py &
( CUDA_VISIBLE_DEVICES=3 RUN_ID=profile_bandwidth_s10_h200 TORCHINDUCTOR_CACHE_DIR=/tmp/ind_bw timeout 400 python tools/bench.py train --steps 12 --profile 3 --bandwidth > /tmp/bw.out 2>&1; echo "bandwidth rc=$? at $(since) s" ) &
wait
grep -A25 "^bandwidth:" /tmp/bw.out | cut -c1-200; grep "^ms_per_step \|^peak_memory\|^profile_" /tmp/bw.out
for f in /tmp/ab_*.out; do echo "== $f"; grep "^compare round\|speedup\|_ms_per_step\|peak\|max_train" $f | cut -c1-200; done
