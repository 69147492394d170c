"""Feasibility probe, not used by train_gpt.py: can a Triton GEMM with TMA loads, run persistent, match cuBLAS
at the MLP's shapes, so that LeakyReLU(0.5)^2 can ride in its epilogue? One layer and micro-step of the
default config: A (M x 512) @ B^T with B (1536 x 512), M = 48*2048 (training) or 32*2048 (sliding eval).

Epilogues (MODE):
  plain   C = A @ B^T
  fwd     U = A @ B^T and H = leaky_relu(U, 0.5)^2, both stored (training forward: fc, then the activation)
  eval    H only (inference forward: U is never needed)
  bwd     C = (A @ B^T) * dH/dU, reading U (training backward: grad of U from grad of H; B = proj weight^T)
Against cuBLAS alone and cuBLAS + inductor's elementwise kernel (what the compiled model runs now).
One CUDA GPU (sm_90):  python tools/act_gemm_probe.py
Prints each config's ms per call (CUDA events, mean of 30 calls after 5 warm-up calls) and the largest
difference against the unfused result, then a table of the best of each.

python tools/act_gemm_probe.py --overlap: can the epilogue of train_gpt.py's kernel overlap the next tile's
GEMM by warp specialization (Triton's tl.range(warp_specialize=True): loads, MMAs and epilogue in warp groups
of their own)? Times train_gpt._act_gemm as it runs, then a copy of its loop (the epilogue on 2 column pieces
of the tile, stored from registers) and warp-specialized loops (that epilogue, or the whole tile stored by
TMA; the tile loop flattened or not) at three tile configs, one program per SM. Each row: ms per call,
shared memory and registers of the compiled kernel, and the largest difference against train_gpt's output.
Session 15's earlier forms, as diffs against this file at fbaf0ff: logs/bench/programs_s15/act_gemm_probe_call1.diff
(chose train_gpt's kernel) and act_gemm_probe_call3.diff (pieces, stages)."""
import sys
import torch, triton, triton.language as tl, torch.nn.functional as F
from triton.tools.tensor_descriptor import TensorDescriptor

from cuda_timing import mean_ms

MODES = {"plain": 0, "fwd": 1, "eval": 2, "bwd": 3}


