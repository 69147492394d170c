"""Feasibility probe, not used by train_gpt.py: LeakyReLU(0.5)^2 fused into the MLP's matmuls with a plain
Triton GEMM (activation as a prologue of the proj matmul, its derivative as an epilogue of the grad_h
matmul) against inductor's separate elementwise kernel + cuBLAS, at the shapes of one layer and
micro-step of the default config: M = 48*2048 tokens, d = 512, hidden = 1536. One CUDA GPU:
  python tools/mlp_fusion_probe.py
Prints the largest difference fused vs unfused (0: same values) and ms per call (CUDA events,
mean of 30 calls after 5 warm-up calls). logs/bench/mlp_fusion_probe_s8_h100.txt is its output."""
import torch, triton, triton.language as tl, torch.nn.functional as F
from cuda_timing import mean_ms
torch.manual_seed(0)
M, D, H = 98304, 512, 1536
dev = "cuda"
print(f"device:{torch.cuda.get_device_name()} torch:{torch.__version__} triton:{triton.__version__}")
configs = [triton.Config(dict(BM=bm, BN=bn, BK=bk, GROUP_M=8), num_stages=s, num_warps=w)
           for bm, bn, bk, s, w in [(128, 128, 64, 3, 4), (128, 128, 64, 4, 8), (128, 256, 64, 3, 8), (256, 128, 64, 3, 8),
                                    (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (128, 128, 32, 4, 4), (128, 256, 32, 4, 8)]]

@triton.autotune(configs=configs, key=["M", "N", "K", "PROLOGUE", "EPILOGUE"])
@triton.jit
def mm_kernel(a_ptr, b_ptr, c_ptr, h_ptr, M, N, K, sam, sak, sbk, sbn, scm, scn, PROLOGUE: tl.constexpr, EPILOGUE: tl.constexpr,
              BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    num_m, num_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    gm = min(num_m - first_m, GROUP_M)
    pm = first_m + (pid % group) % gm
    pn = (pid % group) // gm
    rm = pm * BM + tl.arange(0, BM)
    rn = pn * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    a_ptrs = a_ptr + rm[:, None] * sam + rk[None, :] * sak
    b_ptrs = b_ptr + rk[:, None] * sbk + rn[None, :] * sbn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(a_ptrs)
        if PROLOGUE:  # a = leaky_relu(a, 0.5)^2, computed in fp32, rounded to bf16 as the unfused kernel does
            af = a.to(tl.float32)
            af = tl.where(af > 0, af, 0.5 * af)
            a = (af * af).to(tl.bfloat16)
        b = tl.load(b_ptrs)
        acc = tl.dot(a, b, acc)
        a_ptrs += BK * sak
        b_ptrs += BK * sbk
    if EPILOGUE:  # c = (a @ b) * d/dh leaky_relu(h, 0.5)^2 = c * (h > 0 ? 2h : 0.5h)
        h = tl.load(h_ptr + rm[:, None] * scm + rn[None, :] * scn).to(tl.float32)
        acc = acc.to(tl.bfloat16).to(tl.float32) * tl.where(h > 0, 2 * h, 0.5 * h)
    tl.store(c_ptr + rm[:, None] * scm + rn[None, :] * scn, acc.to(tl.bfloat16))

def mm(a, b, prologue=False, epilogue_h=None):
    Mm, K = a.shape
    N = b.shape[1]
    c = torch.empty(Mm, N, device=a.device, dtype=torch.bfloat16)
    grid = lambda meta: (triton.cdiv(Mm, meta["BM"]) * triton.cdiv(N, meta["BN"]),)
    h = epilogue_h if epilogue_h is not None else c
    mm_kernel[grid](a, b, c, h, Mm, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
                    PROLOGUE=prologue, EPILOGUE=epilogue_h is not None)
    return c

h = torch.randn(M, H, device=dev, dtype=torch.bfloat16)
x = torch.randn(M, D, device=dev, dtype=torch.bfloat16)
g = torch.randn(M, D, device=dev, dtype=torch.bfloat16)
wp = (torch.randn(D, H, device=dev) / H ** 0.5).to(torch.bfloat16)   # proj weight [out=512, in=1536]
wf = (torch.randn(H, D, device=dev) / D ** 0.5).to(torch.bfloat16)   # fc weight [1536, 512]
act = torch.compile(lambda h: F.leaky_relu(h, 0.5).square())
deriv = torch.compile(lambda ga, h: torch.where(h > 0, 2 * h.float(), 0.5 * h.float()) * ga.float())
proj_unfused = torch.compile(lambda h, w: F.linear(F.leaky_relu(h, 0.5).square(), w))
bwd_unfused = torch.compile(lambda g, w, h: ((g @ w).float() * torch.where(h > 0, 2 * h.float(), 0.5 * h.float())).to(torch.bfloat16))
rows = []
# forward of proj: y = act(h) @ wp^T
ref = F.linear(act(h), wp)
got = mm(h, wp.t(), prologue=True)
rows.append(("proj fwd: act kernel + cuBLAS (inductor)", mean_ms(lambda: proj_unfused(h, wp))))
rows.append(("proj fwd: act kernel, then cuBLAS (two calls)", mean_ms(lambda: torch.mm(act(h), wp.t()))))
a_pre = act(h)
rows.append(("proj fwd: cuBLAS mm only", mean_ms(lambda: torch.mm(a_pre, wp.t()))))
rows.append(("proj fwd: act kernel only", mean_ms(lambda: act(h))))
rows.append(("proj fwd: Triton mm, no prologue", mean_ms(lambda: mm(a_pre, wp.t()))))
rows.append(("proj fwd: Triton mm + act prologue", mean_ms(lambda: mm(h, wp.t(), prologue=True))))
err_fwd = (got.float() - ref.float()).abs().max().item()
# backward into h: grad_h = (g @ wp) * f'(h)
ref_b = bwd_unfused(g, wp, h)
got_b = mm(g, wp, epilogue_h=h)
rows.append(("grad_h: cuBLAS + deriv kernel (inductor)", mean_ms(lambda: bwd_unfused(g, wp, h))))
rows.append(("grad_h: cuBLAS mm only", mean_ms(lambda: torch.mm(g, wp))))
rows.append(("grad_h: Triton mm, no epilogue", mean_ms(lambda: mm(g, wp))))
rows.append(("grad_h: Triton mm + deriv epilogue", mean_ms(lambda: mm(g, wp, epilogue_h=h))))
err_bwd = (got_b.float() - ref_b.float()).abs().max().item()
# dWp = g^T @ act(h): prologue on the B operand would be needed; time the plain GEMMs for scale
rows.append(("dWp: cuBLAS g^T @ a", mean_ms(lambda: g.t() @ a_pre)))
rows.append(("fc fwd: cuBLAS x @ wf^T", mean_ms(lambda: x @ wf.t())))
rows.append(("fc fwd: Triton x @ wf^T", mean_ms(lambda: mm(x, wf.t()))))
print(f"max |fused - unfused|: proj fwd {err_fwd:.3e} (ref max {ref.abs().max().item():.3e}), grad_h {err_bwd:.3e} (ref max {ref_b.abs().max().item():.3e})")
for name, ms in rows:
    print(f"{name:<45} {ms:8.4f} ms")
