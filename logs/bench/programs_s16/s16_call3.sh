# Session 16, call 3 (four H200s of one host; carry .gpu8 .ab): the whole program end to end, as users run it, at main
# (c6ab386's train_gpt.py = d4929fb's) against 68ff6fb (the code of the README's Results), one GPU each, all four at once:
# the Results protocol (220 s of training, the 51M-token proxy train set, the dev val; full eval: roundtrip, sliding,
# mixer, TTT). GPU 0: main seed 42 (torchrun); GPU 1: 68ff6fb seed 42; GPU 2: main seed 1337; GPU 3: 68ff6fb seed 1337.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
rm -rf /tmp/repo_logs; mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/e2e" /tmp/art
python data/docs_to_shards.py --input .gpu8/proxy_train_extra.jsonl.xz --tokenizer .gpu8/fineweb_1024_bpe.model --output-dir /tmp/d --workers 16 > "$OUT/e2e/tokenize_s16.txt" 2>&1 && cp .gpu8/data/fineweb_val_000000.bin /tmp/d/; echo "tokenized rc=$? at $(since) s"
export DATA_PATH=/tmp/d TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16
export MAX_WALLCLOCK_SECONDS=220 WARMDOWN_ITERS=135 MUON_MOMENTUM_WARMUP_STEPS=58 TRAIN_LOG_EVERY=25 WARMUP_STEPS=5
job() { local gpu=$1 seed=$2 name=$3; shift 3
  (CUDA_VISIBLE_DEVICES=$gpu SEED=$seed RUN_ID=$name ARTIFACT_PATH=/tmp/art/$name.ptz timeout $(( 585 - $(since) )) "$@" > "$OUT/e2e/${name}_stdout.txt" 2>&1; echo "$name rc=$? at $(since) s") & }
job 0 42 e2e_main_seed42_s16_h200 torchrun --standalone --nproc_per_node=1 train_gpt.py
job 1 42 e2e_68ff6fb_seed42_s16_h200 python .ab/old_68ff6fb.py
job 2 1337 e2e_main_seed1337_s16_h200 python train_gpt.py
job 3 1337 e2e_68ff6fb_seed1337_s16_h200 python .ab/old_68ff6fb.py
wait
ls -la /tmp/art
for f in "$OUT"/*.txt; do echo "== $(basename $f)"; grep -E "^(stopping_early|training_done|pre_quant|export: int|artifact:|final_|ngram_only|ttt_only|ngram_audit|eval:ngram_ttt seconds|Traceback|ERROR)" $f | cut -c1-200; done
cd "$OUT" && tar -cJf /tmp/s16.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s16.tar.xz "$OUT/"
