"""Session 16: does b2a7478's WIDE flag compile away? Compiles the two hand-written kernels of two
train_gpt.py files for sm_90 on the CPU (Triton's own ptxas; no GPU needed), WIDE=False where the
kernel has it, line info off, and compares PTX and cubin byte for byte.
  TRITON_DISABLE_LINE_INFO=1 python logs/bench/programs_s16/wide_flag_cubin.py BEFORE.py AFTER.py"""
import hashlib, importlib.util, os, re, sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

assert os.environ.get("TRITON_DISABLE_LINE_INFO") == "1", "line info names the file and its line numbers: turn it off"


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled(module, kernel, signature, constants, warps):
    fn = getattr(module, kernel)
    constants = {k: v for k, v in constants.items() if k in fn.arg_names}
    source = ASTSource(fn, signature={n: "constexpr" if n in constants else signature[n] for n in fn.arg_names},
                       constexprs={(fn.arg_names.index(k),): v for k, v in constants.items()})
    k = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": 3})
    ptx = re.sub(r"^\s*(//|\.file).*$", "", k.asm["ptx"], flags=re.M)
    return ptx, hashlib.sha256(k.asm["cubin"]).hexdigest()


before, after = load(sys.argv[1], "before"), load(sys.argv[2], "after")
digest = lambda path: hashlib.sha256(open(path, "rb").read()).hexdigest()
print(f"triton {triton.__version__}, target sm_90; before {sys.argv[1]} sha256 {digest(sys.argv[1])}, after {sys.argv[2]} sha256 {digest(sys.argv[2])}")
rotary = dict(x_ptr="*bf16", cos_ptr="*fp32", sin_ptr="*fp32", gain_ptr="*fp32", grad_ptr="*bf16", out_ptr="*bf16",
              row_dgain_ptr="*fp32", n_rows="i32", seq_len="i32", x_stride="i32")
gemm = dict(a_desc="tensordesc<bf16[128, 64]>", b_desc="tensordesc<bf16[256, 64]>", out_ptr="*bf16", u_ptr="*bf16", M="i32", N="i32", K="i32")
cases = [("_norm_rotary_kernel", rotary, dict(HEADS=8, DIM=64, BLOCK_DIM=64, HALF=8, ROWS=32, BACKWARD=b, WIDE=False), 4, f"BACKWARD={b}")
         for b in (False, True)]
cases += [("_act_gemm_kernel", gemm, dict(SLOPE=0.5, MODE=m, BM=128, BN=256, BK=64, PROGRAMS=132, WIDE=False), 8, f"MODE={m}") for m in (0, 1, 2)]
for kernel, signature, constants, warps, label in cases:
    (ptx_a, cubin_a), (ptx_b, cubin_b) = (compiled(m, kernel, signature, constants, warps) for m in (before, after))
    print(f"{kernel} {label}: ptx identical {ptx_a == ptx_b}, cubin identical {cubin_a == cubin_b} (sha256 {cubin_a[:16]} {cubin_b[:16]})")
