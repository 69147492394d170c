"""The GPT model: shapes, loss, gradients, parameter count, causality and each architecture switch."""
import math
import re

import pytest
import torch
import torch.nn.functional as F

import train_gpt
from conftest import REPO_ROOT, randomize_, tiny_args


def expected_param_count(a) -> int:
    """Parameter count derived from the architecture description, independently of GPT's code."""
    D, L, V = a.model_dim, a.num_layers, a.vocab_size
    kv = a.num_kv_heads * (D // a.num_heads)
    hidden = int(a.mlp_mult * D)
    n = V * D + D                                                    # tied embedding, smear gate
    if a.bigram_vocab_size:
        n += a.bigram_vocab_size * a.bigram_dim + a.bigram_dim * D + 1  # table, projection, scale
    per_block = 2 * D * D + 2 * D * kv + a.num_heads + 2 * D * hidden + 2 * D + 2 * D  # q,proj,k,v,q_gain,mlp,scales,resid_mix
    n += L * per_block
    depth = L + len(a.loop_layers)                                  # layers run, the loop's second pass included
    n += min(depth // 2, depth - depth // 2) * D * (2 if a.skip_gates else 1)  # U-Net skip weights (and gates)
    if a.vrl_enabled:
        n += L - 1
    if a.ve_layers:
        n += V * a.ve_dim + a.ve_dim * kv + 1 + len(a.ve_layers)
    return n


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_pr803_config_param_count():
    args = train_gpt.Hyperparameters(environ={"RECIPE": "pr803"})
    with torch.device("meta"):
        model = train_gpt.GPT(args)
    assert count(model) == 26_993_766
    assert expected_param_count(args) == 26_993_766


def test_default_modern_recipe_param_count():
    """MLP 4x (+5.77M), one more U-Net skip for the 13 layers run, and its gates."""
    args = train_gpt.Hyperparameters(environ={})
    assert args.recipe == "modern"
    with torch.device("meta"):
        model = train_gpt.GPT(args)
    assert count(model) == expected_param_count(args) == 26_993_766 + 11 * 2 * 512 * 512 + 512 + 6 * 512


@pytest.mark.parametrize("overrides", [{}, dict(VRL_ENABLED="0", VE_ENABLED="0", BIGRAM_VOCAB_SIZE="0"),
                                       dict(NUM_LAYERS="3", VE_LAYERS="0,2", MLP_MULT="2.5"),
                                       dict(NUM_LAYERS="4", VE_LAYERS="3", LOOP_LAYERS="1,2", SKIP_GATES="1", PARALLEL_RESIDUAL_FROM="2")])
def test_tiny_param_count_matches_architecture(overrides):
    args = tiny_args(**overrides)
    assert count(train_gpt.GPT(args)) == expected_param_count(args)


def test_hidden_and_head_shapes_and_softcap():
    args = tiny_args()
    torch.manual_seed(0)
    model = randomize_(train_gpt.GPT(args), std=0.5)
    idx = torch.randint(0, args.vocab_size, (3, 40))
    h = model.hidden(idx)
    assert h.shape == (3, 40, args.model_dim)
    # the final hidden state is RMS-normalised
    torch.testing.assert_close(h.pow(2).mean(-1), torch.ones(3, 40), atol=1e-3, rtol=1e-3)
    logits = model.head(h)
    assert logits.shape == (3, 40, args.vocab_size) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert logits.abs().max() <= args.logit_softcap


def test_rotary_tables_are_computed_once_for_the_longest_sequence_and_not_saved():
    args = tiny_args(TRAIN_SEQ_LEN=16, EVAL_SEQ_LEN=128)
    model = randomize_(train_gpt.GPT(args), std=0.5)
    cos, sin = train_gpt.rotary_tables(128, args.rope_dims, args.rope_base)
    assert model.rope_cos.shape == (1, 128, 1, args.rope_dims // 2)
    torch.testing.assert_close(model.rope_cos, cos, rtol=0, atol=0)
    torch.testing.assert_close(model.rope_sin, sin, rtol=0, atol=0)
    # position p of the table rotates by p * base^(-2i/dims): check against the formula
    p, i = 127, 1
    assert model.rope_cos[0, p, 0, i].item() == pytest.approx(math.cos(p * args.rope_base ** (-2 * i / args.rope_dims)), abs=1e-6)
    assert not any(k.startswith("rope_") for k in model.state_dict())  # the artifact does not pay for them
    idx = torch.randint(0, args.vocab_size, (2, 128))
    h = model.hidden(idx)  # the eval length (longer than training's) runs
    torch.testing.assert_close(model.hidden(idx[:, :16]), h[:, :16], atol=1e-5, rtol=1e-5)  # causal: a prefix reads the same rows


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
@pytest.mark.parametrize("overrides", [{}, dict(NUM_LAYERS="3", VE_LAYERS="0", XSA_LAST_N="0", VRL_ENABLED="0")])
@pytest.mark.parametrize("last", [1, 7, 40])
def test_hidden_of_the_last_positions_is_the_tail_of_the_whole(device, overrides, last):
    """The sliding eval asks only for the positions it scores: the last block then runs its queries,
    XSA, output and MLP for those alone (keys and values still cover every position), and every
    earlier block the whole window. Tiny default: the last block has XSA, VE and VRL's extra v.
    On CUDA in bf16 (the kernels' paths), so to bf16's precision."""
    args = tiny_args(**overrides)
    torch.manual_seed(0)
    model = randomize_(train_gpt.GPT(args), std=0.5).to(device)
    idx = torch.randint(0, args.vocab_size, (3, 40), device=device)
    rows = {}
    for i, block in enumerate(model.blocks):
        block.mlp.register_forward_hook(lambda m, inputs, out, i=i: rows.__setitem__(i, inputs[0].size(1)))
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=device == "cuda"):
        full = model.hidden(idx)
        assert set(rows.values()) == {40}
        tail = model.hidden(idx, last)
    assert tail.shape == (3, last, args.model_dim)
    assert rows == {**{i: 40 for i in range(args.num_layers - 1)}, args.num_layers - 1: last}
    tol = 3e-2 if device == "cuda" else 1e-5
    torch.testing.assert_close(tail.float(), full[:, -last:].float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_attention_of_the_last_queries_is_the_tail_of_causal_attention(device):
    """q for the last n positions only: each still sees every key up to its own position (the mask is
    aligned to the last position, not the first)."""
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q, k, v = (torch.randn(2, 50, h, 16, device=device, dtype=dtype) for h in (4, 2, 2))
    full = train_gpt.causal_attention(q, k, v)
    for n in (1, 9, 49):
        tail = train_gpt.causal_attention(q[:, -n:], k, v)
        tol = 2e-2 if device == "cuda" else 1e-5
        torch.testing.assert_close(tail, full[:, -n:], atol=tol, rtol=tol)


def fa3_stand_in(returns_tuple: bool):
    """flash_attn_interface.flash_attn_func as FlashAttention-3 documents it, written out slowly: q
    (B, Tq, H, D), k and v (B, Tk, Hkv, D) with H a multiple of Hkv (query head h reads KV head
    h // (H / Hkv)), last dims contiguous, and with causal=True query i sees the keys up to
    Tk - Tq + i (the mask aligned to the bottom right). Returns out (B, Tq, H, D), or (out, lse)."""
    def flash_attn_func(q, k, v, causal=False):
        (B, Tq, H, D), Tk, Hkv = q.shape, k.size(1), k.size(2)
        assert causal and H % Hkv == 0 and k.shape == v.shape == (B, Tk, Hkv, D)
        assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1
        kv_head = torch.arange(H) // (H // Hkv)
        scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()[:, :, kv_head]) / D ** 0.5
        visible = torch.arange(Tk)[None, :] <= (Tk - Tq + torch.arange(Tq))[:, None]
        scores = scores.masked_fill(~visible, float("-inf"))
        out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v.float()[:, :, kv_head]).to(q.dtype)
        return (out, scores.logsumexp(-1)) if returns_tuple else out
    return flash_attn_func


@pytest.mark.parametrize("returns_tuple", [True, False])
def test_the_flash_attention_3_path_keeps_the_sdpa_paths_contract(monkeypatch, returns_tuple):
    """The FA3 path (used where flash_attn_interface imports, on CUDA; never run on our machines)
    against a stand-in of its documented contract: same layout, GQA, alignment of the causal mask
    for queries of the last positions only, and either return type. Both paths agree."""
    monkeypatch.setattr(train_gpt, "flash_attn_func", fa3_stand_in(returns_tuple))
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 40, h, 16) for h in (4, 2, 2))
    for n in (40, 7, 1):
        torch.testing.assert_close(train_gpt.flash_attention(q[:, -n:], k, v), train_gpt.sdpa_attention(q[:, -n:], k, v), atol=1e-5, rtol=1e-5)
    # as the model calls it: q, k from the norm + rotary, v a view of the fused q/k/v projection's output
    args = tiny_args()
    attn = randomize_(train_gpt.GPT(args)).blocks[1].attn
    captured = []
    monkeypatch.setattr(train_gpt, "causal_attention", lambda q, k, v: captured.append((q, k, v)) or train_gpt.sdpa_attention(q, k, v))
    rotary = [t[:, :24] for t in (train_gpt.GPT(args).rope_cos, train_gpt.GPT(args).rope_sin)]
    with torch.no_grad():
        attn(torch.randn(2, 24, args.model_dim), None, rotary, torch.ones(args.model_dim), last=5)
    q, k, v = captured[0]
    torch.testing.assert_close(train_gpt.flash_attention(q, k, v), train_gpt.sdpa_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_init_loss_is_uniform_and_backward_gives_finite_grads():
    args = tiny_args()
    torch.manual_seed(0)
    model = train_gpt.GPT(args)
    idx = torch.randint(0, args.vocab_size, (2, 64))
    loss = model(idx[:, :-1], idx[:, 1:])
    assert loss.ndim == 0 and torch.isfinite(loss)
    # tiny tied-embedding init => near-uniform predictions
    assert abs(loss.item() - math.log(args.vocab_size)) < 0.05
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


def test_residual_stream_runs_in_the_autocast_dtype_and_matches_fp32():
    """Under autocast (bf16 on GPU) every block reads and writes the stream in bf16; the loss and the
    gradients stay those of the fp32 model to bf16 rounding. Without autocast the stream is fp32."""
    args = tiny_args()
    model = randomize_(train_gpt.GPT(args), std=0.1)
    idx = torch.randint(0, args.vocab_size, (2, 65), generator=torch.Generator().manual_seed(1))
    seen = []
    hooks = [b.register_forward_hook(lambda m, inp, out: seen.append((inp[0].dtype, out[0].dtype))) for b in model.blocks]
    loss32 = model(idx[:, :-1], idx[:, 1:])
    grads32 = torch.autograd.grad(loss32, list(model.parameters()))
    assert set(seen) == {(torch.float32, torch.float32)}
    seen.clear()
    with torch.autocast("cpu", torch.bfloat16):
        loss16 = model(idx[:, :-1], idx[:, 1:])
    grads16 = torch.autograd.grad(loss16, list(model.parameters()))
    for h in hooks:
        h.remove()
    assert set(seen) == {(torch.bfloat16, torch.bfloat16)} and len(seen) == args.num_layers
    assert loss16.dtype == torch.float32 and abs(loss16.item() - loss32.item()) < 0.02 * loss32.item()
    for (name, p), g32, g16 in zip(model.named_parameters(), grads32, grads16):
        assert g16.dtype == p.dtype == torch.float32, name
        cos = F.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
        assert cos > 0.98, f"{name}: bf16-stream gradient direction differs from fp32 (cosine {cos:.3f})"


@pytest.mark.parametrize("qat", [False, True])
@pytest.mark.parametrize("per_output", [True, False])
def test_out_scale_on_the_weight_equals_scaling_the_output(per_output, qat):
    """CastedLinear folds `out_scale` into the weight's rows: the output, and the gradients of the
    input, the weight and the scale, are those of the unscaled layer's output times the scale."""
    g = torch.Generator().manual_seed(0)
    layer = train_gpt.CastedLinear(64, 48)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(48, 64, generator=g))
    layer.qat = qat
    x = torch.randn(3, 5, 64, generator=g, requires_grad=True)
    scale = (torch.randn(48 if per_output else (), generator=g) + 1).requires_grad_()
    grad_out = torch.randn(3, 5, 48, generator=g)

    folded = layer(x, scale)
    grads_folded = torch.autograd.grad(folded, (x, layer.weight, scale), grad_out)
    on_output = layer(x) * scale
    grads_on_output = torch.autograd.grad(on_output, (x, layer.weight, scale), grad_out)
    torch.testing.assert_close(folded, on_output, atol=1e-4, rtol=1e-5)
    for a, b in zip(grads_folded, grads_on_output):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-5)
    assert scale.grad is None and grads_folded[2].abs().sum() > 0


