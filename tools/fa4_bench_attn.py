"""FA4 (flash-attn-4, CuTe DSL) vs cuDNN/flash SDPA at train_gpt.py's shapes, one GPU, one process.
Prints a table last. Run after unpacking the bundle onto PYTHONPATH."""
import sys, time, math, json, os, traceback
import torch
import torch.nn.functional as F

torch.manual_seed(0)
dev = torch.device("cuda")
res = []


def log(*a):
    print(*a, flush=True)


def timeit(fn, iters=20, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / iters


def sdpa(q, k, v):
    n, T = q.size(1), k.size(1)
    mask = torch.ones(n, T, dtype=torch.bool, device=q.device).tril(T - n) if n < T else None
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, is_causal=mask is None, enable_gqa=True)
    return y.transpose(1, 2)


t0 = time.time()
from flash_attn.cute import flash_attn_func, flash_attn_varlen_func
from flash_attn.cute.interface import _flash_attn_fwd, _flash_attn_bwd
log(f"import flash_attn.cute: {time.time() - t0:.1f}s")


def fa4(q, k, v):
    out = flash_attn_func(q, k, v, causal=True)
    return out[0] if isinstance(out, tuple) else out


def inputs(B, Tq, Tk, grad):
    q = torch.randn(B, Tq, 8, 64, device=dev, dtype=torch.bfloat16, requires_grad=grad)
    k = torch.randn(B, Tk, 4, 64, device=dev, dtype=torch.bfloat16, requires_grad=grad)
    v = torch.randn(B, Tk, 4, 64, device=dev, dtype=torch.bfloat16, requires_grad=grad)
    return q, k, v


def check_and_time(name, B, Tq, Tk, backward):
    q, k, v = inputs(B, Tq, Tk, backward)
    g = torch.randn(B, Tq, 8, 64, device=dev, dtype=torch.bfloat16)
    outs = {}
    for impl, f in (("sdpa", sdpa), ("fa4", fa4)):
        t = time.time()
        try:
            if backward:
                o = f(q, k, v)
                grads = torch.autograd.grad(o, (q, k, v), g)
                outs[impl] = (o.float(), *[x.float() for x in grads])
                ms = timeit(lambda: torch.autograd.grad(f(q, k, v), (q, k, v), g))
            else:
                with torch.inference_mode():
                    outs[impl] = (f(q, k, v).float(),)
                    ms = timeit(lambda: f(q, k, v))
            log(f"{name} {impl}: {ms:.3f} ms (first call + timing {time.time() - t:.1f}s)")
            res.append((name, impl, ms))
        except Exception:
            log(f"{name} {impl}: FAILED\n{traceback.format_exc()[-3000:]}")
            res.append((name, impl, float("nan")))
    if "fa4" in outs:
        diffs = [(a - b).abs().max().item() for a, b in zip(outs["sdpa"], outs["fa4"])]
        scale = [a.abs().max().item() for a in outs["sdpa"]]
        log(f"{name} max|sdpa-fa4| out/dq/dk/dv: {['%.2e' % d for d in diffs]} (max|sdpa|: {['%.2e' % s for s in scale]})")
        res.append((name, "maxdiff", max(d / max(s, 1e-6) for d, s in zip(diffs, scale))))


log(torch.__version__, torch.cuda.get_device_name())
if not os.environ.get("ONLY_COMPILED"):
  check_and_time("train 48x2048 fwd+bwd", 48, 2048, 2048, True)
  check_and_time("eval 32x2048 fwd", 32, 2048, 2048, False)
  check_and_time("eval last64 of 2048 fwd", 32, 64, 2048, False)
  check_and_time("ttt 8x2048 fwd+bwd", 8, 2048, 2048, True)

