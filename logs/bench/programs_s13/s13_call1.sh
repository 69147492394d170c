# Session 13, call 1 (one H200; carry .gpu8 .ab): branch s13-cudagraphs-train (training forward and
# backward as CUDA graphs, never run on a GPU before) against main.
# 1. bench.py train --profile 3 --gaps of the branch, with TORCH_LOGS=perf_hints: does inductor skip
#    the graphs (mutated inputs etc.)?  and where the gaps went (main: 17.23 ms/step, gaps_main_s12_h200)
# 2. bench.py compare A B B A, 20 steps: ms/step, peak memory, train-loss difference.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
TORCH_LOGS=perf_hints RUN_ID=gaps_cudagraphs_s13_h200 timeout 200 python tools/bench.py train --program .ab/cg_s13.py --steps 12 --profile 3 --gaps > "$OUT/bench/s13_call1_gaps_stdout.txt" 2>&1; echo "gaps rc=$? at $(since) s"
RUN_ID=ab_cudagraphs_s13_h200 timeout $(( 585 - $(since) )) python tools/bench.py compare --against .ab/head_s13.py --program .ab/cg_s13.py --steps 20 --rounds 2 > "$OUT/bench/s13_call1_compare_stdout.txt" 2>&1; echo "compare rc=$? at $(since) s"
f="$OUT/bench/s13_call1_gaps_stdout.txt"; grep -i -m5 "skip\|cudagraph" $f | cut -c1-300; grep "^ms_per_step \|^peak\|^profile_total\|^gap_ms" $f; sed -n '/^gaps:/,$p' $f | cut -c1-170 | head -12; tail -5 $f | cut -c1-300
tail -12 "$OUT/bench/s13_call1_compare_stdout.txt" | cut -c1-300
cd "$OUT" && tar -cJf /tmp/s13.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s13.tar.xz "$OUT/"
