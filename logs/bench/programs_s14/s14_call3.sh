# Session 14, call 3 (four H200s of one host; carry .gpu8 .ab): 4-GPU runs, bench.py train --steps 20 each,
# in the order main (DDP), flat (one all-reduce), lag2 (+ status read one step late), lag2, flat, main.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
ddp() { [ $(since) -lt $3 ] || return; RUN_ID=$1 timeout 110 torchrun --standalone --nproc_per_node=4 tools/bench.py train --steps 20 --program $2 > "$OUT/bench/$1.stdout" 2>&1; echo "$1 rc=$? at $(since) s"; }
ddp train_4gpu_head_r1_s14_h200 .ab/head_s14.py 999
ddp train_4gpu_flat_r1_s14_h200 .ab/flat_s14.py 999
ddp train_4gpu_lag_r1_s14_h200 .ab/lag2_s14.py 999
ddp train_4gpu_lag_r2_s14_h200 .ab/lag2_s14.py 400
ddp train_4gpu_flat_r2_s14_h200 .ab/flat_s14.py 430
ddp train_4gpu_head_r2_s14_h200 .ab/head_s14.py 460
for f in "$OUT"/bench/train_4gpu_*.stdout; do echo "$(basename $f) $(grep -E '^(ms_per_step|tokens_per_s_per_gpu|peak_memory_mib) ' $f | awk '{print $1"="$2}' | tr '\n' ' ')"; grep -m2 -i "error" $f | cut -c1-200; done
cd "$OUT" && tar -cJf /tmp/s14.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s14.tar.xz "$OUT/"
