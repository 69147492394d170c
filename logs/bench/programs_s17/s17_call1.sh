# Session 17, call 1 (a FRESH 4xH200 host; carry .gpu8): main end to end on all four GPUs, the competitors' command,
# twice: first with an empty inductor cache (every rank compiles), then again (every rank finds its graphs cached).
# Settles session 16's open question (rank 0's 13.0 s mixer lap) and is the first GPU run of score_seconds_by_rank.
# The first run's inductor cache goes to a fresh folder, whose generated kernels are kept for an offline byte count.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
ls -d /tmp/torchinductor_* 2>/dev/null && echo "note: a default inductor cache folder already exists" || echo "no default inductor cache folder: a fresh machine"
rm -rf /tmp/repo_logs; mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/e2e" /tmp/art
python data/docs_to_shards.py --input .gpu8/proxy_train_extra.jsonl.xz --tokenizer .gpu8/fineweb_1024_bpe.model --output-dir /tmp/d --workers 16 > "$OUT/e2e/tokenize_call1_s17.txt" 2>&1 && cp .gpu8/data/fineweb_val_000000.bin /tmp/d/; echo "data ready at $(since) s"
export DATA_PATH=/tmp/d TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16 TORCHINDUCTOR_CACHE_DIR=/tmp/ic_s17
rm -rf /tmp/ic_s17
for pass in cold warm; do
  left=$(( 575 - $(since) )); [ $pass = cold ] && left=$(( left < 390 ? left : 390 ))
  echo "== $pass run, timeout ${left} s, at $(since) s"
  MAX_WALLCLOCK_SECONDS=45 WARMDOWN_ITERS=135 MUON_MOMENTUM_WARMUP_STEPS=58 TRAIN_LOG_EVERY=50 WARMUP_STEPS=5 SEED=42 RUN_ID=e2e_main_4gpu_45s_${pass}_s17_h200 ARTIFACT_PATH=/tmp/art/e2e_4gpu_$pass.ptz \
    timeout $left torchrun --standalone --nproc_per_node=4 train_gpt.py > "$OUT/e2e/e2e_main_4gpu_45s_${pass}_s17_h200_stdout.txt" 2>&1; echo "$pass run rc=$? at $(since) s"
  grep -E "^(compile_warmup done|stopping_early|training_done|pre_quant|final_|eval:[a-z0-9_]+ seconds|Traceback|ERROR)" "$OUT"/e2e_main_4gpu_45s_${pass}_s17_h200.txt | cut -c1-230
  if [ $pass = cold ]; then (cd /tmp/ic_s17 && find . -name "*.py" | tar -cJf "$OUT/e2e/inductor_code_s17_h200.tar.xz" -T -) ; du -sh /tmp/ic_s17 "$OUT/e2e/inductor_code_s17_h200.tar.xz"; fi
done
tail -3 "$OUT"/e2e/*_stdout.txt | cut -c1-200
cd "$OUT" && tar -cJf /tmp/s17.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s17.tar.xz "$OUT/"
