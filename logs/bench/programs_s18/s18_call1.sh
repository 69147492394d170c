# Session 18, call 1 (two H200s of one host; carry .gpu8 .ab): the MLP kernel keeping u's sign bits instead of u
# (branch s18-mlp-sign-bits, .ab/bits_s18.py) against main (.ab/main_s17.py). The checkout is the branch.
# Phase 1, GPU 0 alone: bench.py compare, 20 timed steps x 2 rounds (A B B A). At the same time on GPU 1: the CUDA
# kernel tests, then the kernel's three modes main vs branch (.gpu8/s18_kernel_ab.py).
# Phase 2: GPU 0 and 1 the 285-step curves of main and the branch (same data, seed 42, mixer and TTT off).
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
rm -rf /tmp/repo_logs; mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench" /tmp/art
python data/docs_to_shards.py --input .gpu8/proxy_train_extra.jsonl.xz --tokenizer .gpu8/fineweb_1024_bpe.model --output-dir /tmp/d --workers 16 > /dev/null 2>&1 && cp .gpu8/data/fineweb_val_000000.bin /tmp/d/; echo "data ready at $(since) s"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
(CUDA_VISIBLE_DEVICES=1 timeout 120 python -m pytest -q tests/test_mlp_kernels.py > "$OUT/bench/mlp_kernel_tests_bits_s18_h200.txt" 2>&1; echo "tests rc=$? at $(since) s"
 CUDA_VISIBLE_DEVICES=1 timeout 100 python .gpu8/s18_kernel_ab.py > "$OUT/bench/mlp_kernel_ab_bits_s18_h200.txt" 2>&1; echo "kernel a/b rc=$? at $(since) s") &
CUDA_VISIBLE_DEVICES=0 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3 RUN_ID=ab_mlp_sign_bits_s18_h200 timeout 260 python tools/bench.py compare --against .ab/main_s17.py --program .ab/bits_s18.py --steps 20 --rounds 2 > "$OUT/bench/s18_call1_compare_stdout.txt" 2>&1; echo "compare rc=$? at $(since) s"
wait
tail -3 "$OUT/bench/mlp_kernel_tests_bits_s18_h200.txt"; cat "$OUT/bench/mlp_kernel_ab_bits_s18_h200.txt" | cut -c1-200
tail -10 "$OUT/bench/s18_call1_compare_stdout.txt" | cut -c1-200
left=$(( 580 - $(since) ))
for side in main bits; do
  gpu=$([ $side = main ] && echo 0 || echo 1)
  (CUDA_VISIBLE_DEVICES=$gpu DATA_PATH=/tmp/d SEED=42 ITERATIONS=285 WARMDOWN_ITERS=135 MAX_WALLCLOCK_SECONDS=0 MUON_MOMENTUM_WARMUP_STEPS=58 TRAIN_LOG_EVERY=1 WARMUP_STEPS=5 NGRAM_ENABLED=0 TTT_ENABLED=0 \
    RUN_ID=curve_${side}_s18_h200 ARTIFACT_PATH=/tmp/art/$side.ptz timeout $left python .ab/${side}_s1$([ $side = main ] && echo 7 || echo 8).py > "$OUT/bench/s18_call1_curve_${side}_stdout.txt" 2>&1; echo "curve $side rc=$? at $(since) s") &
done
wait
for side in main bits; do grep -E "^step:(100|200|285)/|^final|^pre_quant|peak" "$OUT/curve_${side}_s18_h200.txt" | cut -c1-160; tail -2 "$OUT/bench/s18_call1_curve_${side}_stdout.txt" | cut -c1-200; done
RUN_ID=curves_mlp_sign_bits_s18_h200 python tools/bench.py curves "$OUT/curve_main_s18_h200.txt" "$OUT/curve_bits_s18_h200.txt" 2>&1 | tail -12 | cut -c1-200
cd "$OUT" && tar -cJf /tmp/s18.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s18.tar.xz "$OUT/"
