# Session 17, call 2 (four H200s of one host; carry .gpu8 .ab): XSA as one reduction (branch s17-xsa-one-reduction,
# .ab/xsa_s17.py) against main (.ab/main_s17.py).
# Phase 1, GPU 0 alone: bench.py compare, 20 timed steps x 2 rounds (A B B A).
# Phase 2, at the same time: GPU 0 and 1 the 285-step curves of main and the branch (same data, seed 42, step-based
# schedule; mixer and TTT off so that the call fits); GPU 2 the branch's time budget (--profile 3 --bandwidth).
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
rm -rf /tmp/repo_logs; mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench" /tmp/art
python data/docs_to_shards.py --input .gpu8/proxy_train_extra.jsonl.xz --tokenizer .gpu8/fineweb_1024_bpe.model --output-dir /tmp/d --workers 16 > /dev/null 2>&1 && cp .gpu8/data/fineweb_val_000000.bin /tmp/d/; echo "data ready at $(since) s"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
CUDA_VISIBLE_DEVICES=0 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3 RUN_ID=ab_xsa_one_reduction_s17_h200 timeout 260 python tools/bench.py compare --against .ab/main_s17.py --program .ab/xsa_s17.py --steps 20 --rounds 2 > "$OUT/bench/s17_call2_compare_stdout.txt" 2>&1; echo "compare rc=$? at $(since) s"
tail -10 "$OUT/bench/s17_call2_compare_stdout.txt" | cut -c1-200
left=$(( 585 - $(since) ))
(CUDA_VISIBLE_DEVICES=2 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3 RUN_ID=profile_bandwidth_xsa_s17_h200 timeout $left python tools/bench.py train --program .ab/xsa_s17.py --steps 12 --profile 3 --bandwidth > "$OUT/bench/s17_call2_profile_stdout.txt" 2>&1; echo "profile rc=$? at $(since) s") &
for side in main xsa; do
  gpu=$([ $side = main ] && echo 0 || echo 1)
  (CUDA_VISIBLE_DEVICES=$gpu DATA_PATH=/tmp/d SEED=42 ITERATIONS=285 WARMDOWN_ITERS=135 MAX_WALLCLOCK_SECONDS=0 MUON_MOMENTUM_WARMUP_STEPS=58 TRAIN_LOG_EVERY=1 WARMUP_STEPS=5 NGRAM_ENABLED=0 TTT_ENABLED=0 \
    RUN_ID=curve_${side}_s17_h200 ARTIFACT_PATH=/tmp/art/$side.ptz timeout $left python .ab/${side}_s17.py > "$OUT/bench/s17_call2_curve_${side}_stdout.txt" 2>&1; echo "curve $side rc=$? at $(since) s") &
done
wait
for side in main xsa; do grep -E "^step:(100|200|285)/|^final|^pre_quant|peak" "$OUT/curve_${side}_s17_h200.txt" | cut -c1-160; tail -2 "$OUT/bench/s17_call2_curve_${side}_stdout.txt" | cut -c1-200; done
RUN_ID=curves_xsa_one_reduction_s17_h200 python tools/bench.py curves "$OUT/curve_main_s17_h200.txt" "$OUT/curve_xsa_s17_h200.txt" 2>&1 | tail -12 | cut -c1-200
g="$OUT/bench/s17_call2_profile_stdout.txt"; grep -E "^(ms_per_step|profile_|compiled_)" $g; grep -i "xsa\|linalg_vector_norm\|clamp_min" $g | head -12 | cut -c1-200
cd "$OUT" && tar -cJf /tmp/s17.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s17.tar.xz "$OUT/"
