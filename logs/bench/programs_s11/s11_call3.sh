# Session 11, call 3 (one H200; carry .gpu8 .ab): the MLP kernel's CUDA tests again (tolerances fixed);
# the TTT pass (TTT_CHUNK_TOKENS=4096, two calls each) of main at 5a2909a, then of the MLP kernels;
# then a 285-step curve of the MLP kernels (seed 42, the documents tokenized as in session 10's curves).
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench" /tmp/art
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16
( python data/docs_to_shards.py --input .gpu8/proxy_train_extra.jsonl.xz --tokenizer .gpu8/fineweb_1024_bpe.model --output-dir /tmp/d --workers 12 > /tmp/tokenize.txt 2>&1 && cp .gpu8/data/fineweb_val_000000.bin /tmp/d/; echo "tokenized rc=$? at $(since) s" ) &
python -m pytest -q tests/test_mlp_kernels.py > "$OUT/bench/mlp_kernels_tests_fixed_s11_h200.txt" 2>&1; echo "tests rc=$? at $(since) s"
ev() { DATA_PATH=.gpu8/data RUN_ID=$1 TTT_CHUNK_TOKENS=4096 timeout 100 python tools/bench.py eval --untrained --phases ttt --repeat 2 --program $2 > /tmp/$1.out 2>&1; echo "$1 rc=$? at $(since) s"; }
ev eval_ttt_qkv_main_s11_h200 .ab/qkv_main_s11.py
ev eval_ttt_mlp_kernels_r2_s11_h200 .ab/mlp_kernels_s11.py
wait
env DATA_PATH=/tmp/d SEED=42 ITERATIONS=285 WARMDOWN_ITERS=135 MAX_WALLCLOCK_SECONDS=0 MUON_MOMENTUM_WARMUP_STEPS=58 TRAIN_LOG_EVERY=1 WARMUP_STEPS=5 \
  RUN_ID=curve_mlp_kernels_s11_h200 ARTIFACT_PATH=/tmp/art/new.ptz timeout $(( 588 - $(since) )) python .ab/mlp_kernels_s11.py > /tmp/curve.out 2>&1; echo "curve rc=$? at $(since) s"
cp /tmp/curve.out "$OUT/bench/s11_call3_curve_stdout.txt"; cp /tmp/tokenize.txt "$OUT/bench/s11_call3_tokenize.txt"
tail -1 "$OUT/bench/mlp_kernels_tests_fixed_s11_h200.txt"
grep -h "phase:ttt" /tmp/eval_ttt_*.out | cut -c1-220
grep -E "^step:(100|200|285)/|^final|peak" "$OUT/curve_mlp_kernels_s11_h200.txt" | cut -c1-160
RUN_ID=curves_mlp_kernels_s11_h200 python tools/bench.py curves /tmp/repo_logs/bench/curve_norm_rotary_kernels_s10_h200.txt "$OUT/curve_mlp_kernels_s11_h200.txt" 2>&1 | tail -12 | cut -c1-200
cd "$OUT" && tar -cJf /tmp/s11.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s11.tar.xz "$OUT/"
