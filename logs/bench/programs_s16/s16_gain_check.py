"""Session 16: the probe printed a q gain-gradient max rel diff of 0.487 against inductor's bf16 formula. Against the
formula in fp32 (eager, on the same bf16 inputs), per head: the kernel's dgain, the fp32 reference, inductor's."""
import sys
import torch
sys.path.insert(0, "tools"); sys.path.insert(0, ".")
import train_gpt, norm_rotary_probe as probe
B, T = 48, 2048
cos, sin = (t[:, :T].cuda().contiguous() for t in train_gpt.rotary_tables(T, 16, 10000.0))
g = torch.Generator(device="cuda").manual_seed(0)
qkv = torch.randn(B, T, 1024, device="cuda", generator=g).bfloat16()
xs = probe.qk_views(qkv)
def fp32_formula(x, gain):
    normed = x / x.square().mean(-1, keepdim=True).add(torch.finfo(torch.float32).eps).sqrt()
    return train_gpt.apply_rotary(normed, cos, sin) * gain[:, None]
def bf16_formula(x, gain):
    return train_gpt.apply_rotary(train_gpt.rms_norm(x), cos.to(x.dtype), sin.to(x.dtype)) * gain.to(x.dtype)[:, None]
compiled = torch.compile(bf16_formula, dynamic=False)
for name, x in zip("qk", xs):
    gain = torch.rand(x.size(2), device="cuda", generator=g) + 0.5
    grad = torch.randn(x.shape, device="cuda", generator=g).bfloat16()
    dx, dgain = train_gpt.fused_norm_rotary_backward(grad, x, cos, sin, gain)
    xr, gr = x.float().requires_grad_(), gain.clone().requires_grad_()
    rdx, rdg = torch.autograd.grad(fp32_formula(xr, gr), (xr, gr), grad.float())
    xb, gb = x.detach().clone().requires_grad_(), gain.clone().requires_grad_()
    idx, idg = torch.autograd.grad(compiled(xb, gb), (xb, gb), grad)
    print(f"{name}: dx max |kernel - fp32| {(dx.float() - rdx).abs().max().item():.3g}, |inductor - fp32| {(idx.float() - rdx).abs().max().item():.3g}")
    for h in range(x.size(2)):
        print(f"  head {h}: fp32 {rdg[h].item():12.4f} kernel {dgain[h].item():12.4f} inductor {idg[h].item():12.4f}")
