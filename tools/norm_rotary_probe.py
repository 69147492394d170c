"""Times train_gpt.py's q/k RMS norm + rotary + gain kernel against the same function compiled by
inductor (the code before it), at one layer and micro-step of the default config: 48 x 2048
positions, 8 q heads and 4 k heads of 64 dims, rotary on 16 dims, bf16. q and k are read where the
training step has them, as views of the q/k/v GEMM's output (1,024 values per position). One CUDA GPU:
  python tools/norm_rotary_probe.py
For each launch config (rows per program, warps) and for inductor: ms per forward and per backward
(tools/cuda_timing.mean_ms: 50 calls after 10 warm-up calls) and the GB/s of the bytes each must
move (forward: read x, write out; backward: read grad and x, write dx; the tables, the gain and each
row's gain gradient are left out). Then, per config, q and k forward + backward together and that
times the 88 launches of each a training step has (11 layers x 8 micro-steps), against train_gpt's
own config. Ends with the largest difference between the kernel and the compiled function."""
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_gpt  # noqa: E402
from cuda_timing import mean_ms  # noqa: E402

B, T, DIM, HALF, Q_HEADS, KV_HEADS = 48, 2048, 64, 8, 8, 4
CONFIGS = [(rows, warps) for rows in (8, 16, 32, 64) for warps in (1, 2, 4, 8)]
COMMITTED = (32, 4)  # train_gpt launches 32 rows per program with Triton's default of 4 warps
LAUNCHES_PER_STEP = 11 * 8


def launch(rows_per_program: int, warps: int, x, cos, sin, gain, grad=None):
    """train_gpt's kernel on x (B, T, heads, dim) as train_gpt launches it (_launch_norm_rotary),
    but with the given rows per program and warps; returns (out, row_dgain)."""
    batch, seq, heads, dim = x.shape
    rows = batch * seq * heads
    out, row_dgain = x.new_empty(x.shape), x.new_empty(rows if grad is not None else 0, dtype=torch.float32)
    train_gpt._norm_rotary_kernel[(triton.cdiv(rows, rows_per_program),)](
        x, cos, sin, gain, x if grad is None else grad, out, row_dgain, rows, seq, x.stride(1), HEADS=heads, DIM=dim,
        BLOCK_DIM=triton.next_power_of_2(dim), HALF=cos.size(-1), ROWS=rows_per_program, BACKWARD=grad is not None,
        WIDE=batch * x.stride(0) >= train_gpt.INT32_OFFSETS, num_warps=warps)
    return out, row_dgain


def qk_views(qkv):
    """q and k as the training step reads them: views of the (B, T, 1024) q/k/v output, not copies."""
    q, k, _ = qkv.split((Q_HEADS * DIM, KV_HEADS * DIM, KV_HEADS * DIM), dim=-1)
    batch, seq = qkv.shape[:2]
    return q.view(batch, seq, Q_HEADS, DIM), k.view(batch, seq, KV_HEADS, DIM)


def main():
    print(f"device:{torch.cuda.get_device_name()} torch:{torch.__version__} triton:{triton.__version__}")
    cos, sin = (t[:, :T].cuda().contiguous() for t in train_gpt.rotary_tables(T, 2 * HALF, 10000.0))
    g = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn(B, T, (Q_HEADS + 2 * KV_HEADS) * DIM, device="cuda", generator=g).bfloat16()
    tensors = {}
    for name, x in zip(("q", "k"), qk_views(qkv)):
        heads = x.size(2)
        tensors[name] = (x, torch.rand(heads, device="cuda", generator=g) + 0.5, torch.randn(B, T, heads, DIM, device="cuda", generator=g).bfloat16())

    def formula(x, gain):  # the code before the kernel: inductor fuses it
        return train_gpt.apply_rotary(train_gpt.rms_norm(x), cos.to(x.dtype), sin.to(x.dtype)) * gain.to(x.dtype)[:, None]

    compiled = torch.compile(formula, dynamic=False)
    time = lambda fn: mean_ms(fn, calls=50, warmup=10)
    print(f"{'x':>2} {'impl':>14} {'fwd ms':>8} {'fwd GB/s':>9} {'bwd ms':>8} {'bwd GB/s':>9}")
    per_layer = {}
    for name, (x, gain, grad) in tensors.items():
        size_gb = x.numel() * 2 / 1e9
        row = lambda impl, fwd, bwd: print(f"{name:>2} {impl:>14} {fwd:8.4f} {2 * size_gb / fwd * 1e3:9.0f} {bwd:8.4f} {3 * size_gb / bwd * 1e3:9.0f}")
        for rows, warps in CONFIGS:
            fwd = time(lambda: launch(rows, warps, x, cos, sin, gain))
            bwd = time(lambda: launch(rows, warps, x, cos, sin, gain, grad))
            per_layer[rows, warps] = per_layer.get((rows, warps), 0.0) + fwd + bwd
            row(f"rows {rows} warps {warps}", fwd, bwd)
        xr, gr = x.detach().clone().requires_grad_(), gain.clone().requires_grad_()
        y = compiled(xr, gr)
        row("inductor", time(lambda: compiled(x, gain)), time(lambda: torch.autograd.grad(y, (xr, gr), grad, retain_graph=True)))
        ref_dx, ref_dgain = torch.autograd.grad(y, (xr, gr), grad)
        out, _ = launch(*COMMITTED, x, cos, sin, gain)
        dx, dgain = train_gpt.fused_norm_rotary_backward(grad, x, cos, sin, gain)
        diffs = [(out.float() - y.float()).abs().max().item(), (dx.float() - ref_dx.float()).abs().max().item(),
                 ((dgain - ref_dgain) / ref_dgain.abs()).abs().max().item()]
        print(f"{name}: kernel vs inductor, max |diff| out {diffs[0]:.3g}, dx {diffs[1]:.3g}; gain grad max rel diff {diffs[2]:.3g}")
    committed = per_layer[COMMITTED]
    print(f"\nq and k, forward + backward, per layer and micro-step and per training step ({LAUNCHES_PER_STEP} of each), "
          f"fastest first; train_gpt's config is rows {COMMITTED[0]} warps {COMMITTED[1]}")
    for (rows, warps), ms in sorted(per_layer.items(), key=lambda item: item[1]):
        print(f"rows {rows:>3} warps {warps}  {ms:.4f} ms  {ms * LAUNCHES_PER_STEP:6.2f} ms per step  {committed / ms:.3f}x of train_gpt's")


if __name__ == "__main__":
    main()
