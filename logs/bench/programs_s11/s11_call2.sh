# Session 11, call 2 (one H200; carry .gpu8 .ab): the MLP's activation in a Triton GEMM's epilogue
# (.ab/mlp_kernels_s11.py, the working tree) against main at 5a2909a (.ab/qkv_main_s11.py): the kernel
# tests on CUDA; bench.py compare, 20 timed steps, A B B A; the sliding pass B A; the TTT pass of the new code.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16 DATA_PATH=.gpu8/data
python -m pytest -q tests/test_mlp_kernels.py tests/test_norm_rotary.py > "$OUT/bench/mlp_kernels_tests_s11_h200.txt" 2>&1; echo "tests rc=$? at $(since) s"
LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3 RUN_ID=ab_mlp_kernels_s11_h200 timeout 300 python tools/bench.py compare --against .ab/qkv_main_s11.py --program .ab/mlp_kernels_s11.py --steps 20 --rounds 2 > /tmp/cmp.out 2>&1; echo "compare rc=$? at $(since) s"
RUN_ID=eval_sliding_mlp_kernels_s11_h200 timeout 80 python tools/bench.py eval --untrained --phases sliding --program .ab/mlp_kernels_s11.py > /tmp/ev1.out 2>&1; echo "eval new rc=$? at $(since) s"
RUN_ID=eval_sliding_qkv_main_s11_h200 timeout 80 python tools/bench.py eval --untrained --phases sliding --program .ab/qkv_main_s11.py > /tmp/ev2.out 2>&1; echo "eval base rc=$? at $(since) s"
RUN_ID=eval_ttt_mlp_kernels_s11_h200 TTT_CHUNK_TOKENS=4096 timeout $(( 585 - $(since) )) python tools/bench.py eval --untrained --phases ttt --repeat 1 --program .ab/mlp_kernels_s11.py > /tmp/ev3.out 2>&1; echo "eval ttt rc=$? at $(since) s"
for f in cmp ev1 ev2 ev3; do cp /tmp/$f.out "$OUT/bench/s11_call2_$f.txt"; done
grep "^compare round\|speedup\|_ms_per_step\|max_train" /tmp/cmp.out | cut -c1-200
for f in ev1 ev2 ev3; do echo "== $f"; tail -6 /tmp/$f.out | cut -c1-200; done
tail -3 "$OUT/bench/mlp_kernels_tests_s11_h200.txt"
cd "$OUT" && tar -cJf /tmp/s11.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s11.tar.xz "$OUT/"
