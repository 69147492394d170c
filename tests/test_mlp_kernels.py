"""The MLP's GEMM kernel with LeakyReLU^2 in its epilogue (train_gpt._act_gemm_kernel, behind the custom ops
fused_linear_act, fused_mlp and fused_mlp_grad_u): every mode equals the plain formula, and mlp_kernels'
output and gradients equal autograd's through the formula, eagerly and under torch.compile. On CPU the
kernel runs in Triton's interpreter (conftest sets TRITON_INTERPRET=1) on fp32 tensors: the interpreter's
tl.dot multiplies bf16 values as their raw 16-bit patterns. On a CUDA machine it runs compiled, on bf16."""
import os

import pytest
import torch
import torch.nn.functional as F

import train_gpt

DEVICES = (["cpu"] if os.environ.get("TRITON_INTERPRET") == "1" else []) + (["cuda"] if torch.cuda.is_available() else [])
DTYPE = {"cpu": torch.float32, "cuda": torch.bfloat16}

# (tokens, dim, hidden): rows, dims and hidden units that are not whole tiles (128 x 64, 128 x 256); a
# hidden size whose rows are not whole 16-byte units (the epilogue stores from registers, not by TMA);
# and whole tiles, more of them than the 3 programs the interpreter runs, so that programs loop
SHAPES = [(300, 96, 320), (300, 96, 100), (512, 64, 512)]


def act(u, slope):
    return F.leaky_relu(u, slope).square()


def assert_near(got, want, device):
    """fp32 (interpreter): elementwise; bf16 (CUDA): the whole tensor's relative error, a few of bf16's roundings."""
    got, want = got.float(), want.float()
    assert got.shape == want.shape
    if device == "cpu":
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    else:
        assert (got - want).norm() <= 1e-2 * want.norm()


def tensors(M, dim, hidden, seed, device):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape, scale=1.0: (torch.randn(*shape, generator=g) * scale).to(device, DTYPE[device])
    return make(M, dim), make(hidden, dim, scale=dim ** -0.5), make(dim, hidden, scale=hidden ** -0.5), make(M, dim)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", [0.5, 0.0, 0.3])  # 0.3: 2 * slope^2 is not slope
@pytest.mark.parametrize("shape", SHAPES)
def test_each_kernel_mode_equals_the_formula(shape, slope, device):
    x, w_fc, w_proj, grad_y = tensors(*shape, seed=sum(shape), device=device)
    u_ref = F.linear(x.float(), w_fc.float())
    assert u_ref.lt(0).any() and u_ref.gt(0).any()
    assert_near(train_gpt.fused_linear_act(x, w_fc, slope), act(u_ref, slope), device)
    y, u, h = train_gpt.fused_mlp(x, w_fc, w_proj, slope)
    assert_near(u, u_ref, device)
    assert_near(h, act(u.float(), slope), device)
    assert_near(y, h.float() @ w_proj.float().t(), device)
    deriv = torch.where(u.float() > 0, 2 * u.float(), 2 * slope * slope * u.float())
    grad_u = train_gpt.fused_mlp_grad_u(grad_y, w_proj, u, slope)
    assert grad_u.abs().max() > 0.1
    assert_near(grad_u, (grad_y.float() @ w_proj.float()) * deriv, device)


def forward_and_grads(fn, x, w_fc, w_proj, grad_y):
    x, w_fc, w_proj = (t.detach().requires_grad_() for t in (x, w_fc, w_proj))
    y = fn(x, w_fc, w_proj)
    return (y, *torch.autograd.grad((y * grad_y).sum(), (x, w_fc, w_proj)))


