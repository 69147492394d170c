# Session 15, call 4 (two H200s of one host; carry .gpu8 .ab): GPU 0: compare 4 pipeline stages for the MLP
# kernel's forward and inference modes (.ab/epi4_s15.py) against 3 (.ab/epi_s15.py), 20 steps x 2 rounds.
# GPU 1 at the same time: the time budget of .ab/epi4_s15.py (bench.py train --profile 3 --bandwidth).
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
(CUDA_VISIBLE_DEVICES=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor_bw RUN_ID=profile_bandwidth_epi4_s15_h200 timeout 250 python tools/bench.py train --program .ab/epi4_s15.py --steps 12 --profile 3 --bandwidth > "$OUT/bench/s15_call4_profile_stdout.txt" 2>&1; echo "profile rc=$? at $(since) s") &
CUDA_VISIBLE_DEVICES=0 RUN_ID=ab_mlp_stages_s15_h200 timeout 280 python tools/bench.py compare --against .ab/epi_s15.py --program .ab/epi4_s15.py --steps 20 --rounds 2 > "$OUT/bench/s15_call4_compare_stdout.txt" 2>&1; echo "compare rc=$? at $(since) s"
wait
tail -10 "$OUT/bench/s15_call4_compare_stdout.txt" | cut -c1-200
g="$OUT/bench/s15_call4_profile_stdout.txt"; grep -E "^(ms_per_step|profile_|compiled_)" $g; sed -n '/^top kernels/,+6p' $g | cut -c1-120
cd "$OUT" && tar -cJf /tmp/s15.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s15.tar.xz "$OUT/"