@triton.jit
def act_mm_kernel(a_desc, b_desc, out_desc, aux_desc, M, N, K, MODE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                  BK: tl.constexpr, GROUP_M: tl.constexpr, PROGRAMS: tl.constexpr):
    tiles_m, tiles_n, k_tiles = tl.cdiv(M, BM), tl.cdiv(N, BN), tl.cdiv(K, BK)
    tiles = tiles_m * tiles_n
    per_group = GROUP_M * tiles_n
    done = tl.program_id(0) - PROGRAMS  # tile whose epilogue runs next (the flattened loop runs ahead of it)
    for tile in tl.range(tl.program_id(0), tiles, PROGRAMS, flatten=True):
        first_m = (tile // per_group) * GROUP_M
        rows_in_group = min(tiles_m - first_m, GROUP_M)
        pm = first_m + (tile % per_group) % rows_in_group
        pn = (tile % per_group) // rows_in_group
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for ki in range(k_tiles):
            a = a_desc.load([pm * BM, ki * BK])
            b = b_desc.load([pn * BN, ki * BK])
            acc = tl.dot(a, b.T, acc)
        done += PROGRAMS
        first_m = (done // per_group) * GROUP_M
        rows_in_group = min(tiles_m - first_m, GROUP_M)
        om = (first_m + (done % per_group) % rows_in_group) * BM
        on = ((done % per_group) // rows_in_group) * BN
        c = acc.to(tl.bfloat16)
        if MODE == 0:
            out_desc.store([om, on], c)
        elif MODE == 3:
            u = aux_desc.load([om, on]).to(tl.float32)
            out_desc.store([om, on], (c.to(tl.float32) * tl.where(u > 0, 2 * u, 0.5 * u)).to(tl.bfloat16))
        else:
            if MODE == 1:
                aux_desc.store([om, on], c)
            u = c.to(tl.float32)
            u = tl.where(u > 0, u, 0.5 * u)
            out_desc.store([om, on], (u * u).to(tl.bfloat16))


def act_mm(a, b, mode, cfg, aux=None, programs=None):
    BM, BN, BK, stages, warps, group = cfg
    M, K = a.shape
    N = b.shape[0]
    out = torch.empty(M, N, device=a.device, dtype=torch.bfloat16)
    if aux is None:
        aux = torch.empty(M, N, device=a.device, dtype=torch.bfloat16) if mode == "fwd" else out
    tiles = triton.cdiv(M, BM) * triton.cdiv(N, BN)
    programs = min(programs or tiles, tiles)
    desc = lambda t, shape: TensorDescriptor.from_tensor(t, shape)
    act_mm_kernel[(programs,)](desc(a, [BM, BK]), desc(b, [BN, BK]), desc(out, [BM, BN]), desc(aux, [BM, BN]), M, N, K,
                               MODE=MODES[mode], BM=BM, BN=BN, BK=BK, GROUP_M=group, PROGRAMS=programs,
                               num_stages=stages, num_warps=warps)
    return (aux, out) if mode == "fwd" else out


@triton.jit
def _overlap_epilogue(acc, om, on, out_desc, aux_desc, out_ptr, aux_ptr, N, MODE: tl.constexpr, PTR: tl.constexpr,
                      TM: tl.constexpr, TN: tl.constexpr):
    """train_gpt's epilogue on one (TM, TN) piece at (om, on): MODE 0 h, 1 u and h, 2 c * dh/du (slope 0.5)."""
    offs = (om + tl.arange(0, TM))[:, None] * N + (on + tl.arange(0, TN))[None, :]
    c = acc.to(tl.bfloat16)
    if MODE == 2:
        if PTR:
            u = tl.load(aux_ptr + offs).to(tl.float32)
        else:
            u = aux_desc.load([om, on]).to(tl.float32)
        r = (c.to(tl.float32) * tl.where(u > 0, 2 * u, 0.5 * u)).to(tl.bfloat16)
    else:
        if MODE == 1:
            if PTR:
                tl.store(aux_ptr + offs, c)
            else:
                aux_desc.store([om, on], c)
        u = c.to(tl.float32)
        u = tl.where(u > 0, u, 0.5 * u)
        r = (u * u).to(tl.bfloat16)
    if PTR:
        tl.store(out_ptr + offs, r)
    else:
        out_desc.store([om, on], r)


@triton.jit
def _halves(acc, BM: tl.constexpr, BN: tl.constexpr):
    """(BM, BN) -> its left and right (BM, BN // 2) halves."""
    return acc.reshape(BM, 2, BN // 2).permute(0, 2, 1).split()


@triton.jit
def overlap_kernel(a_desc, b_desc, out_desc, aux_desc, out_ptr, aux_ptr, M, N, K, programs, MODE: tl.constexpr,
                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SPLITS: tl.constexpr, PTR: tl.constexpr,
                   WS: tl.constexpr, FLATTEN: tl.constexpr):
    """train_gpt's _act_gemm_kernel (tiles row by row, its own epilogue counter), with the variants as switches:
    the epilogue on the whole tile or on SPLITS = 2 column pieces of it; WS: warp-specialized."""
    tiles_n = tl.cdiv(N, BN)
    done = tl.program_id(0) - programs
    for tile in tl.range(tl.program_id(0), tl.cdiv(M, BM) * tiles_n, programs, flatten=FLATTEN, warp_specialize=WS):
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k in range(0, K, BK):
            acc = tl.dot(a_desc.load([(tile // tiles_n) * BM, k]), b_desc.load([(tile % tiles_n) * BN, k]).T, acc)
        done += programs
        om, on = (done // tiles_n) * BM, (done % tiles_n) * BN
        if SPLITS == 1:
            _overlap_epilogue(acc, om, on, out_desc, aux_desc, out_ptr, aux_ptr, N, MODE, PTR, BM, BN)
        else:
            left, right = _halves(acc, BM, BN)
            _overlap_epilogue(left, om, on, out_desc, aux_desc, out_ptr, aux_ptr, N, MODE, PTR, BM, BN // 2)
            _overlap_epilogue(right, om, on + BN // 2, out_desc, aux_desc, out_ptr, aux_ptr, N, MODE, PTR, BM, BN // 2)


def overlap_sweep():
    """The --overlap table: train_gpt._act_gemm now, then the variants of its loop."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    import train_gpt
    torch.manual_seed(0)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"device:{torch.cuda.get_device_name()} sms:{sms} torch:{torch.__version__} triton:{triton.__version__}")
    D, H = 512, 1536
    configs = [(128, 256, 64, 3, 8), (128, 256, 64, 4, 8), (128, 128, 64, 4, 8)]
    variants = [dict(SPLITS=2, PTR=True, WS=False, FLATTEN=True)]  # train_gpt's, then warp-specialized loops
    variants += [dict(SPLITS=n, PTR=ptr, WS=True, FLATTEN=f) for n, ptr in ((2, True), (1, False)) for f in (False, True)]
    best = {}
    for M, mode in ((48 * 2048, 1), (48 * 2048, 2), (32 * 2048, 0)):
        name = {0: "eval", 1: "fwd", 2: "bwd"}[mode]
        x = torch.randn(M, D, device="cuda", dtype=torch.bfloat16)
        wf = (torch.randn(H, D, device="cuda") / D ** 0.5).to(torch.bfloat16)
        wpt = (torch.randn(H, D, device="cuda") / H ** 0.5).to(torch.bfloat16)   # proj weight^T, (1536, 512)
        u_in = F.linear(x, wf) if mode == 2 else None
        a, b = x, (wpt if mode == 2 else wf)
        u_ref = torch.empty(M, H, device="cuda", dtype=torch.bfloat16) if mode == 1 else u_in
        ref = train_gpt._act_gemm(a, b, 0.5, mode, u_ref)
        now = mean_ms(lambda: train_gpt._act_gemm(a, b, 0.5, mode, u_ref))
        print(f"M={M} {name}: train_gpt._act_gemm now {now:.4f} ms")
        for cfg in configs:
            BM, BN, BK, stages, warps = cfg
            programs = min(sms, (M // BM) * (H // BN))
            for v in variants:
                tn = BN // v["SPLITS"]
                out = torch.empty(M, H, device="cuda", dtype=torch.bfloat16)
                aux = torch.empty_like(out) if mode == 1 else (u_in if mode == 2 else out)
                desc = lambda t, shape: TensorDescriptor.from_tensor(t, shape)
                call = lambda: overlap_kernel[(programs,)](desc(a, [BM, BK]), desc(b, [BN, BK]), desc(out, [BM, tn]), desc(aux, [BM, tn]),
                                                           out, aux, M, H, D, programs, MODE=mode, BM=BM, BN=BN, BK=BK,
                                                           num_stages=stages, num_warps=warps, **v)
                label = f"  {str(cfg):<22} {v['SPLITS']} piece(s) {'ptr' if v['PTR'] else 'tma'} {'ws' if v['WS'] else '  '} {'flat' if v['FLATTEN'] else '    '}"
                try:
                    k = call()
                    diff = (out.float() - ref.float()).abs().max().item()
                    if mode == 1:
                        diff = max(diff, (aux.float() - u_ref.float()).abs().max().item())
                    ms = mean_ms(call)
                except Exception as e:  # shared memory or registers over the limit
                    print(f"{label} failed: {type(e).__name__}: {str(e)[:100]}")
                    continue
                print(f"{label} {ms:.4f} ms  shared {k.metadata.shared / 1024:.0f} KiB  regs {k.n_regs}  max|diff| {diff:.1e}")
                if diff == 0 and (name not in best or ms < best[name][0]):
                    best[name] = (ms, label.strip(), now)
    print("\nbest exact variant per mode (ms per call, one layer and micro-step):")
    print(f"{'mode':<5} {'now':>8} {'best':>8} {'ratio':>6}  variant")
    for name, (ms, label, now) in best.items():
        print(f"{name:<5} {now:8.4f} {ms:8.4f} {now / ms:6.3f}  {label}")


def main():
    torch.manual_seed(0)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"device:{torch.cuda.get_device_name()} sms:{sms} torch:{torch.__version__} triton:{triton.__version__}")
    D, H = 512, 1536
    act = lambda u: F.leaky_relu(u, 0.5).square()
    fwd_ref = torch.compile(lambda x, w: (lambda u: (u, act(u)))(F.linear(x, w)))
    eval_ref = torch.compile(lambda x, w: act(F.linear(x, w)))
    bwd_ref = torch.compile(lambda g, w, u: ((g @ w).float() * torch.where(u > 0, 2 * u.float(), 0.5 * u.float())).to(torch.bfloat16))
    configs = [(128, 128, 64, 4, 8, 8), (128, 128, 64, 3, 4, 8), (128, 256, 64, 3, 8, 8), (128, 256, 64, 4, 8, 8),
               (256, 128, 64, 3, 8, 8), (128, 192, 64, 4, 8, 8), (128, 128, 128, 3, 8, 8), (128, 256, 64, 3, 8, 16)]
    best = {}
    for M, modes in ((48 * 2048, ("plain", "fwd", "bwd")), (32 * 2048, ("eval",))):
        x = torch.randn(M, D, device="cuda", dtype=torch.bfloat16)
        wf = (torch.randn(H, D, device="cuda") / D ** 0.5).to(torch.bfloat16)    # fc weight (1536, 512)
        wp = (torch.randn(D, H, device="cuda") / H ** 0.5).to(torch.bfloat16)    # proj weight (512, 1536)
        g = torch.randn(M, D, device="cuda", dtype=torch.bfloat16)                # grad of the MLP's output
        u = F.linear(x, wf)
        wpt = wp.t().contiguous()                                               # (1536, 512): B for the bwd GEMM
        refs = {"plain": ("cuBLAS mm", lambda: F.linear(x, wf), lambda: F.linear(x, wf)),
                "fwd": ("cuBLAS + act kernel (inductor)", lambda: fwd_ref(x, wf), lambda: fwd_ref(x, wf)),
                "eval": ("cuBLAS + act kernel (inductor)", lambda: eval_ref(x, wf), lambda: eval_ref(x, wf)),
                "bwd": ("cuBLAS + deriv kernel (inductor)", lambda: bwd_ref(g, wp, u), lambda: bwd_ref(g, wp, u))}
        for mode in modes:
            label, ref_fn, run_ref = refs[mode]
            ref = ref_fn()
            ref_ms = mean_ms(run_ref)
            mm_ms = mean_ms(lambda: torch.mm(g, wp)) if mode == "bwd" else mean_ms(lambda: F.linear(x, wf))
            print(f"M={M} {mode:<5} {label:<34} {ref_ms:.4f} ms   (cuBLAS mm alone {mm_ms:.4f} ms)")
            a, b = (g, wpt) if mode == "bwd" else (x, wf)
            for persistent in (True, False):
                for cfg in configs:
                    call = lambda: act_mm(a, b, mode, cfg, aux=u if mode == "bwd" else None, programs=sms if persistent else None)
                    try:
                        got = call()
                        diff = max((o.float() - r.float()).abs().max().item() for o, r in zip(got, ref)) if mode == "fwd" \
                            else (got.float() - ref.float()).abs().max().item()
                        ms = mean_ms(call)
                    except Exception as e:  # a config that does not fit (shared memory, registers) is skipped
                        print(f"  {'persistent' if persistent else 'one tile per program':<22} {cfg} failed: {type(e).__name__}: {str(e)[:120]}")
                        continue
                    print(f"  {'persistent' if persistent else 'one tile per program':<22} {cfg} {ms:.4f} ms  max|diff| {diff:.3e}")
                    key = (M, mode)
                    if key not in best or ms < best[key][0]:
                        best[key] = (ms, cfg, persistent, ref_ms, mm_ms, label)
    print("\nbest Triton config per mode against what the compiled model runs now (ms per call, one layer and micro-step):")
    print(f"{'M':>6} {'mode':<5} {'now':>8} {'cuBLAS mm':>10} {'Triton':>8} {'saved':>7}  config (BM, BN, BK, stages, warps, group), grid")
    for (M, mode), (ms, cfg, persistent, ref_ms, mm_ms, label) in best.items():
        print(f"{M:>6} {mode:<5} {ref_ms:8.4f} {mm_ms:10.4f} {ms:8.4f} {ref_ms - ms:7.4f}  {cfg} {'persistent' if persistent else 'one tile per program'}")


if __name__ == "__main__":
    overlap_sweep() if "--overlap" in sys.argv[1:] else main()