def block_inputs(model, D: int, T: int = 16):
    """Seeded inputs of a block: the residual stream x, the embedding x0, an extra v, and the rotary tables."""
    g = torch.Generator().manual_seed(2)
    x, x0, extra_v = torch.randn(2, T, D, generator=g), torch.randn(2, T, D, generator=g), torch.randn(2, T, D // 2, generator=g)
    return x, x0, extra_v, [t[:, :T] for t in (model.rope_cos, model.rope_sin)]


def test_block_applies_its_residual_scales_to_the_branch_outputs():
    """A block is x + attn_scale * attention(...), then + mlp_scale * mlp(...): the scales reach the
    output projections' weights (see the test above) and nothing else."""
    args = tiny_args()
    model = randomize_(train_gpt.GPT(args))
    block, D = model.blocks[1], args.model_dim
    x, x0, extra_v, rotary = block_inputs(model, D)
    with torch.no_grad():
        out, v = block(x, x0, extra_v, rotary)
        mix = block.resid_mix
        x = mix[0] * x + mix[1] * x0
        attn_out, own_v = block.attn(train_gpt.rms_norm(x) * block.ln_scale, extra_v, rotary, torch.ones(D))
        x = x + block.attn_scale * attn_out
        expected = x + block.mlp_scale * block.mlp(train_gpt.rms_norm(x) * block.ln_scale, torch.ones(D))
    assert block.attn_scale.std() > 0.05 and block.mlp_scale.std() > 0.05
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v, own_v)


