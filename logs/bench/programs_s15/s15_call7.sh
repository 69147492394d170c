# Session 15, call 7 (one H200; carry .gpu8): the GPU tools after their timers became tools/cuda_timing.mean_ms:
# act_gemm_probe --overlap, mlp_fusion_probe, attention_bench, bench.copy_gb_per_s, each run once.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mkdir -p "$OUT/bench"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16
timeout 100 python tools/act_gemm_probe.py --overlap > "$OUT/bench/act_gemm_overlap_timer_s15_h200.txt" 2>&1; echo "act_gemm_probe rc=$? at $(since) s"
timeout 100 python tools/attention_bench.py > "$OUT/bench/attention_bench_timer_s15_h200.txt" 2>&1; echo "attention_bench rc=$? at $(since) s"
timeout 60 python -c "import sys; sys.path.insert(0, 'tools'); import bench; print(f'copy_bandwidth {bench.copy_gb_per_s(\"cuda\"):.0f} GB/s')" > "$OUT/bench/copy_bandwidth_timer_s15_h200.txt" 2>&1; echo "copy rc=$? at $(since) s"
timeout $(( 290 - $(since) )) python tools/mlp_fusion_probe.py > "$OUT/bench/mlp_fusion_probe_timer_s15_h200.txt" 2>&1; echo "mlp_fusion_probe rc=$? at $(since) s"
for f in "$OUT"/bench/*.txt; do echo "== $(basename $f)"; tail -6 $f | cut -c1-150; done
