# Session 12, call 1 (one H200; carry .gpu8 .ab):
# 1. CUDA tests: test_mlp_kernels + test_norm_rotary (two re-toleranced tests never run on a GPU) and
#    the new tail-of-hidden / tail-attention tests.
# 2. Sliding pass A B B A: main (.ab/head_s12.py) vs the last block computing only the scored
#    positions (.ab/tail_s12.py), --repeat 2 each (the first includes compile).
# 3. TTT pass A B: 5a2909a (.ab/qkv_main_s11.py) vs main, TTT_CHUNK_TOKENS=4096, --repeat 2.
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=16 DATA_PATH=.gpu8/data
timeout 100 python -m pytest -q tests/test_mlp_kernels.py tests/test_norm_rotary.py tests/test_model.py -k "cuda or last" > "$OUT/bench/kernel_tests_s12_h200.txt" 2>&1; echo "tests rc=$? at $(since) s"
sl() { RUN_ID=$1 timeout 80 python tools/bench.py eval --untrained --phases sliding --program $2 > "$OUT/bench/$1.stdout" 2>&1; echo "$1 rc=$? at $(since) s"; }
sl eval_sliding_head_a1_s12_h200 .ab/head_s12.py; sl eval_sliding_tail_b1_s12_h200 .ab/tail_s12.py
sl eval_sliding_tail_b2_s12_h200 .ab/tail_s12.py; sl eval_sliding_head_a2_s12_h200 .ab/head_s12.py
tt() { RUN_ID=$1 TTT_CHUNK_TOKENS=4096 timeout $3 python tools/bench.py eval --untrained --phases ttt --repeat 2 --program $2 > "$OUT/bench/$1.stdout" 2>&1; echo "$1 rc=$? at $(since) s"; }
tt eval_ttt_qkv_main_s12_h200 .ab/qkv_main_s11.py 150; tt eval_ttt_head_s12_h200 .ab/head_s12.py $(( 580 - $(since) ))
tail -3 "$OUT/bench/kernel_tests_s12_h200.txt"
for f in "$OUT"/bench/eval_*.stdout; do echo "== $(basename $f)"; grep -E "^(sliding|ttt) +[0-9]/|val_bpb" $f | cut -c1-160 | tail -4; done
cd "$OUT" && tar -cJf /tmp/s12.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s12.tar.xz "$OUT/"
