# Session 18, call 4 (four H200s of one host; carry .gpu8 .ab): four inductor switches not tried before, each
# one line in launch() on top of main (.ab/<name>_s18.py against .ab/main_s17.py): combo_kernels (independent
# kernels launched as one), aggressive_fusion, triton.multi_kernel = 1 (reductions pick persistent or not at run
# time), triton.prefer_nd_tiling. One bench.py compare per GPU, all four at once, 20 timed steps x 2 rounds.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
rm -rf /tmp/repo_logs; mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
gpu=0
for v in combo aggressive multikernel ndtiling; do
  (CUDA_VISIBLE_DEVICES=$gpu TORCHINDUCTOR_CACHE_DIR=/tmp/ic_$v RUN_ID=ab_${v}_s18_h200 timeout 540 python tools/bench.py compare --against .ab/main_s17.py --program .ab/${v}_s18.py --steps 20 --rounds 2 > "$OUT/bench/s18_call4_${v}_stdout.txt" 2>&1; echo "$v rc=$? at $(since) s") &
  gpu=$((gpu + 1))
done
wait
for v in combo aggressive multikernel ndtiling; do echo "== $v"; grep -E "^(against|program)_ms_per_step|^speedup|^max_train|compile_warmup|Error|error" "$OUT/bench/s18_call4_${v}_stdout.txt" | cut -c1-200 | head -12; done
grep -h "compile_warmup done" "$OUT"/bench/ab_*_s18_h200_*_r1.txt | cut -c1-120
cd "$OUT" && tar -cJf /tmp/s18.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s18.tar.xz "$OUT/"
