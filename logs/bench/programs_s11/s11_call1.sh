# Session 11, call 1 (one H200; carry .gpu8 .ab): branch s10-qkv-one-gemm (q, k, v from one GEMM, the norm
# kernel reading q/k in place) against main: the kernel tests on CUDA, bench.py compare 20 timed steps
# A B B A, after tools/act_gemm_probe.py (a TMA Triton GEMM with the activation in its epilogue against cuBLAS);
# then, with the time left, the branch's step profiled with bytes.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
cp .ab/qkv_one_gemm_s11.py train_gpt.py && cp .ab/test_norm_rotary_qkv_s11.py tests/test_norm_rotary.py && python -m pytest -q tests/test_norm_rotary.py > "$OUT/bench/norm_rotary_tests_qkv_one_gemm_s11.txt" 2>&1; echo "tests rc=$? at $(since) s"; cp .ab/head_s11.py train_gpt.py; git checkout -q tests/test_norm_rotary.py 2>/dev/null || true
timeout 170 python tools/act_gemm_probe.py > "$OUT/bench/act_gemm_probe_s11_h200.txt" 2>&1; echo "probe rc=$? at $(since) s"
RUN_ID=ab_qkv_one_gemm_s11_h200 timeout 370 python tools/bench.py compare --against .ab/head_s11.py --program .ab/qkv_one_gemm_s11.py --steps 20 --rounds 2 > /tmp/cmp.out 2>&1; echo "compare rc=$? at $(since) s"
[ $(since) -lt 480 ] && RUN_ID=profile_bandwidth_qkv_one_gemm_s11_h200 timeout $(( 580 - $(since) )) python tools/bench.py train --program .ab/qkv_one_gemm_s11.py --steps 12 --profile 3 --bandwidth > /tmp/bw.out 2>&1; echo "bandwidth rc=$? at $(since) s"
cp /tmp/cmp.out "$OUT/bench/s11_call1_compare_stdout.txt"; cp /tmp/bw.out "$OUT/bench/s11_call1_profile_stdout.txt"
grep "^compare round\|speedup\|_ms_per_step\|max_train" /tmp/cmp.out | cut -c1-200
grep "^ms_per_step \|^peak_memory\|^profile_\|^compiled_gb" /tmp/bw.out
tail -3 "$OUT/bench/norm_rotary_tests_qkv_one_gemm_s11.txt"
tail -8 "$OUT/bench/act_gemm_probe_s11_h200.txt"
cd "$OUT" && tar -cJf /tmp/s11.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s11.tar.xz "$OUT/"
