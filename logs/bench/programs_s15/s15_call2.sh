# Session 15, call 2 (one H200; carry .gpu8 .ab): the MLP kernel's epilogue in two halves stored from registers
# (.ab/epi_s15.py) against main (.ab/head_s15.py): bit-for-bit outputs, the CUDA kernel tests, the training
# step (compare, 20 steps x 2 rounds, read speedup_steady), then the sliding pass A B B A.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
timeout 60 python .gpu8/s15_exact.py > "$OUT/bench/mlp_epilogue_exact_s15_h200.txt" 2>&1; echo "exact rc=$? at $(since) s"
timeout 90 python -m pytest -q tests/test_mlp_kernels.py > "$OUT/bench/mlp_kernel_tests_s15_h200.txt" 2>&1; echo "tests rc=$? at $(since) s"
RUN_ID=ab_mlp_epilogue_s15_h200 timeout 250 python tools/bench.py compare --against .ab/head_s15.py --program .ab/epi_s15.py --steps 20 --rounds 2 > "$OUT/bench/s15_call2_compare_stdout.txt" 2>&1; echo "compare rc=$? at $(since) s"
sl() { [ $(since) -lt 500 ] || return; RUN_ID=$1 timeout $(( 585 - $(since) < 80 ? 585 - $(since) : 80 )) python tools/bench.py eval --untrained --phases sliding --program $2 > "$OUT/bench/$1.stdout" 2>&1; echo "$1 rc=$? at $(since) s"; }
sl eval_sliding_epi_b1_s15_h200 .ab/epi_s15.py; sl eval_sliding_head_a1_s15_h200 .ab/head_s15.py
sl eval_sliding_head_a2_s15_h200 .ab/head_s15.py; sl eval_sliding_epi_b2_s15_h200 .ab/epi_s15.py
cat "$OUT/bench/mlp_epilogue_exact_s15_h200.txt" | tail -9; tail -1 "$OUT/bench/mlp_kernel_tests_s15_h200.txt"
tail -12 "$OUT/bench/s15_call2_compare_stdout.txt" | cut -c1-200
for f in "$OUT"/bench/eval_*.stdout; do echo "== $(basename $f)"; grep -E "^sliding +[0-9]/|val_bpb|seconds|tokens_per_s" $f | cut -c1-160 | tail -3; done
cd "$OUT" && tar -cJf /tmp/s15.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s15.tar.xz "$OUT/"