# varlen: documents packed into 98,304 tokens vs SDPA on the same docs padded per length bucket
try:
    gen = torch.Generator().manual_seed(1)
    lens = []
    while sum(lens) < 98304:
        lens.append(int(min(2048, max(16, torch.empty(1).exponential_(1 / 600, generator=gen).item()))))
    lens[-1] -= sum(lens) - 98304
    lens = [l for l in lens if l > 0]
    cu = torch.tensor([0] + lens, device=dev, dtype=torch.int32).cumsum(0).to(torch.int32)
    N = int(cu[-1])
    q = torch.randn(N, 8, 64, device=dev, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(N, 4, 64, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(N, 4, 64, device=dev, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn_like(q)

    def varlen():
        o = flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=max(lens), max_seqlen_k=max(lens), causal=True)
        o = o[0] if isinstance(o, tuple) else o
        return torch.autograd.grad(o, (q, k, v), g)
    t = time.time()
    ms = timeit(varlen)
    log(f"varlen {len(lens)} docs (mean {N / len(lens):.0f}) fwd+bwd fa4: {ms:.3f} ms ({time.time() - t:.1f}s)")
    res.append((f"varlen {len(lens)} docs fwd+bwd", "fa4", ms))
    # check one doc against sdpa
    i = max(range(len(lens)), key=lambda j: lens[j])
    a, b = int(cu[i]), int(cu[i + 1])
    o = flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=max(lens), max_seqlen_k=max(lens), causal=True)
    o = o[0] if isinstance(o, tuple) else o
    ref = sdpa(q[a:b][None], k[a:b][None], v[a:b][None])[0]
    log(f"varlen longest doc max|diff| {(o[a:b].float() - ref.float()).abs().max().item():.2e}")
    # SDPA on the same tokens as 48 full rows (what training does: attention across doc boundaries)
    q2, k2, v2 = (t.detach().view(48, 2048, t.size(1), 64).requires_grad_() for t in (q, k, v))
    g2 = g.view(48, 2048, 8, 64)
    ms = timeit(lambda: torch.autograd.grad(sdpa(q2, k2, v2), (q2, k2, v2), g2))
    log(f"same tokens as 48x2048 causal rows sdpa fwd+bwd: {ms:.3f} ms")
    res.append(("varlen tokens as 48x2048 rows", "sdpa", ms))
except Exception:
    log(f"varlen FAILED\n{traceback.format_exc()[-3000:]}")

# custom op + torch.compile(fullgraph, reduce-overhead): does FA4 survive inductor and CUDA graphs?
try:
    @torch.library.custom_op("pgbench::fa4", mutates_args=())
    def fa4_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, lse = _flash_attn_fwd(q.contiguous(), k.contiguous(), v.contiguous(), causal=True, return_lse=True)[:2]
        return out, lse

    @fa4_op.register_fake
    def _(q, k, v):
        return torch.empty_like(q), q.new_empty(q.size(0), q.size(2), q.size(1), dtype=torch.float32)

    @torch.library.custom_op("pgbench::fa4_bwd", mutates_args=())
    def fa4_bwd_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dq, dk, dv = _flash_attn_bwd(q.contiguous(), k.contiguous(), v.contiguous(), out, dout.contiguous(), lse, None, True)[:3]
        return dq, dk, dv

    @fa4_bwd_op.register_fake
    def _(dout, q, k, v, out, lse):
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs, *output)

    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        return fa4_bwd_op(dout, q, k, v, out, lse)
    fa4_op.register_autograd(backward, setup_context=setup)

    class Toy(torch.nn.Module):
        def __init__(self, attn):
            super().__init__()
            self.qkv = torch.nn.Linear(512, 1024, bias=False)
            self.o = torch.nn.Linear(512, 512, bias=False)
            self.attn = attn

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.qkv(x).split((512, 256, 256), -1)
            y = self.attn(q.view(B, T, 8, 64), k.view(B, T, 4, 64), v.reshape(B, T, 4, 64))
            return self.o(y.reshape(B, T, 512)).square().mean()

    x = torch.randn(48, 2048, 512, device=dev, dtype=torch.bfloat16)
    for name, attn in (("sdpa", sdpa), ("fa4_op", lambda q, k, v: fa4_op(q, k, v)[0])):
        torch.manual_seed(3)
        toy = Toy(attn).to(dev).bfloat16()
        step = torch.compile(toy, fullgraph=True, dynamic=False, mode=None)

        def run():
            step(x).backward()
        t = time.time()
        ms = timeit(run)
        grads = torch.cat([p.grad.flatten().float() for p in toy.parameters()])
        log(f"compiled toy {name}: {ms:.3f} ms ({time.time() - t:.1f}s) grad norm {grads.norm().item():.6e}")
        res.append(("compiled toy fwd+bwd (cudagraphs)", name, ms))
except Exception:
    log(f"custom op FAILED\n{traceback.format_exc()[-4000:]}")

log("\n| case | impl | ms (or rel. diff) |\n| --- | --- | --- |")
for r in res:
    log(f"| {r[0]} | {r[1]} | {r[2]:.4g} |")
out = os.environ.get("OUT")
if out:
    json.dump(res, open(os.path.join(out, "bench_attn.json"), "w"))
