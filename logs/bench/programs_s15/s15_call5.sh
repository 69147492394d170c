# Session 15, call 5 (two H200s of one host; carry .gpu8 .ab): the code that lands (.ab/epi_s15.py, 3 stages in
# every mode; call 4 found 4 stages 0.999x): GPU 1 its time budget (--profile 3 --bandwidth), GPU 0 at the same
# time its step-boundary gaps (--profile 3 --gaps).
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
rm -rf /tmp/repo_logs; mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
(CUDA_VISIBLE_DEVICES=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor_bw RUN_ID=profile_bandwidth_epi_s15_h200 timeout 200 python tools/bench.py train --program .ab/epi_s15.py --steps 12 --profile 3 --bandwidth > "$OUT/bench/s15_call5_profile_stdout.txt" 2>&1; echo "profile rc=$? at $(since) s") &
CUDA_VISIBLE_DEVICES=0 RUN_ID=gaps_epi_s15_h200 timeout 200 python tools/bench.py train --program .ab/epi_s15.py --steps 12 --profile 3 --gaps > "$OUT/bench/s15_call5_gaps_stdout.txt" 2>&1; echo "gaps rc=$? at $(since) s"
wait
g="$OUT/bench/s15_call5_profile_stdout.txt"; grep -E "^(ms_per_step|profile_|compiled_)" $g; sed -n '/^top kernels/,+6p' $g | cut -c1-120
g="$OUT/bench/s15_call5_gaps_stdout.txt"; grep "^ms_per_step \|^profile_total\|^gap_ms\|^long_gap" $g; sed -n '/^gaps by/,+6p' $g | cut -c1-170
cd "$OUT" && tar -cJf /tmp/s15.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s15.tar.xz "$OUT/"
