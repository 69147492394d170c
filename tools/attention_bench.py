"""Time attention forward+backward at the training shapes with each PyTorch SDPA backend.

    python tools/attention_bench.py [--batch 48 --seq 2048 --heads 8 --kv-heads 4 --head-dim 64]

For every backend (flash, efficient, cudnn, math) and both GQA layouts (K/V passed with
enable_gqa=True, or repeated to all heads first), prints ms per call with CUDA events, or why the
backend refused. train_gpt.py uses the SDPA default choice; this shows what forcing one would buy.
"""
import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from cuda_timing import mean_ms

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeat", type=int, default=20)
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("attention_bench: needs a CUDA GPU")
    dev = torch.device("cuda")
    q = torch.randn(a.batch, a.heads, a.seq, a.head_dim, device=dev, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(a.batch, a.kv_heads, a.seq, a.head_dim, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn_like(k, requires_grad=True)
    grad = torch.randn_like(q)
    rep = a.heads // a.kv_heads
    print(f"device:{torch.cuda.get_device_name()} torch:{torch.__version__} shape: q {tuple(q.shape)} kv {tuple(k.shape)} causal bf16")
    print(f"{'backend':<10} {'gqa layout':<12} {'fwd ms':>8} {'fwd+bwd ms':>11}")
    for name, backend in BACKENDS.items():
        for layout in ("enable_gqa", "repeat_kv"):
            def fwd():
                kk, vv = (k, v) if layout == "enable_gqa" else (k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1))
                return F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=layout == "enable_gqa")

            def fwd_bwd():
                fwd().backward(grad)
            try:
                with sdpa_kernel(backend):
                    with torch.no_grad():
                        f = mean_ms(fwd, a.repeat, warmup=3)
                    fb = mean_ms(fwd_bwd, a.repeat, warmup=3)
                print(f"{name:<10} {layout:<12} {f:8.3f} {fb:11.3f}")
            except RuntimeError as e:
                print(f"{name:<10} {layout:<12} refused: {str(e).splitlines()[0][:90]}")
    with torch.no_grad():
        default = mean_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), a.repeat, warmup=3)
    print(f"{'default':<10} {'enable_gqa':<12} {default:8.3f}  (what train_gpt.py gets without forcing)")


if __name__ == "__main__":
    main()
