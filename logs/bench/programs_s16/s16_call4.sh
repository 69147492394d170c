# Session 16, call 4 (four H200s of one host; carry .gpu8): main end to end on all four GPUs, the competitors' command
# (torchrun --standalone --nproc_per_node=4 train_gpt.py), 90 s of training on the proxy train set, full eval on the dev val.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
rm -rf /tmp/repo_logs; mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/e2e" /tmp/art
[ -f /tmp/d/fineweb_val_000000.bin ] || { python data/docs_to_shards.py --input .gpu8/proxy_train_extra.jsonl.xz --tokenizer .gpu8/fineweb_1024_bpe.model --output-dir /tmp/d --workers 16 > "$OUT/e2e/tokenize_call4_s16.txt" 2>&1 && cp .gpu8/data/fineweb_val_000000.bin /tmp/d/; }; echo "data ready at $(since) s"
export DATA_PATH=/tmp/d TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16
MAX_WALLCLOCK_SECONDS=90 WARMDOWN_ITERS=135 MUON_MOMENTUM_WARMUP_STEPS=58 TRAIN_LOG_EVERY=50 WARMUP_STEPS=5 SEED=42 RUN_ID=e2e_main_4gpu_90s_s16_h200 ARTIFACT_PATH=/tmp/art/e2e_main_4gpu.ptz \
  timeout 380 torchrun --standalone --nproc_per_node=4 train_gpt.py > "$OUT/e2e/e2e_main_4gpu_90s_s16_h200_stdout.txt" 2>&1; echo "4-GPU run rc=$? at $(since) s"
grep -E "^(world_size|stopping_early|training_done|pre_quant|export: int|artifact:|final_|ngram_only|ttt_only|ngram_audit|eval:|Traceback|ERROR)" "$OUT"/e2e_main_4gpu_90s_s16_h200.txt | cut -c1-200
tail -5 "$OUT/e2e/e2e_main_4gpu_90s_s16_h200_stdout.txt" | cut -c1-200
cd "$OUT" && tar -cJf /tmp/s16.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s16.tar.xz "$OUT/"