@pytest.mark.parametrize("device", DEVICES)
def test_mlp_kernels_give_the_formulas_output_and_gradients(device):
    """Through mlp_kernels, as MLP.forward calls it: (B, T, dim) input; autograd keeps u and h, inference does not."""
    x, w_fc, w_proj, grad_y = tensors(2 * 150, 96, 320, seed=5, device=device)
    x, grad_y = x.view(2, 150, 96), grad_y.view(2, 150, 96)
    formula = lambda x, w_fc, w_proj: F.linear(act(F.linear(x, w_fc), 0.5), w_proj)
    got = forward_and_grads(lambda *t: train_gpt.mlp_kernels(*t, 0.5), x, w_fc, w_proj, grad_y)
    want = forward_and_grads(formula, x, w_fc, w_proj, grad_y)  # in the same dtype: on CUDA, the roundings the model had
    for a, b in zip(got, want):
        assert b.abs().max() > 0.1
        assert_near(a, b, device)
    with torch.inference_mode():
        torch.testing.assert_close(train_gpt.mlp_kernels(x, w_fc, w_proj, 0.5), got[0].detach(), atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_frozen_weights_get_no_gradient_and_the_input_the_same(device):
    """TTT_MODE=lora trains adapters around frozen weights: the backward computes grad x only (autograd
    would drop unasked gradients anyway; this checks they are never computed)."""
    x, w_fc, w_proj, grad_y = tensors(300, 96, 320, seed=6, device=device)
    _, u, h = train_gpt.fused_mlp(x, w_fc, w_proj, 0.5)

    class Context:  # what autograd hands the backward when only x requires a gradient
        saved_tensors, slope, needs_input_grad = (x, w_fc, w_proj, u, h), 0.5, (True, False, False, False)
    grad_x, grad_fc, grad_proj, _ = train_gpt._mlp_grads(Context, grad_y)
    assert grad_fc is None and grad_proj is None
    full = forward_and_grads(lambda *t: train_gpt.mlp_kernels(*t, 0.5), x, w_fc, w_proj, grad_y)
    torch.testing.assert_close(grad_x, full[1], atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_the_ops_compile_into_a_graph_with_their_backward(device):
    x, w_fc, w_proj, grad_y = tensors(200, 64, 256, seed=8, device=device)
    fn = lambda x, w_fc, w_proj: train_gpt.mlp_kernels(x * 2, w_fc, w_proj, 0.5).tanh()
    compiled = torch.compile(fn, fullgraph=True, dynamic=False)
    for a, b in zip(forward_and_grads(compiled, x, w_fc, w_proj, grad_y), forward_and_grads(fn, x, w_fc, w_proj, grad_y)):
        assert_near(a, b, device)


def test_mlp_module_computes_leaky_relu_squared_between_its_projections():
    """The plain path (CPU, or shapes the kernel cannot take), out_scale on proj's rows."""
    args = train_gpt.Hyperparameters({"MODEL_DIM": "64", "NUM_HEADS": "2", "NUM_KV_HEADS": "1"})
    mlp = train_gpt.MLP(args)
    torch.nn.init.normal_(mlp.proj.weight, std=0.05)
    x, scale = torch.randn(2, 8, 64), torch.rand(64) + 0.5
    want = F.linear(act(x @ mlp.fc.weight.t(), 0.5), mlp.proj.weight * scale[:, None])
    torch.testing.assert_close(mlp(x, scale), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the kernel path runs on CUDA tensors in bf16")
def test_mlp_module_on_cuda_equals_its_plain_path():
    args = train_gpt.Hyperparameters({"MODEL_DIM": "128", "NUM_HEADS": "2", "NUM_KV_HEADS": "1"})
    mlp = train_gpt.MLP(args).cuda()
    torch.nn.init.normal_(mlp.proj.weight, std=0.05)
    x = torch.randn(2, 64, 128, device="cuda", dtype=torch.bfloat16)
    scale = torch.rand(128, device="cuda") + 0.5
    fused = mlp(x, scale)
    with torch.inference_mode():
        fused_inference = mlp(x, scale)
    mlp.fusable = False
    assert_near(fused, mlp(x, scale), "cuda")
    assert_near(fused_inference, fused.detach(), "cuda")


@pytest.mark.parametrize("device", DEVICES)
def test_int64_offsets_give_the_same_outputs(device, monkeypatch):
    """Outputs of 2^31 elements or more take int64 offsets in the epilogue (WIDE); that branch, forced on a
    small shape, computes what the int32 one does, in every mode."""
    x, w_fc, w_proj, grad_y = tensors(300, 96, 320, seed=11, device=device)
    runs = []
    for limit in (train_gpt.INT32_OFFSETS, 1):
        monkeypatch.setattr(train_gpt, "INT32_OFFSETS", limit)
        u = torch.empty(300, 320, device=device, dtype=x.dtype)
        h = train_gpt._act_gemm(x, w_fc, 0.5, 1, u)
        runs.append((train_gpt._act_gemm(x, w_fc, 0.5, 0), u, h, train_gpt._act_gemm(grad_y, w_proj.t().contiguous(), 0.5, 2, u)))
    for narrow, wide in zip(*runs):
        assert narrow.abs().max() > 0.1
        torch.testing.assert_close(wide, narrow, atol=0, rtol=0)
