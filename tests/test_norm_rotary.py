"""The hand-written q/k RMS norm + rotary + gain kernels (train_gpt.fused_norm_rotary): forward and
backward equal the plain formula and its autograd gradients. On CPU they run in Triton's
interpreter (conftest sets TRITON_INTERPRET=1); on a CUDA machine as compiled kernels."""
import os

import pytest
import torch

import train_gpt

# CPU tensors need the interpreter: Triton's compiled kernels take CUDA tensors only
DEVICES = (["cpu"] if os.environ.get("TRITON_INTERPRET") == "1" else []) + (["cuda"] if torch.cuda.is_available() else [])


def formula(x, cos, sin, gain):
    """RMS norm of each head, rotary on the first 2 * HALF dims, times the per-head gain (fp32)."""
    normed = x / x.square().mean(-1, keepdim=True).add(torch.finfo(torch.float32).eps).sqrt()
    return train_gpt.apply_rotary(normed, cos, sin) * gain[:, None]


def inputs(B, T, heads, dim, half, seed, device):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, T, heads, dim, generator=g) * torch.rand(B, T, heads, 1, generator=g) * 3).to(device)
    cos, sin = (t.to(device) for t in train_gpt.rotary_tables(T + 3, 2 * half, 10000.0))
    gain = (torch.rand(heads, generator=g) + 0.5).to(device)
    return x, cos[:, :T], sin[:, :T], gain, torch.randn(B, T, heads, dim, generator=g).to(device)


# (B, T, heads, dim, half): the default q and k shapes scaled down; rows not a multiple of the
# 32-row tile; a head size that is not a power of two; rotary over every dim
SHAPES = [(2, 16, 8, 64, 8), (2, 16, 4, 64, 8), (1, 7, 3, 64, 8), (2, 5, 2, 48, 4), (1, 9, 2, 16, 8)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_equal_the_formula_and_its_gradients(shape, device):
    B, T, heads, dim, half = shape
    x, cos, sin, gain, grad_out = inputs(B, T, heads, dim, half, seed=sum(shape), device=device)
    out = train_gpt.fused_norm_rotary(x, cos, sin, gain)
    dx, dgain = train_gpt.fused_norm_rotary_backward(grad_out, x, cos, sin, gain)

    x_ref, gain_ref = x.clone().requires_grad_(), gain.clone().requires_grad_()
    expected = formula(x_ref, cos, sin, gain_ref)
    expected_dx, expected_dgain = torch.autograd.grad(expected, (x_ref, gain_ref), grad_out)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx, expected_dx, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dgain, expected_dgain, atol=1e-4, rtol=1e-5)
    assert expected_dgain.abs().min() > 1e-2 and expected_dx.abs().max() > 0.1


@pytest.mark.parametrize("device", DEVICES)
def test_autograd_reaches_x_and_the_gain_only(device):
    """The op's registered backward is the backward kernel: gradients flow to x and the gain."""
    x, cos, sin, gain, grad_out = inputs(2, 6, 4, 64, 8, seed=3, device=device)
    x.requires_grad_(), gain.requires_grad_()
    torch.autograd.backward(train_gpt.fused_norm_rotary(x, cos, sin, gain), grad_out)
    dx, dgain = train_gpt.fused_norm_rotary_backward(grad_out, x.detach(), cos, sin, gain.detach())
    torch.testing.assert_close(x.grad, dx, atol=0, rtol=0)
    torch.testing.assert_close(gain.grad, dgain, atol=0, rtol=0)


def test_norm_rotary_on_cpu_is_the_formula_in_the_input_dtype():
    """norm_rotary's CPU path (the one the CPU tests train with): the same function, no gain for k."""
    x, cos, sin, gain, _ = inputs(2, 6, 4, 64, 8, seed=5, device="cpu")
    torch.testing.assert_close(train_gpt.norm_rotary(x, cos, sin, gain), formula(x, cos, sin, gain), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(train_gpt.norm_rotary(x, cos, sin), formula(x, cos, sin, torch.ones(4)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_the_ops_compile_into_a_graph_with_their_backward(device):
    """Under torch.compile(fullgraph=True), as in training: the fake (shape) functions and the
    registered backward let the ops sit in one graph, with the eager op's gradients."""
    x, cos, sin, gain, _ = inputs(2, 8, 4, 64, 8, seed=7, device=device)

    def loss(x, g):
        return train_gpt.fused_norm_rotary(x, cos, sin, g).square().sum()

    results = []
    for run in (torch.compile(loss, fullgraph=True, dynamic=False), loss):
        xr, gr = x.clone().requires_grad_(), gain.clone().requires_grad_()
        value = run(xr, gr)
        results.append((value, *torch.autograd.grad(value, (xr, gr))))
    for compiled, eager in zip(*results):
        torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_kernels_read_x_in_place_in_a_wider_tensor(device):
    """Attention's q and k are column slices of one GEMM's output: the kernel reads them where they are
    (a position stride wider than heads * dim) and gives what it gives for a contiguous copy."""
    x, cos, sin, gain, grad_out = inputs(2, 6, 4, 64, 8, seed=9, device=device)
    wide = torch.cat((torch.randn(2, 6, 3, 64, device=device), x, torch.randn(2, 6, 5, 64, device=device)), dim=2)
    view = wide[:, :, 3:7]
    assert not view.is_contiguous() and view.stride(1) == 12 * 64
    torch.testing.assert_close(train_gpt.fused_norm_rotary(view, cos, sin, gain), train_gpt.fused_norm_rotary(x, cos, sin, gain), atol=0, rtol=0)
    for a, b in zip(train_gpt.fused_norm_rotary_backward(grad_out, view, cos, sin, gain), train_gpt.fused_norm_rotary_backward(grad_out, x, cos, sin, gain)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_int64_offsets_give_the_same_outputs(device, monkeypatch):
    """Inputs of 2^31 elements or more take int64 offsets (WIDE); that branch, forced on a small shape read in
    place from a wider tensor, gives what the int32 one gives, forward and backward."""
    x, cos, sin, gain, grad_out = inputs(2, 6, 4, 64, 8, seed=12, device=device)
    view = torch.cat((torch.randn(2, 6, 3, 64, device=device), x), dim=2)[:, :, 3:]
    runs = []
    for limit in (train_gpt.INT32_OFFSETS, 1):
        monkeypatch.setattr(train_gpt, "INT32_OFFSETS", limit)
        runs.append((train_gpt.fused_norm_rotary(view, cos, sin, gain), *train_gpt.fused_norm_rotary_backward(grad_out, view, cos, sin, gain)))
    for narrow, wide in zip(*runs):
        assert narrow.abs().max() > 0.1
        torch.testing.assert_close(wide, narrow, atol=0, rtol=0)

