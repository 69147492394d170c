# Session 13, call 3 (two H200s of one host; carry .gpu8 .ab): DDP on 2 GPUs, A B B A:
# main (.ab/head_s13.py) and CUDA-graph training (.ab/cg_s13.py), bench.py train --steps 20 each.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
ddp() { RUN_ID=$1 timeout 120 torchrun --standalone --nproc_per_node=2 tools/bench.py train --steps 20 --program $2 > "$OUT/bench/$1.stdout" 2>&1; echo "$1 rc=$? at $(since) s"; }
ddp train_2gpu_head_a1_s13_h200 .ab/head_s13.py
ddp train_2gpu_cudagraphs_b1_s13_h200 .ab/cg_s13.py
ddp train_2gpu_cudagraphs_b2_s13_h200 .ab/cg_s13.py
[ $(since) -lt 470 ] && ddp train_2gpu_head_a2_s13_h200 .ab/head_s13.py
for f in "$OUT"/bench/train_2gpu_*.stdout; do echo "$(basename $f) $(grep -E '^(ms_per_step|peak_memory_mib) ' $f | awk '{print $1"="$2}' | tr '\n' ' ')"; done
cd "$OUT" && tar -cJf /tmp/s13.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s13.tar.xz "$OUT/"
