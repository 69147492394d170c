# Session 15, call 3 (two H200s of one host, four not lent; carry .gpu8 .ab): the second overlap sweep (1, 2 or 4 epilogue
# pieces, five tile configs; on GPU 0 alone), then scaling of .ab/epi_s15.py on this one host: bench.py train
# --steps 20 with 1 and 2 processes, then 2 and 1 again while time allows.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
CUDA_VISIBLE_DEVICES=0 timeout 150 python tools/act_gemm_probe.py --overlap > "$OUT/bench/act_gemm_overlap2_s15_h200.txt" 2>&1; echo "probe rc=$? at $(since) s"
run() { [ $(since) -lt $3 ] || return; RUN_ID=$1 timeout 110 torchrun --standalone --nproc_per_node=$2 tools/bench.py train --steps 20 --program .ab/epi_s15.py > "$OUT/bench/$1.stdout" 2>&1; echo "$1 rc=$? at $(since) s"; }
run scaling_1gpu_r1_s15_h200 1 999; run scaling_2gpu_r1_s15_h200 2 999
run scaling_2gpu_r2_s15_h200 2 440; run scaling_1gpu_r2_s15_h200 1 470
tail -8 "$OUT/bench/act_gemm_overlap2_s15_h200.txt"
for f in "$OUT"/bench/scaling_*.stdout; do echo "$(basename $f) $(grep -E '^(ms_per_step|ms_per_step_steady|tokens_per_s_per_gpu|peak_memory_mib) ' $f | awk '{print $1"="$2}' | tr '\n' ' ')"; grep -m2 -i "error" $f | cut -c1-200; done
cd "$OUT" && tar -cJf /tmp/s15.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s15.tar.xz "$OUT/"
