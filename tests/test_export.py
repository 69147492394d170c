"""Export: int6 (attention/MLP matrices) / int8 (other large tensors, e.g. embeddings) / fp16 (small)
quantization, the lzma artifact, and the byte accounting of a real run."""
import io
import lzma

import pytest
import torch

import train_gpt
from conftest import log_line, randomize_, save_artifact, tiny_args

INT6, INT8 = train_gpt.INT6_MAX, train_gpt.INT8_MAX


def error_bound(w: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    """Per-element bound on |w - dequant(quant(w))| derived from quantize_rows: with s the stored fp16
    row scale, q = clamp(round(w/s), -qmax, qmax) and w_hat = q*s. Unclipped values are off by at
    most s/2 (round to nearest); clipped ones (|w| > qmax*s, from percentile clipping or from the
    fp16 rounding of clip/qmax) by |w| - qmax*s. A small float32 slack is added."""
    s = scale.float()[:, None]
    return torch.maximum(s / 2, w.abs() - qmax * s) + 1e-6 * w.abs() + 1e-12


def synthetic_state():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(96, 1024, generator=g) * 0.02
    q[0, 5] = 0.9  # a large outlier in one row
    fc = torch.randn(600, 128, generator=g) * 0.05
    fc[7] = 0.0    # an all-zero row (e.g. a zero-initialised projection)
    fc[8] = 1e-7   # a row too small for an fp16 scale
    return {
        "blocks.0.attn.q.weight": q,                                       # 98304 elements -> int6
        "blocks.0.mlp.fc.weight": fc,                                      # 76800 -> int6
        "tok_emb.weight": torch.randn(1024, 80, generator=g) * 0.005,     # 81920, not attn/mlp -> int8
        "skip_weights": torch.randn(256, 256, generator=g),               # exactly SMALL_TENSOR -> fp16
        "blocks.0.attn.q_gain": torch.full((8,), 1.5),                    # small -> fp16
        "counter": torch.arange(10),                                      # not floating point -> as is
    }


def test_quantize_state_formats():
    state = synthetic_state()
    out = train_gpt.quantize_state(state)
    for name, qmax in (("blocks.0.attn.q.weight", INT6), ("blocks.0.mlp.fc.weight", INT6), ("tok_emb.weight", INT8)):
        assert name not in out
        q, scale = out[name + ".q"], out[name + ".scale"]
        assert q.dtype == torch.int8 and q.shape == state[name].shape
        assert int(q.abs().max()) <= qmax
        assert scale.dtype == torch.float16 and scale.shape == (state[name].shape[0],)
        # clip value scale*qmax never exceeds the row's max (up to fp16 rounding of the scale)
        assert (scale.float() * qmax <= state[name].abs().amax(1) * (1 + 2 ** -10) + 1e-7).all()
    assert int(out["blocks.0.attn.q.weight.q"].abs().max()) == INT6  # the int6 grid is used fully
    for name in ("skip_weights", "blocks.0.attn.q_gain"):
        assert out[name].dtype == torch.float16 and torch.equal(out[name], state[name].half())
    assert torch.equal(out["counter"], state["counter"]) and out["counter"].dtype == torch.int64
    assert set(out) == {"blocks.0.attn.q.weight.q", "blocks.0.attn.q.weight.scale", "blocks.0.mlp.fc.weight.q",
                        "blocks.0.mlp.fc.weight.scale", "tok_emb.weight.q", "tok_emb.weight.scale",
                        "skip_weights", "blocks.0.attn.q_gain", "counter"}


def test_dequantized_tensors_are_within_the_per_row_error_bound():
    state = synthetic_state()
    out = train_gpt.quantize_state(state)
    back = train_gpt.dequantize_state(out, state)
    assert set(back) == set(state)
    for name, qmax in (("blocks.0.attn.q.weight", INT6), ("blocks.0.mlp.fc.weight", INT6), ("tok_emb.weight", INT8)):
        w, w_hat = state[name], back[name]
        assert w_hat.dtype == w.dtype and torch.isfinite(w_hat).all()
        err = (w - w_hat).abs()
        assert (err <= error_bound(w, out[name + ".scale"], qmax)).all(), name
        # finer: values inside the clip range are rounded to the nearest grid point (error <= s/2,
        # s <= row max / qmax up to fp16 rounding); values outside it land exactly on +-qmax*s
        scale = out[name + ".scale"].float()[:, None]
        inside = w.abs() <= qmax * scale
        assert (err[inside] <= (scale / 2).expand_as(w)[inside] * (1 + 1e-5)).all(), name
        assert torch.equal(w_hat[~inside], (torch.sign(w) * qmax * scale).expand_as(w)[~inside]), name
    # percentile clipping (chosen per tensor) cut the 0.9 outlier of row 0 of the int6 tensor
    q_scale = out["blocks.0.attn.q.weight.scale"].float()
    assert back["blocks.0.attn.q.weight"][0, 5] == INT6 * q_scale[0] < 0.9
    # the int8 embedding rows are clipped at the ~max quantile: error within one grid step of the row max
    emb, emb_hat = state["tok_emb.weight"], back["tok_emb.weight"]
    assert ((emb - emb_hat).abs().amax(1) <= emb.abs().amax(1) / INT8).all()
    assert torch.equal(back["blocks.0.mlp.fc.weight"][7], torch.zeros(128))  # zero row stays exactly zero
    assert (back["blocks.0.mlp.fc.weight"][8].abs() <= 1e-7).all()
    torch.testing.assert_close(back["skip_weights"], state["skip_weights"].half().float(), rtol=0, atol=0)
    assert torch.equal(back["counter"], state["counter"])


def test_int6_clip_search_beats_plain_max_scaling():
    """The per-tensor percentile search picks a clip whose reconstruction error is no worse than
    scaling each row by its max (the p=1.0 candidate), and on Gaussian rows strictly better."""
    w = torch.randn(128, 1024, generator=torch.Generator().manual_seed(1)) * 0.02
    out = train_gpt.quantize_state({"blocks.3.mlp.proj.weight": w})
    q, scale = out["blocks.3.mlp.proj.weight.q"], out["blocks.3.mlp.proj.weight.scale"]
    mse = (q.float() * scale.float()[:, None] - w).square().mean()
    s_max = (w.abs().amax(1) / INT6).half().float()[:, None]
    mse_max = (torch.clamp(torch.round(w / s_max), -INT6, INT6) * s_max - w).square().mean()
    assert mse < mse_max
    assert (scale.float() * INT6 < w.abs().amax(1) * 0.999).float().mean() > 0.5  # rows actually clipped


def _exportable_args():
    # MODEL_DIM=128 and MLP_MULT=5 give MLP matrices of 81920 > SMALL_TENSOR elements (int6) and
    # a 1024x128 embedding (int8); attention matrices of this size stay fp16.
    return tiny_args(MODEL_DIM=128, MLP_MULT=5)


def test_save_and_load_artifact_roundtrip(tmp_path):
    args = _exportable_args()
    torch.manual_seed(0)
    model = randomize_(train_gpt.GPT(args), std=0.05).eval()
    path = tmp_path / "model.int6.ptz"
    save_artifact(model, path)
    raw = path.read_bytes()
    assert raw.startswith(train_gpt.BROTLI_MAGIC)
    assert not path.with_name(path.name + ".tmp").exists()
    blob = torch.load(io.BytesIO(train_gpt.decompress_artifact(raw)), map_location="cpu")
    state = model.state_dict()
    quantized = {n for n in state if n + ".q" in blob}
    int6 = {f"blocks.{i}.mlp.{m}.weight" for i in range(2) for m in ("fc", "proj")}
    assert quantized == int6 | {"tok_emb.weight", "ve_embed.weight"}
    assert all(blob[n + ".q"].abs().max() <= INT6 for n in int6)
    assert all(n in blob and blob[n].dtype == torch.float16 for n in state if n not in quantized)
    assert len(raw) < 0.5 * sum(t.numel() * 4 for t in state.values())  # much smaller than fp32

    torch.manual_seed(123)
    loaded = train_gpt.GPT(args).eval()  # different init: every value must come from the artifact
    train_gpt.load_artifact(path, loaded)
    for name, w in state.items():
        w_hat = loaded.state_dict()[name]
        if name + ".q" in blob:
            qmax = INT6 if name in int6 else INT8
            assert ((w - w_hat).abs() <= error_bound(w, blob[name + ".scale"], qmax)).all(), name
        else:
            torch.testing.assert_close(w_hat, w.half().float(), rtol=0, atol=0, msg=name)
    idx = torch.randint(0, args.vocab_size, (2, 32))
    with torch.no_grad():
        a, b = model.head(model.hidden(idx)), loaded.head(loaded.hidden(idx))
    assert (a - b).square().mean().sqrt() < 0.1 * a.square().mean().sqrt()  # same function up to quantization noise


def test_int5_matrices_use_the_int5_grid():
    state = synthetic_state()
    out = train_gpt.quantize_state(state, frozenset({"blocks.0.mlp.fc.weight"}))
    assert int(out["blocks.0.mlp.fc.weight.q"].abs().max()) == train_gpt.INT5_MAX
    assert int(out["blocks.0.attn.q.weight.q"].abs().max()) == INT6
    back = train_gpt.dequantize_state(out, state)
    w = state["blocks.0.mlp.fc.weight"]
    assert ((w - back["blocks.0.mlp.fc.weight"]).abs() <= error_bound(w, out["blocks.0.mlp.fc.weight.scale"], train_gpt.INT5_MAX)).all()


def test_save_artifact_falls_back_to_int5_to_fit_the_cap(tmp_path, monkeypatch):
    model = randomize_(train_gpt.GPT(_exportable_args()), std=0.05)
    int6_path, fitted_path = tmp_path / "int6.ptz", tmp_path / "fitted.ptz"
    save_artifact(model, int6_path)
    int6_bytes, code_bytes = int6_path.stat().st_size, 1000
    monkeypatch.setattr(train_gpt, "SIZE_LIMIT_BYTES", int6_bytes + code_bytes - 4000)  # int6 misses by 4 kB
    logs = []
    returned = save_artifact(model, fitted_path, code_bytes, logs.append)
    size = fitted_path.stat().st_size
    assert returned == size and size + code_bytes <= train_gpt.SIZE_LIMIT_BYTES
    blob = torch.load(io.BytesIO(train_gpt.decompress_artifact(fitted_path.read_bytes())), map_location="cpu")
    int5 = {n[:-2] for n, t in blob.items() if n.endswith(".q") and int(t.abs().max()) <= train_gpt.INT5_MAX}
    assert int5 and all(".mlp." in n for n in int5)  # MLP matrices go first
    assert any("int5" in line for line in logs)
    loaded = train_gpt.GPT(_exportable_args())
    train_gpt.load_artifact(fitted_path, loaded)  # still a valid artifact of this configuration
    for name in int5:
        w = model.state_dict()[name]
        assert ((w - loaded.state_dict()[name]).abs() <= error_bound(w, blob[name + ".scale"], train_gpt.INT5_MAX)).all()


def test_load_artifact_errors(tmp_path):
    model = train_gpt.GPT(tiny_args())
    with pytest.raises(train_gpt.UserError, match="artifact not found at ARTIFACT_PATH="):
        train_gpt.load_artifact(tmp_path / "missing.ptz", model)
    garbage = tmp_path / "garbage.ptz"
    garbage.write_bytes(b"definitely not lzma")
    with pytest.raises(train_gpt.UserError, match="not an artifact of this model configuration"):
        train_gpt.load_artifact(garbage, model)
    bigger = tmp_path / "bigger.ptz"
    save_artifact(train_gpt.GPT(tiny_args(MODEL_DIM=128)), bigger)
    with pytest.raises(train_gpt.UserError, match="not an artifact of this model configuration"):
        train_gpt.load_artifact(bigger, model)
    smaller = tmp_path / "smaller.ptz"  # lacks the bigram tensors the model needs
    save_artifact(train_gpt.GPT(tiny_args(BIGRAM_VOCAB_SIZE=0)), smaller)
    with pytest.raises(train_gpt.UserError, match="not an artifact of this model configuration"):
        train_gpt.load_artifact(smaller, model)


def test_compressed_artifact_roundtrips_byte_for_byte_and_older_xz_artifacts_load(tmp_path):
    """compress_state: brotli blocks that give back torch.save's bytes exactly (several blocks: the
    tensors are larger than a block). An artifact of an older commit (.xz) still loads."""
    g = torch.Generator().manual_seed(0)
    quantized = {"a.q": torch.randint(-31, 32, (3000, 1000), generator=g, dtype=torch.int8), "b": torch.randn(700, 1000, generator=g).half()}
    raw = io.BytesIO()
    torch.save(quantized, raw)
    data = train_gpt.compress_state(quantized)
    assert int.from_bytes(data[4:8], "little") == -(-len(raw.getvalue()) // train_gpt.BLOCK_BYTES) >= 2
    assert train_gpt.decompress_artifact(data) == raw.getvalue()
    with pytest.raises(ValueError, match="truncated"):
        train_gpt.decompress_artifact(data[:-1])
    model = randomize_(train_gpt.GPT(tiny_args()))
    old = tmp_path / "old.ptz"
    old.write_bytes(lzma.compress(train_gpt.decompress_artifact(train_gpt.compress_state(train_gpt.quantize_state(model.state_dict())))))
    loaded = train_gpt.GPT(tiny_args())
    train_gpt.load_artifact(old, loaded)
    torch.testing.assert_close(loaded.state_dict()["tok_emb.weight"], model.state_dict()["tok_emb.weight"], atol=0.01, rtol=0)


def test_a_run_without_brotli_stops_before_training(run_main, capsys, tiny_data_env, monkeypatch):
    monkeypatch.setattr(train_gpt, "brotli", None)
    result = run_main(tiny_data_env)
    assert result.returncode == 2 and "ERROR: the export compresses with brotli, which is not installed: pip install brotli" in result.log
    assert "step:" not in result.log


def test_load_artifact_rejects_artifact_with_extra_tensors(tmp_path):
    path = tmp_path / "full.ptz"
    save_artifact(randomize_(train_gpt.GPT(tiny_args())), path)
    reduced = train_gpt.GPT(tiny_args(BIGRAM_VOCAB_SIZE=0, VRL_ENABLED=0, VE_ENABLED=0))
    with pytest.raises(train_gpt.UserError, match="not an artifact of this model configuration"):
        train_gpt.load_artifact(path, reduced)


def test_run_reports_total_bytes_as_artifact_plus_code(e2e_run):
    result, artifact = e2e_run.result, e2e_run.artifact
    assert result.returncode == 0, result.output[-3000:]
    line = log_line(result.log, "artifact")
    assert line is not None, result.log[-3000:]
    code_bytes = e2e_run.code.counted_bytes  # the packed train_gpt.py's size when the run started
    assert int(line["compressed_bytes"]) == artifact.stat().st_size
    assert int(line["code_bytes"]) == code_bytes
    assert int(line["total_bytes"]) == artifact.stat().st_size + code_bytes
    assert int(log_line(result.log, "total")["bytes"]) == int(line["total_bytes"])


def test_run_artifact_is_the_quantized_final_model(e2e_run):
    """The saved artifact dequantizes to the raw weights saved beside it (the EMA weights) within the export bounds."""
    env, result = e2e_run.env, e2e_run.result
    assert result.returncode == 0, result.output[-3000:]
    final_state = torch.load(e2e_run.raw_weights, map_location="cpu")
    blob = torch.load(io.BytesIO(train_gpt.decompress_artifact(e2e_run.artifact.read_bytes())), map_location="cpu")
    args = train_gpt.Hyperparameters(environ={k: v for k, v in env.items() if k in train_gpt.SETTINGS})
    assert set(final_state) == set(train_gpt.GPT(args).state_dict())
    back = train_gpt.dequantize_state(blob, final_state)
    for name, w in final_state.items():
        if name + ".q" in blob:
            qmax = INT6 if (".attn." in name or ".mlp." in name) else INT8
            assert ((w - back[name]).abs() <= error_bound(w, blob[name + ".scale"], qmax)).all(), name
        else:
            assert torch.equal(back[name], w.half().to(w.dtype)), name


# ----------------------------------------------------------------------------- late QAT (training sees the int6 grid)

def _effective_weight(layer: train_gpt.CastedLinear) -> torch.Tensor:
    """The weight a CastedLinear actually applies in forward (identity input -> W^T)."""
    return layer(torch.eye(layer.in_features)).T.detach()


def test_set_qat_targets_int6_layers_in_training_only():
    args = _exportable_args()
    model = randomize_(train_gpt.GPT(args), std=0.05)
    train_gpt.set_qat(model, True, 0.5)
    flagged = {n for n, m in model.named_modules() if isinstance(m, train_gpt.CastedLinear) and m.qat}
    assert flagged == {f"blocks.{i}.mlp.{m}" for i in range(2) for m in ("fc", "proj")}  # > SMALL_TENSOR elements
    fc = model.blocks[0].mlp.fc
    assert fc.qat_temperature.item() == 0.5
    fc.eval()
    assert torch.equal(_effective_weight(fc), fc.weight.detach())  # no fake quantization at eval
    fc.train()
    w_eff = _effective_weight(fc)
    assert not torch.equal(w_eff, fc.weight.detach())
    assert (w_eff.abs().amax(1) <= fc.weight.detach().abs().amax(1) * (1 + 1e-6)).all()  # stays inside the clip range
    x = torch.randn(4, fc.in_features)
    fc(x).square().sum().backward()
    assert torch.isfinite(fc.weight.grad).all() and fc.weight.grad.abs().sum() > 0  # gradients pass through
    train_gpt.set_qat(model, False)
    assert not any(m.qat for m in model.modules() if isinstance(m, train_gpt.CastedLinear))


@pytest.mark.parametrize("temperature", [0.05, 0.01])
def test_late_qat_weights_approach_the_int6_grid_at_low_temperature(temperature):
    torch.manual_seed(0)
    layer = train_gpt.CastedLinear(128, 600)  # 76800 weights: int6-eligible
    layer.qat, layer.qat_temperature = True, torch.tensor(temperature)
    layer.train()
    w = layer.weight.detach()
    step = w.abs().amax(1, keepdim=True) / INT6  # QAT's per-row int6 step
    on_grid = torch.round(w / step) * step
    distance = ((_effective_weight(layer) - on_grid).abs() / step).mean()
    assert distance < 0.1  # in grid steps; 0 would be exact rounding
