# Session 10, call 2 (nvidia-h200-x4; carry .gpu .gpu8 .ab): the hand-written q/k norm + rotary + gain
# kernels (working tree) against HEAD (.ab/head_s10.py).
# GPU0: their CUDA tests, the tile probe, then bench.py compare (20 timed steps, A B B A).
# GPU1: the working tree's step profiled with each compiled kernel's bytes.
# GPU2/GPU3: 285-step curves of HEAD and of the working tree, same data and seed, full eval after.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench" /tmp/art
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16
(
  export CUDA_VISIBLE_DEVICES=0 DATA_PATH=.gpu8/data
  python -m pytest -q tests/test_norm_rotary.py > "$OUT/bench/norm_rotary_tests_s10_h200.txt" 2>&1; echo "tests rc=$? at $(since) s"
  python tools/norm_rotary_probe.py > "$OUT/bench/norm_rotary_probe_s10_h200.txt" 2>&1; echo "probe rc=$? at $(since) s"
  RUN_ID=ab_norm_rotary_kernels_s10_h200 LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3 timeout $(( 540 - $(since) )) python tools/bench.py compare --against .ab/head_s10.py --steps 20 --rounds 2 > /tmp/cmp.out 2>&1
  echo "compare rc=$? at $(since) s"
) &
( CUDA_VISIBLE_DEVICES=1 DATA_PATH=.gpu8/data RUN_ID=profile_bandwidth_kernels_s10_h200 LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3 TORCHINDUCTOR_CACHE_DIR=/tmp/ind_bw timeout 400 python tools/bench.py train --steps 12 --profile 3 --bandwidth > /tmp/bw.out 2>&1; echo "bandwidth rc=$? at $(since) s" ) &
(
  python data/docs_to_shards.py --input .gpu/proxy_train_extra.jsonl.xz --tokenizer .gpu/fineweb_1024_bpe.model --output-dir /tmp/d --workers 32 > /tmp/tokenize.txt 2>&1 && cp .gpu/fineweb_val_000000.bin /tmp/d/ || cat /tmp/tokenize.txt
  echo "data ready at $(since) s"
  CURVE="DATA_PATH=/tmp/d SEED=42 ITERATIONS=285 WARMDOWN_ITERS=135 MAX_WALLCLOCK_SECONDS=0 MUON_MOMENTUM_WARMUP_STEPS=58 TRAIN_LOG_EVERY=1 WARMUP_STEPS=5"
  LEFT=$(( 550 - $(since) ))
  ( env CUDA_VISIBLE_DEVICES=2 $CURVE RUN_ID=curve_head_s10_h200 ARTIFACT_PATH=/tmp/art/head.ptz timeout $LEFT python .ab/head_s10.py > /tmp/g2.out 2>&1; echo "curve head rc=$? at $(since) s" ) &
  ( env CUDA_VISIBLE_DEVICES=3 $CURVE RUN_ID=curve_norm_rotary_kernels_s10_h200 ARTIFACT_PATH=/tmp/art/new.ptz timeout $LEFT python train_gpt.py > /tmp/g3.out 2>&1; echo "curve new rc=$? at $(since) s" ) &
  wait
) &
wait
cat "$OUT/bench/norm_rotary_tests_s10_h200.txt" | tail -3; cat "$OUT/bench/norm_rotary_probe_s10_h200.txt"
grep "^compare round\|speedup\|_ms_per_step\|max_train" /tmp/cmp.out | cut -c1-200
grep -A14 "^bandwidth:" /tmp/bw.out | cut -c1-200; grep "^ms_per_step \|^peak_memory\|^profile_" /tmp/bw.out
for f in "$OUT"/curve_*.txt; do echo "== $f"; grep -E "^step:(10|100|200|285)/|^final|peak memory" "$f" | cut -c1-160; done
tail -3 /tmp/g3.out | cut -c1-300
RUN_ID=curves_norm_rotary_kernels_s10_h200 python tools/bench.py curves "$OUT/curve_head_s10_h200.txt" "$OUT/curve_norm_rotary_kernels_s10_h200.txt" 2>&1 | tail -14 | cut -c1-200
cd "$OUT" && tar -cJf /tmp/s10_call2.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s10_call2.tar.xz "$OUT/" && ls -la "$OUT"
