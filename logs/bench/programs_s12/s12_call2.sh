# Session 12, call 2 (one H200; carry .gpu8 .ab): q, k, v from the GEMM's output in one op whose backward
# writes d(qkv) in one tensor (.ab/qkv_heads_s12.py, branch s12-qkv-heads) against the sliding-tail branch
# (.ab/tail_s12.py; training code identical to main): its CUDA tests; bench.py compare, 20 timed steps,
# A B B A; then its step profiled with bytes.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
cp .ab/qkv_heads_s12.py train_gpt.py
timeout 90 python -m pytest -q tests/test_norm_rotary.py tests/test_model.py -k "cuda or last or attention or qkv" > "$OUT/bench/qkv_heads_tests_s12_h200.txt" 2>&1; echo "tests rc=$? at $(since) s"
RUN_ID=ab_qkv_heads_s12_h200 timeout 360 python tools/bench.py compare --against .ab/tail_s12.py --program .ab/qkv_heads_s12.py --steps 20 --rounds 2 > "$OUT/bench/s12_call2_compare_stdout.txt" 2>&1; echo "compare rc=$? at $(since) s"
[ $(since) -lt 470 ] && RUN_ID=profile_bandwidth_qkv_heads_s12_h200 timeout $(( 585 - $(since) )) python tools/bench.py train --program .ab/qkv_heads_s12.py --steps 12 --profile 3 --bandwidth > "$OUT/bench/s12_call2_profile_stdout.txt" 2>&1; echo "bandwidth rc=$? at $(since) s"
tail -2 "$OUT/bench/qkv_heads_tests_s12_h200.txt"
grep "^compare round\|speedup\|_ms_per_step\|max_train\|peak" "$OUT/bench/s12_call2_compare_stdout.txt" | cut -c1-200
grep "^ms_per_step \|^peak_memory\|^profile_\|^compiled_gb\|_norm_rotary\|cat_\|copy" "$OUT/bench/s12_call2_profile_stdout.txt" | head -30 | cut -c1-200
cd "$OUT" && tar -cJf /tmp/s12.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s12.tar.xz "$OUT/"
