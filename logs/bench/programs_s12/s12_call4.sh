# Session 12, call 4 (one H200; carry .gpu8 .ab): where the step's time without a kernel goes
# (bench.py train --profile 3 --gaps), main (.ab/head_s12.py) and the rejected qkv_heads variant
# (.ab/qkv_heads_s12.py) on the same machine.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
RUN_ID=gaps_main_s12_h200 timeout 150 python tools/bench.py train --program .ab/head_s12.py --steps 12 --profile 3 --gaps > "$OUT/bench/s12_call4_main_stdout.txt" 2>&1; echo "main rc=$? at $(since) s"
[ $(since) -lt 200 ] && RUN_ID=gaps_qkv_heads_s12_h200 timeout $(( 360 - $(since) )) python tools/bench.py train --program .ab/qkv_heads_s12.py --steps 12 --profile 3 --gaps > "$OUT/bench/s12_call4_qkv_heads_stdout.txt" 2>&1; echo "qkv_heads rc=$? at $(since) s"
for f in "$OUT"/bench/s12_call4_*_stdout.txt; do echo "== $f"; grep "^ms_per_step \|^profile_total" $f; sed -n '/^gaps:/,$p' $f | cut -c1-170 | head -20; done
cd "$OUT" && tar -cJf /tmp/s12.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s12.tar.xz "$OUT/"
