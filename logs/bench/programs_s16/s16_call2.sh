# Session 16, call 2 (four H200s of one host; carry .gpu8 .ab): GPU 0: tools/norm_rotary_probe.py (q/k kernel by rows per
# program x warps, q and k read in place as in training); if a config beats train_gpt's (32 rows, 4 warps) by 3% or more on
# q + k forward + backward, train_gpt.py with that config (.gpu8/s16_variant.py) is compared against main (.ab/main_s16.py),
# 20 steps x 2 rounds. At the same time, GPU 1: its CUDA kernel tests (in a copy of the repo), then the sliding pass
# A B B A; GPUs 2 and 3: the profile (--profile 3) of main and of the variant, side by side (the kernel's ms per step).
set -u
START=$(date +%s); since() { echo $(( $(date +%s) - START )); }
nvidia-smi --query-gpu=index,name --format=csv,noheader
rm -rf /tmp/repo_logs; mv logs /tmp/repo_logs && ln -s "$OUT" logs && mkdir -p "$OUT/bench"
export TOKENIZER_PATH=.gpu8/fineweb_1024_bpe.model PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8 DATA_PATH=.gpu8/data LATE_QAT_THRESHOLD=0 WARMUP_STEPS=3
B="$OUT/bench"; P="$B/norm_rotary_probe_s16_h200.txt"
CUDA_VISIBLE_DEVICES=0 timeout 200 python tools/norm_rotary_probe.py > "$P" 2>&1; echo "probe rc=$? at $(since) s"
PICK=$(python - "$P" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rows = re.findall(r"^rows +(\d+) warps (\d+) +(\S+) ms .* (\S+)x of train_gpt's$", t, re.M)
best = rows[0] if rows else None
print(f"{best[0]} {best[1]}" if best and (best[0], best[1]) != ("32", "4") and float(best[3]) >= 1.03 else "none")
PY
); echo "pick: $PICK"
if [ "$PICK" != "none" ] && [ -n "$PICK" ]; then
  set -- $PICK; V=.ab/rows${1}_warps${2}_s16.py; python .gpu8/s16_variant.py $1 $2 $V; echo "variant $V"
  (export CUDA_VISIBLE_DEVICES=1; rm -rf /tmp/vt; mkdir -p /tmp/vt; cp -r tests tools /tmp/vt/; cp $V /tmp/vt/train_gpt.py
   (cd /tmp/vt && timeout 150 python -m pytest -q tests/test_norm_rotary.py tests/test_training_runs.py -k "cuda" > "$B/norm_rotary_variant_tests_s16_h200.txt" 2>&1); echo "tests rc=$? at $(since) s"
   sl() { [ $(since) -lt 470 ] || return; RUN_ID=$1 timeout 80 python tools/bench.py eval --untrained --phases sliding --program $2 > "$B/$1_stdout.txt" 2>&1; echo "$1 rc=$? at $(since) s"; }
   sl eval_sliding_main_a1_rows_s16_h200 .ab/main_s16.py; sl eval_sliding_rows_b1_s16_h200 $V; sl eval_sliding_rows_b2_s16_h200 $V; sl eval_sliding_main_a2_rows_s16_h200 .ab/main_s16.py) &
  (CUDA_VISIBLE_DEVICES=2 RUN_ID=profile_main_rows_s16_h200 timeout 200 python tools/bench.py train --program .ab/main_s16.py --steps 12 --profile 3 > "$B/profile_main_rows_s16_h200_stdout.txt" 2>&1; echo "profile main rc=$? at $(since) s") &
  (CUDA_VISIBLE_DEVICES=3 RUN_ID=profile_rows_s16_h200 timeout 200 python tools/bench.py train --program $V --steps 12 --profile 3 > "$B/profile_rows_s16_h200_stdout.txt" 2>&1; echo "profile variant rc=$? at $(since) s") &
  CUDA_VISIBLE_DEVICES=0 RUN_ID=ab_norm_rotary_rows_s16_h200 timeout $(( 560 - $(since) )) python tools/bench.py compare --against .ab/main_s16.py --program $V --steps 20 --rounds 2 > "$B/s16_call2_compare_stdout.txt" 2>&1; echo "compare rc=$? at $(since) s"
  wait
  cp $V "$B/"
fi
grep -v "^\s*$" "$P" | cut -c1-130 | tail -60
tail -8 "$B/s16_call2_compare_stdout.txt" 2>/dev/null | cut -c1-200
tail -1 "$B/norm_rotary_variant_tests_s16_h200.txt" 2>/dev/null
for f in "$B"/profile_*_stdout.txt; do echo "== $(basename $f)"; grep -E "^(ms_per_step|profile_total|profile_other) " $f; grep "_norm_rotary_kernel" $f | head -1; done 2>/dev/null
for f in "$B"/eval_*_stdout.txt; do echo "== $(basename $f)"; grep -E "^sliding +2/2" $f | cut -c1-160; done 2>/dev/null
cd "$OUT" && tar -cJf /tmp/s16.tar.xz --dereference . && rm -rf "$OUT"/* && mv /tmp/s16.tar.xz "$OUT/"
