"""Times train_gpt.py's q/k RMS norm + rotary + gain kernels against the same function compiled by
inductor (the code before them), at one layer and micro-step of the default config: 48 x 2048
positions, 8 q heads / 4 k heads of 64 dims, rotary on 16 dims, bf16. One CUDA GPU:
  python tools/norm_rotary_probe.py
For each tile size (rows per program) and for inductor: ms per forward and per backward (CUDA
events, median of 50 calls after 10 warm-up calls) and the GB/s of the bytes each must move
(forward: read x, write out; backward: read grad and x, write dx; the tables, the gain and each
row's gain gradient are left out). Ends with the largest difference
between the kernels and the compiled function (forward output, dx, gain gradient)."""
import statistics
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_gpt  # noqa: E402

B, T, DIM, HALF = 48, 2048, 64, 8


def timed(fn, calls=50):
    for _ in range(10):
        fn()
    times = []
    for _ in range(calls):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def launch(tile, x, cos, sin, gain, grad, out, row_dgain):
    """train_gpt's kernel at a given tile size (train_gpt launches it with 32 rows per program)."""
    rows = x.numel() // DIM
    train_gpt._norm_rotary_kernel[(triton.cdiv(rows, tile),)](x, cos, sin, gain, grad, out, row_dgain, rows, T, x.stride(1), HEADS=x.size(2), DIM=DIM,
                                                              BLOCK_DIM=DIM, HALF=HALF, ROWS=tile, BACKWARD=grad is not x)


def main():
    print(f"device:{torch.cuda.get_device_name()} torch:{torch.__version__} triton:{triton.__version__}")
    cos, sin = (t[:, :T].cuda() for t in train_gpt.rotary_tables(T, 2 * HALF, 10000.0))

    def formula(x, gain):  # the code before the kernels: inductor fuses it
        return train_gpt.apply_rotary(train_gpt.rms_norm(x), cos.to(x.dtype), sin.to(x.dtype)) * gain.to(x.dtype)[:, None]

    compiled = torch.compile(formula, dynamic=False)
    print(f"{'heads':>5} {'impl':>9} {'fwd ms':>8} {'fwd GB/s':>9} {'bwd ms':>8} {'bwd GB/s':>9}")
    for heads in (8, 4):
        g = torch.Generator(device="cuda").manual_seed(heads)
        x = torch.randn(B, T, heads, DIM, device="cuda", generator=g).bfloat16()
        grad = torch.randn(B, T, heads, DIM, device="cuda", generator=g).bfloat16()
        gain = torch.rand(heads, device="cuda", generator=g) + 0.5
        size_gb = x.numel() * 2 / 1e9
        out, dx, row_dgain = torch.empty_like(x), torch.empty_like(x), torch.empty(x.shape[:3], device="cuda")
        for tile in (8, 16, 32, 64, 128):
            fwd = timed(lambda: launch(tile, x, cos, sin, gain, x, out, row_dgain))
            bwd = timed(lambda: launch(tile, x, cos, sin, gain, grad, dx, row_dgain))
            print(f"{heads:>5} {'tile ' + str(tile):>9} {fwd:8.4f} {2 * size_gb / fwd * 1e3:9.0f} {bwd:8.4f} {3 * size_gb / bwd * 1e3:9.0f}")
        xr, gr = x.clone().requires_grad_(), gain.clone().requires_grad_()
        fwd = timed(lambda: compiled(x, gain))
        y = compiled(xr, gr)
        bwd = timed(lambda: torch.autograd.grad(y, (xr, gr), grad, retain_graph=True))
        print(f"{heads:>5} {'inductor':>9} {fwd:8.4f} {2 * size_gb / fwd * 1e3:9.0f} {bwd:8.4f} {3 * size_gb / bwd * 1e3:9.0f}")
        ref_dx, ref_dgain = torch.autograd.grad(y, (xr, gr), grad)
        dx, dgain = train_gpt.fused_norm_rotary_backward(grad, x, cos, sin, gain)
        diffs = [(train_gpt.fused_norm_rotary(x, cos, sin, gain).float() - y.float()).abs().max().item(),
                 (dx.float() - ref_dx.float()).abs().max().item(), ((dgain - ref_dgain) / ref_dgain.abs()).abs().max().item()]
        print(f"heads {heads}: kernels vs inductor, max |diff| out {diffs[0]:.3g}, dx {diffs[1]:.3g}; gain grad max rel diff {diffs[2]:.3g}")


if __name__ == "__main__":
    main()
