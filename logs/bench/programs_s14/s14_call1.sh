# Session 14, call 1 (two H200s of one host; carry .gpu8 .ab; working tree = branch s14-lagged-status).
# .ab/head_s14.py = main 08811ef (step lines timed to the step's end), .ab/flat_s14.py = + gradients in one
# buffer (no DDP), .ab/lag_s14.py = + status read one step late.
# GPU 0: compare head vs flat, then flat vs lag (A B B A, 20 steps), then --gaps of lag.
# GPU 1: the CUDA training test (working tree = lag), --gaps of head (host table), the 285-step curve of lag.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench" /tmp/art
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
python data/docs_to_shards.py --input .gpu8/proxy_train_extra.jsonl.xz --tokenizer .gpu8/fineweb_1024_bpe.model --output-dir /tmp/d --workers 12 > "$OUT/bench/s14_call1_tokenize.txt" 2>&1 && cp .gpu8/data/fineweb_val_000000.bin /tmp/d/; echo "tokenized rc=$? at $(since) s"
B="DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3"
( export CUDA_VISIBLE_DEVICES=0 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
  RUN_ID=ab_grads_one_buffer_s14_h200 timeout 240 python tools/bench.py compare --against .ab/head_s14.py --program .ab/flat_s14.py --steps 20 --rounds 2 > "$OUT/bench/s14_call1_compare1_stdout.txt" 2>&1; echo "compare1 rc=$? at $(since) s"
  RUN_ID=ab_lagged_status_s14_h200 timeout 240 python tools/bench.py compare --against .ab/flat_s14.py --program .ab/lag_s14.py --steps 20 --rounds 2 > "$OUT/bench/s14_call1_compare2_stdout.txt" 2>&1; echo "compare2 rc=$? at $(since) s"
  [ $(since) -lt 500 ] && RUN_ID=gaps_lagged_status_s14_h200 timeout $(( 580 - $(since) )) python tools/bench.py train --program .ab/lag_s14.py --steps 12 --profile 3 --gaps > "$OUT/bench/s14_call1_gaps_lag_stdout.txt" 2>&1; echo "gaps lag rc=$? at $(since) s" ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 200 python -m pytest -q tests/test_training_runs.py -k cuda_training > "$OUT/bench/cuda_graph_training_test_s14_h200.txt" 2>&1; echo "cuda test rc=$? at $(since) s"
  DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3 RUN_ID=gaps_head_s14_h200 timeout 150 python tools/bench.py train --program .ab/head_s14.py --steps 12 --profile 3 --gaps > "$OUT/bench/s14_call1_gaps_head_stdout.txt" 2>&1; echo "gaps head rc=$? at $(since) s"
  DATA_PATH=/tmp/d SEED=42 ITERATIONS=285 WARMDOWN_ITERS=135 MAX_WALLCLOCK_SECONDS=0 MUON_MOMENTUM_WARMUP_STEPS=58 TRAIN_LOG_EVERY=1 WARMUP_STEPS=5 \
    RUN_ID=curve_lagged_status_s14_h200 ARTIFACT_PATH=/tmp/art/lag.ptz timeout $(( 585 - $(since) )) python .ab/lag_s14.py > "$OUT/bench/s14_call1_curve_stdout.txt" 2>&1; echo "curve rc=$? at $(since) s" ) &
wait
tail -3 "$OUT/bench/cuda_graph_training_test_s14_h200.txt" | cut -c1-200
for n in 1 2; do tail -9 "$OUT/bench/s14_call1_compare${n}_stdout.txt" | cut -c1-200; done
for f in head lag; do echo "== gaps $f"; g="$OUT/bench/s14_call1_gaps_${f}_stdout.txt"; grep "^ms_per_step \|^peak\|^profile_total\|^gap_ms" $g; tail -4 $g | cut -c1-200; done
grep -E "^step:(100|200|285)/|^final|peak" "$OUT/curve_lagged_status_s14_h200.txt" | cut -c1-160; tail -3 "$OUT/bench/s14_call1_curve_stdout.txt" | cut -c1-250
RUN_ID=curves_lagged_status_s14_h200 python tools/bench.py curves /tmp/repo_logs/bench/curve_cudagraphs_s13_h200.txt "$OUT/curve_lagged_status_s14_h200.txt" 2>&1 | tail -12 | cut -c1-200
cd "$OUT" && tar -cJf /tmp/s14.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s14.tar.xz "$OUT/"
