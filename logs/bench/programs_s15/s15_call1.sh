# Session 15, call 1 (one H200; carry .gpu8): the MLP kernel's epilogue overlap sweep (tools/act_gemm_probe.py
# --overlap), then the CUDA-only training tests on main's loop (graphs, waits at the status reads).
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mkdir -p "$OUT/bench"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16
timeout 300 python tools/act_gemm_probe.py --overlap > "$OUT/bench/act_gemm_overlap_s15_h200.txt" 2>&1; echo "probe rc=$? at $(since) s"
timeout $(( 560 - $(since) )) python -m pytest -q tests/test_training_runs.py -k "cuda_training or waits_for" > "$OUT/bench/s15_call1_cuda_tests.txt" 2>&1; echo "tests rc=$? at $(since) s"
tail -12 "$OUT/bench/act_gemm_overlap_s15_h200.txt"; grep -c " ms " "$OUT/bench/act_gemm_overlap_s15_h200.txt"
tail -5 "$OUT/bench/s15_call1_cuda_tests.txt" | cut -c1-300
