"""Writes train_gpt.py with the q/k kernel launched at ROWS rows per program and WARPS warps: python s16_variant.py ROWS WARPS OUT"""
import sys
rows, warps, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = open("train_gpt.py").read()
edits = [("_norm_rotary_kernel[(triton.cdiv(rows, 32),)](", f"_norm_rotary_kernel[(triton.cdiv(rows, {rows}),)]("),
         ("ROWS=32, BACKWARD=grad is not None,", f"ROWS={rows}, BACKWARD=grad is not None,"),
         ("WIDE=B * x.stride(0) >= INT32_OFFSETS)", f"WIDE=B * x.stride(0) >= INT32_OFFSETS, num_warps={warps})")]
for old, new in edits:
    assert s.count(old) == 1, old
    s = s.replace(old, new)
open(out, "w").write(s)
