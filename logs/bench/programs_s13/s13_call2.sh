# Session 13, call 2 (two H200s of one host; carry .gpu8 .ab):
# 1. DDP on 2 GPUs: bench.py train, main (.ab/head_s13.py) then CUDA-graph training (.ab/cg_s13.py).
# 2. At the same time, each on its own GPU:
#    GPU 0: bench.py compare A B B A of CUDA graphs (.ab/cg_s13.py) against CUDA graphs + the qkv_heads op
#           (.ab/cgqkv_s13.py): without host gaps, does the op's kernel-time saving count?
#    GPU 1: the 285-step curve of CUDA-graph training (seed 42, documents tokenized as in s10/s11 curves),
#           against curve_mlp_kernels_s11_h200 (main's training code).
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench" /tmp/art
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
python data/docs_to_shards.py --input .gpu8/proxy_train_extra.jsonl.xz --tokenizer .gpu8/fineweb_1024_bpe.model --output-dir /tmp/d --workers 12 > "$OUT/bench/s13_call2_tokenize.txt" 2>&1 && cp .gpu8/data/fineweb_val_000000.bin /tmp/d/; echo "tokenized rc=$? at $(since) s"
ddp() { DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3 RUN_ID=$1 timeout 110 torchrun --standalone --nproc_per_node=2 tools/bench.py train --steps 20 --program $2 > "$OUT/bench/$1.stdout" 2>&1; echo "$1 rc=$? at $(since) s"; }
ddp train_2gpu_head_s13_h200 .ab/head_s13.py
ddp train_2gpu_cudagraphs_s13_h200 .ab/cg_s13.py
( CUDA_VISIBLE_DEVICES=0 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3 RUN_ID=ab_cg_qkv_heads_s13_h200 timeout $(( 585 - $(since) )) python tools/bench.py compare --against .ab/cg_s13.py --program .ab/cgqkv_s13.py --steps 20 --rounds 2 > "$OUT/bench/s13_call2_compare_stdout.txt" 2>&1; echo "compare rc=$? at $(since) s" ) &
CUDA_VISIBLE_DEVICES=1 DATA_PATH=/tmp/d SEED=42 ITERATIONS=285 WARMDOWN_ITERS=135 MAX_WALLCLOCK_SECONDS=0 MUON_MOMENTUM_WARMUP_STEPS=58 TRAIN_LOG_EVERY=1 WARMUP_STEPS=5 \
  RUN_ID=curve_cudagraphs_s13_h200 ARTIFACT_PATH=/tmp/art/cg.ptz timeout $(( 585 - $(since) )) python .ab/cg_s13.py > "$OUT/bench/s13_call2_curve_stdout.txt" 2>&1; echo "curve rc=$? at $(since) s"
wait
for f in "$OUT"/bench/train_2gpu_*.stdout; do echo "== $(basename $f)"; grep -E "^(ms_per_step|tokens_per_s_per_gpu|peak_memory_mib) " $f; grep -m3 -i "error" $f | cut -c1-250; done
tail -8 "$OUT/bench/s13_call2_compare_stdout.txt" | cut -c1-250
grep -E "^step:(100|200|285)/|^final|peak" "$OUT/curve_cudagraphs_s13_h200.txt" | cut -c1-160; tail -3 "$OUT/bench/s13_call2_curve_stdout.txt" | cut -c1-250
RUN_ID=curves_cudagraphs_s13_h200 python tools/bench.py curves /tmp/repo_logs/bench/curve_mlp_kernels_s11_h200.txt "$OUT/curve_cudagraphs_s13_h200.txt" 2>&1 | tail -12 | cut -c1-200
cd "$OUT" && tar -cJf /tmp/s13.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s13.tar.xz "$OUT/"