def test_parallel_block_adds_attention_and_mlp_of_the_same_input():
    """PARALLEL_RESIDUAL_FROM=1: block 1 is x + attn_scale * attention(n) + mlp_scale * mlp(n), n the
    normed mixed input of both; block 0 stays sequential."""
    args = tiny_args(PARALLEL_RESIDUAL_FROM=1)
    model = randomize_(train_gpt.GPT(args))
    assert [b.parallel for b in model.blocks] == [False, True]
    block, D = model.blocks[1], args.model_dim
    x, x0, extra_v, rotary = block_inputs(model, D)
    with torch.no_grad():
        out, _ = block(x, x0, extra_v, rotary)
        tail, _ = block(x, x0, extra_v, rotary, last=5)
        mixed = block.resid_mix[0] * x + block.resid_mix[1] * x0
        n = train_gpt.rms_norm(mixed) * block.ln_scale
        expected = (mixed + block.attn_scale * block.attn(n, extra_v, rotary, torch.ones(D))[0]
                    + block.mlp_scale * block.mlp(n, torch.ones(D)))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tail, expected[:, -5:], atol=1e-5, rtol=1e-5)


def test_loop_runs_its_layers_a_second_time_with_the_same_weights():
    """LOOP_LAYERS=1,2 on 4 layers: 0,1,2,1,2,3 once `looping` is set (and by default, as at eval),
    0,1,2,3 before; the U-Net pairs the first 3 layers run with the last 3 (3 skips)."""
    args = tiny_args(NUM_LAYERS=4, VE_LAYERS="3", LOOP_LAYERS="1,2")
    model = randomize_(train_gpt.GPT(args)).eval()
    assert model.looping and model.skip_weights.shape == (3, args.model_dim)
    ran = []
    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda m, inp, i=i: ran.append(i))
    idx = torch.randint(0, args.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        looped = model.hidden(idx)
        assert ran == [0, 1, 2, 1, 2, 3]
        ran.clear()
        model.looping = False
        plain = model.hidden(idx)
        assert ran == [0, 1, 2, 3]
        # the last position's hidden state, as the eval computes it, also runs the loop
        model.looping = True
        torch.testing.assert_close(model.hidden(idx, last=4), looped[:, -4:], atol=1e-5, rtol=1e-5)
    assert (looped - plain).abs().max() > 1e-3


def test_skip_gates_blend_the_skip_into_the_decoder_input():
    """SKIP_GATES=1: the decoder input is lerp(skip_weight * skip, x, sigmoid(gate)). A gate of +30
    keeps x alone, which is the model without skips (skip weights 0, no gates)."""
    gated = randomize_(train_gpt.GPT(tiny_args(NUM_LAYERS=4, VE_LAYERS="3", SKIP_GATES=1))).eval()
    plain = randomize_(train_gpt.GPT(tiny_args(NUM_LAYERS=4, VE_LAYERS="3")))
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if k != "skip_gates"})
    assert torch.equal(train_gpt.GPT(tiny_args(SKIP_GATES=1)).skip_gates, torch.zeros(1, 64))  # sigmoid(0) = 1/2 at init
    idx = torch.randint(0, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gated.skip_gates.fill_(30.0)
        plain.skip_weights.zero_()
        torch.testing.assert_close(gated.hidden(idx), plain.hidden(idx), atol=1e-5, rtol=1e-5)
        # a gate of 0: the input is the mean of x and the weighted skip, (x + skip_weight * skip) / 2
        gated.skip_gates.zero_()
        plain.load_state_dict({k: v for k, v in gated.state_dict().items() if k != "skip_gates"})
        for block in plain.blocks[2:]:  # halve the decoder layers' inputs, skips added
            block.register_forward_pre_hook(lambda m, inp: (inp[0] / 2, *inp[1:]))
        torch.testing.assert_close(gated.hidden(idx), plain.hidden(idx), atol=1e-5, rtol=1e-5)


def test_recipes_set_their_values_and_any_setting_overrides_them():
    modern, pr803 = train_gpt.Hyperparameters(environ={}), train_gpt.Hyperparameters(environ={"RECIPE": "pr803"})
    for name, value in train_gpt.RECIPES["modern"].items():
        parsed = getattr(modern, name.lower())
        assert parsed == (tuple(int(s) for s in value.split(",")) if name == "LOOP_LAYERS" else value), name
    assert all(getattr(pr803, n.lower()) == v for n, v in train_gpt.SETTINGS.items()
               if n not in ("RECIPE", "LOOP_LAYERS", "VE_LAYERS", "QUANT_CLIP_SIGMAS", "EVAL_SEQ_LEN", "TTT_LORA_TARGETS", "TTT_LORA_CONTEXT"))
    assert train_gpt.Hyperparameters(environ={"RECIPE": "modern", "MLP_MULT": "3"}).mlp_mult == 3.0
    assert train_gpt.Hyperparameters(environ={"RECIPE": "modern", "SMOKE": "1"}).loop_layers == (1, 2)  # valid on SMOKE's 4 layers
    with pytest.raises(train_gpt.UserError, match="RECIPE='newest' must be one of pr803, modern"):
        train_gpt.Hyperparameters(environ={"RECIPE": "newest"})


@pytest.mark.parametrize("qat", [False, True])
def test_attention_is_its_three_projections(qat):
    """Attention computes q, k and v with one GEMM (their weights concatenated): output and gradients
    are those of the three projections applied one by one."""
    args = tiny_args(XSA_LAST_N=1)
    model = randomize_(train_gpt.GPT(args), std=0.3)
    attn, D = model.blocks[-1].attn, args.model_dim
    assert attn.exclusive
    for layer in (attn.q, attn.k, attn.v, attn.proj):  # set_qat skips a tiny model's small matrices
        layer.qat = qat
    B, T, kv = 2, 16, attn.kv_heads * attn.head_dim
    g = torch.Generator().manual_seed(4)
    x = torch.randn(B, T, D, generator=g, requires_grad=True)
    extra_v, scale, grad_out = torch.randn(B, T, kv, generator=g), torch.rand(D, generator=g) + 0.5, torch.randn(B, T, D, generator=g)
    rotary = [t[:, :T] for t in (model.rope_cos, model.rope_sin)]

    def one_by_one():
        q = train_gpt.norm_rotary(attn.q(x).view(B, T, attn.heads, attn.head_dim), *rotary, attn.q_gain)
        k = train_gpt.norm_rotary(attn.k(x).view(B, T, attn.kv_heads, attn.head_dim), *rotary)
        own_v = attn.v(x)
        v = (own_v + extra_v).view(B, T, attn.kv_heads, attn.head_dim)
        y = train_gpt.causal_attention(q, k, v).view(B, T, attn.kv_heads, -1, attn.head_dim)
        unit_v = F.normalize(v, dim=-1).unsqueeze(3)
        y = y - (y * unit_v).sum(-1, keepdim=True) * unit_v
        return attn.proj(y.reshape(B, T, D), scale), own_v

    inputs = (x, attn.q.weight, attn.k.weight, attn.v.weight, attn.q_gain)
    results = []
    for forward in (lambda: attn(x, extra_v, rotary, scale), one_by_one):
        out, own_v = forward()
        results.append((out, own_v, torch.autograd.grad((out * grad_out).sum() + own_v.sum(), inputs)))
    (out, own_v, grads), (ref_out, ref_v, ref_grads) = results
    assert ref_out.abs().max() > 0.1
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(own_v, ref_v, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, ref_grads):
        assert b.abs().max() > 1e-3
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_weighted_loss_is_mean_of_weighted_token_ce():
    args = tiny_args()
    torch.manual_seed(0)
    model = randomize_(train_gpt.GPT(args))
    x, y = torch.randint(0, args.vocab_size, (2, 2, 32))
    ce = F.cross_entropy(model.head(model.hidden(x)).flatten(0, 1), y.flatten(), reduction="none")
    w = torch.rand(2, 32) + 0.1
    torch.testing.assert_close(model(x, y), ce.mean())
    torch.testing.assert_close(model(x, y, torch.ones(2, 32)), ce.mean())
    torch.testing.assert_close(model(x, y, w), (ce * w.flatten()).mean())


def _structured_batch(vocab: int, seqs: int, seq_len: int, seed: int = 0):
    """Token streams with a deterministic next-token rule (y = (3x + 1) mod 97) plus some noise."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.empty(seqs, seq_len + 1, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, 97, (seqs,), generator=g)
    for t in range(seq_len):
        tokens[:, t + 1] = (3 * tokens[:, t] + 1) % 97
    noise = torch.rand(tokens.shape, generator=g) < 0.1
    tokens[noise] = torch.randint(0, vocab, (int(noise.sum()),), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def test_optimizers_reduce_loss_and_every_parameter_learns():
    """Muon + AdamW from build_optimizers fit a learnable batch; once the zero-initialised paths
    have moved, every parameter receives a non-zero finite gradient."""
    args = tiny_args()
    torch.manual_seed(0)
    model = train_gpt.GPT(args)
    optimizers = train_gpt.build_optimizers(model, args)
    muon_params = {id(p) for g in optimizers[1].param_groups for p in g["params"]}
    assert muon_params == {id(m.weight) for m in model.modules() if isinstance(m, train_gpt.CastedLinear)}
    x, y = _structured_batch(args.vocab_size, 8, 64)
    losses = []
    for _ in range(12):
        loss = model(x, y)
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.6 * losses[0], losses
    model(x, y).backward()
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} still gets an all-zero gradient after training"


def test_model_is_causal():
    """Changing token t changes no output before t (smear gate, bigram hash, XSA and VE included)."""
    args = tiny_args(XSA_LAST_N=2, VE_LAYERS="0,1")
    model = randomize_(train_gpt.GPT(args), std=0.3).eval()
    idx = torch.randint(0, args.vocab_size, (2, 48), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 30] = (changed[:, 30] + 7) % args.vocab_size
    with torch.no_grad():
        a, b = model.hidden(idx), model.hidden(changed)
    torch.testing.assert_close(a[:, :30], b[:, :30], atol=1e-5, rtol=1e-5)
    assert (a[:, 30] - b[:, 30]).abs().max() > 1e-3


@pytest.mark.parametrize("xsa_last_n, exclusive", [(0, [False, False]), (1, [False, True]), (2, [True, True])])
def test_xsa_removes_component_along_own_value(xsa_last_n, exclusive):
    args = tiny_args(XSA_LAST_N=xsa_last_n, VRL_ENABLED=0, VE_ENABLED=0)  # so v is exactly the layer's own v
    model = randomize_(train_gpt.GPT(args), std=0.3).eval()
    assert [b.attn.exclusive for b in model.blocks] == exclusive
    captured = {}
    for i, block in enumerate(model.blocks):
        block.attn.register_forward_pre_hook(lambda m, inp, i=i: captured.__setitem__(("v", i), m.v(inp[0])))
        block.attn.proj.register_forward_pre_hook(lambda m, inp, i=i: captured.__setitem__(("y", i), inp[0]))
    B, T = 2, 24
    with torch.no_grad():
        model.hidden(torch.randint(0, args.vocab_size, (B, T)))
    kv, hd = args.num_kv_heads, args.model_dim // args.num_heads
    for i, is_exclusive in enumerate(exclusive):
        y = captured[("y", i)].view(B, T, kv, args.num_heads // kv, hd)
        unit_v = F.normalize(captured[("v", i)].view(B, T, kv, hd), dim=-1).unsqueeze(3)
        along_v = (y * unit_v).sum(-1).abs().max().item()
        if is_exclusive:
            assert along_v < 1e-5
        else:
            assert along_v > 1e-3


# Each switch: settings that turn it off, the parameters that must disappear, and (when the switch
# has a learned gate) the parameter which, set to 0 in the "on" model, makes it equal the "off" model.
SWITCHES = {
    "VRL_ENABLED=0": (dict(VRL_ENABLED="0"), {"vrl_scales"}, "vrl_scales"),
    "VE_ENABLED=0": (dict(VE_ENABLED="0"), {"ve_embed.weight", "ve_proj.weight", "ve_scale", "ve_layer_scales"}, "ve_scale"),
    "BIGRAM_VOCAB_SIZE=0": (dict(BIGRAM_VOCAB_SIZE="0"), {"bigram.embed.weight", "bigram.proj.weight", "bigram.scale"}, "bigram.scale"),
    "XSA_LAST_N=0": (dict(XSA_LAST_N="0"), set(), None),
    "LN_SCALE=0": (dict(LN_SCALE="0"), set(), None),
    "LEAKY_RELU=0": (dict(LEAKY_RELU="0"), set(), None),
}


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_architecture_switch(switch):
    overrides, removed, gate = SWITCHES[switch]
    on = randomize_(train_gpt.GPT(tiny_args())).eval()
    off = randomize_(train_gpt.GPT(tiny_args(**overrides))).eval()
    on_params, off_params = dict(on.named_parameters()), dict(off.named_parameters())
    assert set(on_params) - set(off_params) == removed
    assert set(off_params) <= set(on_params)
    assert count(on) - count(off) == sum(on_params[n].numel() for n in removed)

    # the "off" model trains: finite loss and gradients
    idx = torch.randint(0, 1024, (2, 33), generator=torch.Generator().manual_seed(3))
    off.train()
    loss = off(idx[:, :-1], idx[:, 1:])
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in off.parameters())
    off.eval()

    with torch.no_grad():
        h_on, h_off = on.hidden(idx), off.hidden(idx)
        assert (h_on - h_off).abs().max() > 1e-3, f"{switch} does not change the model function"
        if gate is not None:  # gate at 0 => exactly the model without the feature
            on_params[gate].zero_()
            torch.testing.assert_close(on.hidden(idx), h_off, atol=1e-5, rtol=1e-5)

    if switch == "XSA_LAST_N=0":
        assert [b.attn.exclusive for b in on.blocks] == [False, True]
        assert not any(b.attn.exclusive for b in off.blocks)
    if switch == "LN_SCALE=0":
        assert [b.ln_scale for b in on.blocks] == pytest.approx([1.0, 1 / math.sqrt(2)])
        assert [b.ln_scale for b in off.blocks] == [1.0, 1.0]
    if switch == "LEAKY_RELU=0":
        assert {b.mlp.negative_slope for b in on.blocks} == {0.5}
        assert {b.mlp.negative_slope for b in off.blocks} == {0.0}


def _reference_muon_step(params, grads, buffers, lr, mu, wd, steps, coeffs, row_norm):
    """Muon as first written: one matrix at a time (2-D Newton-Schulz on each)."""
    for p, g, buf in zip(params, grads, buffers):
        buf.mul_(mu).add_(g)
        u = torch.add(g, buf, alpha=mu)  # as torch._foreach_add rounds it
        if row_norm:
            u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-7)
        x = u.bfloat16()
        x = x / (x.norm() + 1e-7)
        tall = x.size(0) > x.size(1)
        if tall:
            x = x.T
        for k in range(steps):
            a, b, c = coeffs[min(k, len(coeffs) - 1)]
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        x = x.T if tall else x
        p.mul_(1 - lr * wd)
        p.add_(x.float() * max(1, p.size(0) / p.size(1)) ** 0.5, alpha=-lr)


@pytest.mark.parametrize("coeffs,row_norm", [("quintic", False), ("polar", True)])
def test_muon_orthogonalizes_same_shape_matrices_as_one_stack_with_the_same_result(coeffs, row_norm):
    g = torch.Generator().manual_seed(0)
    shapes = [(64, 64), (96, 32), (64, 64), (32, 96), (96, 32), (64, 64), (16, 64)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.1) for s in shapes]
    reference = [p.detach().clone() for p in params]
    buffers = [torch.zeros_like(p) for p in reference]
    opt = train_gpt.Muon(params, lr=0.02, momentum=0.9, backend_steps=5, weight_decay=0.04,
                         coeffs=train_gpt.NEWTON_SCHULZ_COEFFS[coeffs], row_norm=row_norm)
    calls = []
    orthogonalize = opt.orthogonalize
    opt.orthogonalize = lambda stack, steps, abc: (calls.append(tuple(stack.shape)), orthogonalize(stack, steps, abc))[1]
    for _ in range(3):
        grads = [torch.randn(s, generator=g) for s in shapes]
        for p, grad in zip(params, grads):
            p.grad = grad.clone()
        opt.step()
        with torch.no_grad():
            _reference_muon_step(reference, grads, buffers, 0.02, 0.9, 0.04, 5, train_gpt.NEWTON_SCHULZ_COEFFS[coeffs], row_norm)
    for p, r in zip(params, reference):
        assert torch.equal(p.detach(), r)  # bit for bit on CPU
    # one stack per shape and step: 4 shapes, not 7 matrices
    assert sorted(calls[:4]) == sorted([(3, 64, 64), (2, 96, 32), (1, 32, 96), (1, 16, 64)]) and len(calls) == 12


@pytest.mark.parametrize("coeffs", ["quintic", "polar"])
def test_newton_schulz_coefficients_orthogonalize(coeffs):
    """Five iterations bring every singular value of a random matrix near 1 (the quintic, by design,
    only to about 0.7-1.2; Polar Express closer)."""
    g = torch.randn(4, 128, 64, generator=torch.Generator().manual_seed(1))
    singular = torch.linalg.svdvals(train_gpt.newton_schulz(g, 5, train_gpt.NEWTON_SCHULZ_COEFFS[coeffs]).float())
    assert singular.min() > 0.6 and singular.max() < 1.25
    if coeffs == "polar":
        assert (singular - 1).abs().max() < 0.15




LAUNCH_AND_REPORT = """
import sys, torch
sys.path.insert(0, {tools!r})
import bench  # imports the repo's train_gpt, as bench.py compare's children do
program = bench.tg if {program!r} == "repo" else bench.load_program(bench.Path({program!r}))
seen = []
program.launch(lambda args, run, log_path: seen.append(torch._inductor.config.triton.mix_order_reduction), "r", "logs")
print("imported:", bench.tg is not None, "after_launch:", seen[0])
"""


@pytest.mark.parametrize("user_value, program, expected", [(None, "repo", False), ("1", "repo", True), ("0", "repo", False),
                                                           (None, "older", True)])
def test_inductor_mix_order_reduction_is_off_in_our_runs_only(user_value, program, expected, tmp_path):
    """launch() turns inductor's mix-order reduction off (a 5% slower step with it on one H100,
    logs/bench/ab_mix_order_off.txt) unless TORCHINDUCTOR_MIX_ORDER_REDUCTION=1. Importing the
    program changes nothing: an older train_gpt.py timed by bench.py (which imports ours first)
    keeps inductor's default, and the run header says which value a run used."""
    import os, subprocess, sys
    root = train_gpt.Path(train_gpt.__file__).parent
    if program == "older":  # the program without the switch, as 96342e1 was
        switch = re.search(r"\n    if hasattr\(torch._inductor.config.triton, \"mix_order_reduction\"\):\n .*\n", (root / "train_gpt.py").read_text())
        program = tmp_path / "train_gpt.py"
        program.write_text((root / "train_gpt.py").read_text().replace(switch[0], "\n"))
        assert "mix_order_reduction = " not in program.read_text()
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_MIX_ORDER_REDUCTION", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if user_value is not None:
        env["TORCHINDUCTOR_MIX_ORDER_REDUCTION"] = user_value
    code = LAUNCH_AND_REPORT.format(tools=str(root / "tools"), program=str(program))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == str(expected)


def test_the_program_runs_on_cpu_without_triton(tmp_path):
    """A CPU-only install need not have Triton: the program imports, builds the model and trains a
    step with its kernels' plain-torch formulas."""
    import subprocess, sys
    script = (f"import sys; sys.modules['triton'] = None; sys.path[:0] = [{str(REPO_ROOT)!r}, {str(REPO_ROOT / 'tests')!r}]\n"
              "import torch, train_gpt\n"
              "from conftest import tiny_args\n"
              "assert train_gpt.triton is None\n"
              "model = train_gpt.GPT(tiny_args())\n"
              "x = torch.randint(0, 1024, (2, 64))\n"
              "model(x, x).backward()\n"
              "print('ok', sum(p.grad.abs().sum().item() > 0 for p in model.parameters() if p.grad is not None))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok ")
