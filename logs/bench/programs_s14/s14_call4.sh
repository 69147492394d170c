# Session 14, call 4 (one H200; carry .gpu8 .ab): compare main vs flat gradients alone on the machine
# (call 1's ran beside other work), then --gaps of flat (steps counted by the host's Muon ranges).
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
RUN_ID=ab_grads_one_buffer_alone_s14_h200 timeout 230 python tools/bench.py compare --against .ab/head_s14.py --program .ab/flat_s14.py --steps 20 --rounds 2 > "$OUT/bench/s14_call4_compare_stdout.txt" 2>&1; echo "compare rc=$? at $(since) s"
[ $(since) -lt 250 ] && RUN_ID=gaps_grads_one_buffer_s14_h200 timeout $(( 330 - $(since) )) python tools/bench.py train --program .ab/flat_s14.py --steps 12 --profile 3 --gaps > "$OUT/bench/s14_call4_gaps_stdout.txt" 2>&1; echo "gaps rc=$? at $(since) s"
tail -9 "$OUT/bench/s14_call4_compare_stdout.txt" | cut -c1-200
g="$OUT/bench/s14_call4_gaps_stdout.txt"; grep "^ms_per_step \|^profile: \|^profile_total\|^gap_ms\|^long_gap" $g; sed -n '/^gaps by/,+6p' $g | cut -c1-170; tail -2 $g | cut -c1-200
cd "$OUT" && tar -cJf /tmp/s14.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s14.tar.xz "$OUT/"
