# Session 12, call 3 (one H200; carry .gpu8 .ab):
# 1. The sliding tail on trained weights: main (.ab/head_s12.py) trains 100 steps (no TTT, no mixer) and
#    scores its artifact; the tail branch (.ab/tail_s12.py) scores the same artifact (EVAL_ONLY=1).
# 2. main's step profiled with bytes (the first profile since the MLP kernel landed).
# 3. TTT pass, second pair B A: main, then 5a2909a (call 1 ran A B), TTT_CHUNK_TOKENS=4096, --repeat 2.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench" /tmp/art
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16 DATA_PATH=.gpu8/data
common="SEED=42 TTT_ENABLED=0 NGRAM_ENABLED=0 ARTIFACT_PATH=/tmp/art/main100.ptz"
env $common ITERATIONS=100 WARMDOWN_ITERS=40 MAX_WALLCLOCK_SECONDS=0 WARMUP_STEPS=3 TRAIN_LOG_EVERY=20 RUN_ID=tail_check_train_main_s12_h200 \
  timeout 260 python .ab/head_s12.py > "$OUT/bench/s12_call3_train_stdout.txt" 2>&1; echo "train+eval main rc=$? at $(since) s"
env $common EVAL_ONLY=1 RUN_ID=tail_check_eval_tail_s12_h200 timeout 120 python .ab/tail_s12.py > "$OUT/bench/s12_call3_eval_stdout.txt" 2>&1; echo "eval tail rc=$? at $(since) s"
[ $(since) -lt 420 ] && RUN_ID=profile_bandwidth_main_s12_h200 LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3 timeout 130 python tools/bench.py train --program .ab/head_s12.py --steps 12 --profile 3 --bandwidth > "$OUT/bench/s12_call3_profile_stdout.txt" 2>&1; echo "profile rc=$? at $(since) s"
tt() { RUN_ID=$1 TTT_CHUNK_TOKENS=4096 timeout $3 python tools/bench.py eval --untrained --phases ttt --repeat 2 --program $2 > "$OUT/bench/$1.stdout" 2>&1; echo "$1 rc=$? at $(since) s"; }
[ $(since) -lt 420 ] && tt eval_ttt_head_r2_s12_h200 .ab/head_s12.py 90
[ $(since) -lt 500 ] && tt eval_ttt_qkv_main_r2_s12_h200 .ab/qkv_main_s11.py $(( 588 - $(since) ))
grep -hE "^(final_int6|eval:|export:|artifact:|step:100/)" "$OUT"/tail_check_*.txt | cut -c1-200
grep "^ms_per_step \|^peak_memory\|^profile_\|^compiled_gb" "$OUT/bench/s12_call3_profile_stdout.txt"
grep -h "phase:ttt" "$OUT"/bench/eval_ttt_*.stdout | cut -c1-200
cd "$OUT" && tar -cJf /tmp/s12.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s12.tar.xz "$OUT/"
