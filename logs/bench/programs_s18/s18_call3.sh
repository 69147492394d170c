# Session 18, call 3 (one H200; carry .gpu8 .ab): call 2 found no way of keeping the sign that beat main; its variants again, and each with the backward epilogue on quarters of the tile (registers?).
# Kernel A/B of main and three ways to keep the sign (.gpu8/s18_kernel_ab3.py); then bench.py compare of the fastest
# against main if it beats main's forward + backward, and the CUDA kernel tests on it when its bits are packed.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
rm -rf /tmp/repo_logs; mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
timeout 150 python .gpu8/s18_kernel_ab3.py > "$OUT/bench/mlp_kernel_ab3_s18_h200.txt" 2>&1; echo "kernel a/b rc=$? at $(since) s"
cut -c1-200 "$OUT/bench/mlp_kernel_ab3_s18_h200.txt"
best=$(awk '/^fastest_variant/ {print $2, $3}' "$OUT/bench/mlp_kernel_ab3_s18_h200.txt")
set -- $best
if [ -n "${1:-}" ] && awk "BEGIN {exit !($2 > 1.0)}"; then
  case $1 in int8*) ;; *) cp .ab/$1.py train_gpt.py; timeout 100 python -m pytest -q tests/test_mlp_kernels.py > "$OUT/bench/mlp_kernel_tests_${1%_s18}_s18_h200.txt" 2>&1; echo "tests rc=$? at $(since) s"; tail -1 "$OUT/bench/mlp_kernel_tests_${1%_s18}_s18_h200.txt";; esac
  DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3 RUN_ID=ab_mlp_${1%_s18}_s18_h200 timeout 270 python tools/bench.py compare --against .ab/main_s17.py --program .ab/$1.py --steps 20 --rounds 2 > "$OUT/bench/s18_call3_compare_stdout.txt" 2>&1; echo "compare rc=$? at $(since) s"
  tail -10 "$OUT/bench/s18_call3_compare_stdout.txt" | cut -c1-200
else echo "no variant beats main's kernel: no compare"; fi
cd "$OUT" && tar -cJf /tmp/s18.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s18.tar.xz "$OUT/"
