# Session 10, call 5 (nvidia-h200-x2, warm from call 4; carry .gpu8 .ab): the TTT + mixer pass (scoring:
# forward; TTT training: forward and backward) at a rank's 8-GPU share, HEAD (.ab/head_s10.py) and the
# working tree, A B on GPU0 and B A on GPU1 at the same time, nothing else on the host (call 4's eval
# shared its host with a compare's compile).
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export DATA_PATH=.gpu8/data TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16
ev() {  # GPU RUN_ID PROGRAM
  CUDA_VISIBLE_DEVICES=$1 RUN_ID=$2 TTT_CHUNK_TOKENS=4096 timeout $(( 220 - $(since) )) python tools/bench.py eval --untrained --phases ttt --repeat 2 --program $3 > /tmp/$2.out 2>&1
  echo "$2 rc=$? at $(since) s"
}
( ev 0 eval_ttt_head_s10_h200_gpu0 .ab/head_s10.py; ev 0 eval_ttt_norm_rotary_s10_h200_gpu0 train_gpt.py ) &
( ev 1 eval_ttt_norm_rotary_s10_h200_gpu1 train_gpt.py; ev 1 eval_ttt_head_s10_h200_gpu1 .ab/head_s10.py ) &
wait
for f in /tmp/eval_ttt_*.out; do echo "== $f"; grep -E "^ttt |^eval:ttt seconds" $f | cut -c1-200; done
cd "$OUT" && tar -cJf /tmp/s10_call5.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s10_call5.tar.xz "$OUT/"
