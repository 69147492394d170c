"""GPTQ (QUANT_METHOD=gptq): the quantizer against rounding, the Hessians it is calibrated with
(what they sum, from which data, on 1 and 2 processes) and the time kept for them inside the cap."""
import pytest
import torch
import torch.nn.functional as F

import train_gpt
from conftest import TINY_MODEL, cpu_run, log_line, randomize_, run_trainer, saved_by_1_and_2_processes, tiny_args

GPTQ_MODEL = dict(MODEL_DIM=256, NUM_HEADS=4, NUM_KV_HEADS=2, NUM_LAYERS=2)  # matrices above SMALL_TENSOR: int6, so GPTQ'd


def correlated_layer(rows=64, cols=128, n=4096, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols ** 0.5
    x = torch.randn(n, cols, generator=g) @ (torch.eye(cols) + 2 * mix)  # inputs with correlated features
    return torch.randn(rows, cols, generator=g) * 0.05, x


def output_error(w, q, scale, x):
    return ((w - q.float() * scale.float()[:, None]) @ x.T).square().sum().item()


@pytest.mark.parametrize("qmax", [train_gpt.INT6_MAX, train_gpt.INT5_MAX])
def test_gptq_keeps_the_layer_output_better_than_rounding(qmax):
    """On correlated inputs GPTQ's ||(W - Q) X|| is well below rounding's on the same grid, and below
    the rtn export's (rounding at its best clip percentile) with a clip of 3.5 standard deviations.
    (The clip matters: GPTQ corrects rounding errors, not clipping errors.)"""
    for seed in range(3):
        w, x = correlated_layer(seed=seed)
        q, scale = train_gpt.quantize_gptq(w, x.T @ x, qmax, 3.5)
        rounded = torch.clamp(torch.round(w / scale.float()[:, None]), -qmax, qmax)
        rtn = train_gpt.quantize_matrix("blocks.0.mlp.fc.weight", w, qmax, None, (3.5, 3.5))
        assert output_error(w, q, scale, x) < 0.7 * output_error(w, rounded, scale, x)
        assert output_error(w, q, scale, x) < 0.9 * output_error(w, *rtn, x)


def test_gptq_codes_are_on_the_grid_and_dead_inputs_cost_nothing():
    w, x = correlated_layer(rows=32, cols=64)
    x[:, 5] = 0  # an input that never fires: its column is stored as 0
    q, scale = train_gpt.quantize_gptq(w, x.T @ x, train_gpt.INT6_MAX, 12.0, block=16)
    assert q.dtype == torch.int8 and scale.dtype == torch.float16 and q.shape == w.shape
    assert int(q.abs().max()) <= train_gpt.INT6_MAX and (q[:, 5] == 0).all()
    torch.testing.assert_close(scale.float(), (12.0 * w.std(1) / train_gpt.INT6_MAX).half().float())
    # the block size only changes the order of the float sums, not the result beyond rounding noise
    q_one_block = train_gpt.quantize_gptq(w, x.T @ x, train_gpt.INT6_MAX, 12.0, block=64)[0]
    assert (q != q_one_block).float().mean() < 0.01


def test_hessians_sum_the_inputs_of_every_int6_matrix(tiny_data, tiny_tokenizer, monkeypatch):
    """Each matrix's Hessian is X^T X of exactly the input it multiplies: q, k and v share the
    attention's input, proj gets the attention output, fc the MLP's input, the MLP's proj its
    activation. Inputs are read with hooks on the blocks, independently of add_to_hessians."""
    args = tiny_args(**GPTQ_MODEL, DATA_PATH=tiny_data, TOKENIZER_PATH=tiny_tokenizer, VOCAB_SIZE=64, TRAIN_BATCH_TOKENS=1024,
                     GPTQ_CALIBRATION_BATCHES=2, QUANT_METHOD="gptq")
    torch.manual_seed(0)
    model = randomize_(train_gpt.GPT(args), std=0.05)
    seen = {}
    for i, block in enumerate(model.blocks):
        block.attn.register_forward_pre_hook(lambda m, inp, i=i: seen.setdefault(f"attn{i}", []).append(inp[0].reshape(-1, inp[0].size(-1))))
        block.attn.proj.register_forward_pre_hook(lambda m, inp, i=i: seen.setdefault(f"proj{i}", []).append(inp[0].reshape(-1, inp[0].size(-1))))
        block.mlp.register_forward_pre_hook(lambda m, inp, i=i: seen.setdefault(f"mlp{i}", []).append(inp[0].reshape(-1, inp[0].size(-1))))
    hessians = train_gpt.collect_hessians(model, args, cpu_run())
    assert sorted(hessians) == sorted(n for n, p in model.named_parameters() if train_gpt.int6_matrix(n, p))
    assert all(m.hessian is None for m in model.modules() if isinstance(m, train_gpt.CastedLinear))  # calibration is over
    for i, block in enumerate(model.blocks):
        x, y, m = (torch.cat(seen[k + str(i)]) for k in ("attn", "proj", "mlp"))
        h = F.leaky_relu(m @ block.mlp.fc.weight.T, 0.5).square()
        expected = {"attn.q": x, "attn.k": x, "attn.v": x, "attn.proj": y, "mlp.fc": m, "mlp.proj": h}
        for name, inputs in expected.items():
            if f"blocks.{i}.{name}.weight" in hessians:
                torch.testing.assert_close(hessians[f"blocks.{i}.{name}.weight"], inputs.T @ inputs, rtol=1e-4, atol=1e-3)
    assert x.size(0) == 2 * 1024 // 8  # GPTQ_CALIBRATION_BATCHES micro-batches of the training's shape


def test_calibration_reads_training_shards_only(tiny_data, tiny_tokenizer, monkeypatch):
    read = []
    original = train_gpt.read_shard
    monkeypatch.setattr(train_gpt, "read_shard", lambda path: read.append(path.name) or original(path))
    args = tiny_args(**GPTQ_MODEL, DATA_PATH=tiny_data, TOKENIZER_PATH=tiny_tokenizer, VOCAB_SIZE=64, TRAIN_BATCH_TOKENS=1024,
                     GPTQ_CALIBRATION_BATCHES=3)
    train_gpt.collect_hessians(train_gpt.GPT(args), args, cpu_run())
    assert read and all(name.startswith("fineweb_train_") for name in read)


def test_hessians_of_two_processes_equal_those_of_one(tmp_path, tiny_data, tiny_tokenizer):
    """Each rank calibrates on its own micro-batches and the sums are all-reduced: 2 gloo processes
    hold the Hessians of 1 process (the same token windows, split)."""
    body = ("    torch.manual_seed(0)\n"
            "    hessians = train_gpt.collect_hessians(randomize_(train_gpt.GPT(args), std=0.05), args, run)\n"
            "    if run.rank == 0:\n"
            "        torch.save(hessians, 'hessians.pt')")
    env = {**TINY_MODEL, **{k: str(v) for k, v in GPTQ_MODEL.items()}, **dict(DATA_PATH=str(tiny_data), TOKENIZER_PATH=str(tiny_tokenizer),
           VOCAB_SIZE="64", TRAIN_BATCH_TOKENS="1024", GPTQ_CALIBRATION_BATCHES="4")}
    found = saved_by_1_and_2_processes(body, env, tmp_path, "hessians.pt")
    assert sorted(found[0]) == sorted(found[1]) and len(found[0]) == 4  # the MLP matrices of 2 layers
    for name in found[0]:
        torch.testing.assert_close(found[1][name], found[0][name], rtol=1e-5, atol=1e-3)


def test_quantizing_across_two_ranks_writes_the_artifact_of_one(tmp_path):
    """quantize_across_ranks: 2 gloo processes quantize half the matrices each (int6 and int5) and
    share them; rank 0's artifact is byte for byte the one a single process writes, also when the
    cap forces int5 (taken from the shared results)."""
    body = ("    from pathlib import Path\n"
            "    torch.manual_seed(0)\n"
            "    model = randomize_(train_gpt.GPT(args), std=0.05)\n"
            "    state = model.state_dict()\n"
            "    g = torch.Generator().manual_seed(1)\n"
            "    hessians = {}\n"
            "    for n, t in state.items():\n"
            "        if train_gpt.int6_matrix(n, t):\n"
            "            x = torch.randn(512, t.size(1), generator=g) @ torch.randn(t.size(1), t.size(1), generator=g)\n"
            "            hessians[n] = x.T @ x\n"
            "    done = train_gpt.quantize_across_ranks(state, hessians, (7.0, 7.0), run) if run.world > 1 else {}\n"
            "    shared = len(done)\n"
            "    if run.rank == 0:\n"
            "        lines = []\n"
            "        int6 = train_gpt.save_artifact(model, Path('int6.ptz'), 0, lines.append, hessians, done=done)\n"
            "        train_gpt.SIZE_LIMIT_BYTES = int6 - 3000\n"
            "        train_gpt.save_artifact(model, Path('fitted.ptz'), 0, lines.append, hessians, done=done)\n"
            "        blobs = [torch.frombuffer(bytearray(open(f, 'rb').read()), dtype=torch.uint8) for f in ('int6.ptz', 'fitted.ptz')]\n"
            "        torch.save(dict(blobs=blobs, lines=lines, shared=shared), 'artifacts.pt')")
    env = {**TINY_MODEL, **{k: str(v) for k, v in GPTQ_MODEL.items()}}
    one, two = saved_by_1_and_2_processes(body, env, tmp_path, "artifacts.pt")
    assert one["shared"] == 0 and two["shared"] == 8  # 4 MLP matrices, each at int6 and int5
    assert any("int5_matrices:0 " in line for line in one["lines"]) and not any("int5_matrices:0 " in line for line in one["lines"][1:])
    for a, b in zip(one["blobs"], two["blobs"]):
        assert torch.equal(a, b)


def test_gptq_keeps_its_reserve_out_of_the_training_cap():
    gptq = tiny_args(QUANT_METHOD="gptq", MAX_WALLCLOCK_SECONDS=600, GPTQ_RESERVE_SECONDS=8)
    assert train_gpt.training_seconds(gptq) == 592
    assert train_gpt.training_seconds(tiny_args(QUANT_METHOD="rtn", MAX_WALLCLOCK_SECONDS=600, GPTQ_RESERVE_SECONDS=8)) == 600  # no reserve
    assert train_gpt.training_seconds(tiny_args(QUANT_METHOD="gptq", MAX_WALLCLOCK_SECONDS=0)) == 0  # no cap stays no cap
    # the warmdown ends at the reduced cap: at 296 s of 592 with 1 s steps and 300 warmdown steps, the LR is at 296/300
    assert train_gpt.lr_multiplier(tiny_args(QUANT_METHOD="gptq", MAX_WALLCLOCK_SECONDS=600, GPTQ_RESERVE_SECONDS=8,
                                             WARMDOWN_ITERS=300, ITERATIONS=10**6), 296, 296_000) == pytest.approx(296 / 300)
    with pytest.raises(train_gpt.UserError, match="GPTQ_RESERVE_SECONDS in"):
        tiny_args(QUANT_METHOD="gptq", MAX_WALLCLOCK_SECONDS=10, GPTQ_RESERVE_SECONDS=10)
    with pytest.raises(train_gpt.UserError, match="QUANT_METHOD=awq must be gptq or rtn"):
        tiny_args(QUANT_METHOD="awq")


def test_a_gptq_run_calibrates_and_exports_with_gptq(tiny_data_env, tmp_path):
    env = dict(tiny_data_env, **{k: str(v) for k, v in GPTQ_MODEL.items()}, QUANT_METHOD="gptq", GPTQ_CALIBRATION_BATCHES="2",
               ITERATIONS="2", TTT_ENABLED="0", NGRAM_ENABLED="0")
    result = run_trainer(env, tmp_path)
    assert result.returncode == 0, result.output[-3000:]
    assert "gptq_hessians: matrices:4 batches:2 " in result.log and " quant_method:gptq " in result.log
    pre, rt = log_line(result.log, "pre_quant"), log_line(result.log, "final_int6_roundtrip")
    assert abs(float(pre["val_bpb"]) - float(rt["val_bpb"])) < 0.01


def test_hessians_longer_than_the_reserve_are_reported(run_main, tiny_data_env):
    """With a cap, the Hessians must fit the time the loop left for them; if they do not, the log says
    so and names the setting to raise."""
    env = dict(tiny_data_env, **{k: str(v) for k, v in GPTQ_MODEL.items()}, GPTQ_CALIBRATION_BATCHES="2", ITERATIONS="1",
               MAX_WALLCLOCK_SECONDS="1000", GPTQ_RESERVE_SECONDS="0", TTT_ENABLED="0", NGRAM_ENABLED="0")
    result = run_main(env)
    assert result.returncode == 0, result.log[-2000:]
    assert "inside the cap, which the training loop left GPTQ_RESERVE_SECONDS=0.0 early)" in result.log
    assert "WARNING: the Hessians took " in result.log and "raise GPTQ_RESERVE_SECONDS" in result.log


def test_fitting_the_cap_drops_to_int5_where_the_layer_output_suffers_least(tmp_path, monkeypatch):
    """Over the cap, GPTQ's export stores at int5 first the matrices whose output error on their
    calibration inputs grows least per byte saved: here the one whose inputs are tiny (its Hessian
    scaled by 1e-6), though the MLP-first order of rounding would have taken another."""
    import io
    args = tiny_args(**GPTQ_MODEL)
    torch.manual_seed(0)
    model = randomize_(train_gpt.GPT(args), std=0.05)
    state = model.state_dict()
    matrices = [n for n in state if train_gpt.int6_matrix(n, state[n])]
    hessians = {n: torch.eye(state[n].size(1)) + 0.5 for n in matrices}
    cheap = "blocks.0.mlp.proj.weight"
    hessians[cheap] = hessians[cheap] * 1e-6
    order = train_gpt.int5_order(state, matrices, hessians, (7.0, 7.0), {})
    assert order[0] == cheap and train_gpt.int5_order(state, matrices, None, (7.0, 7.0), {})[0] != cheap
    all_int6 = train_gpt.save_artifact(model, tmp_path / "int6.ptz", 0, lambda m: None, hessians)
    monkeypatch.setattr(train_gpt, "SIZE_LIMIT_BYTES", all_int6 - 2000)  # one matrix at int5 is enough
    lines = []
    size = train_gpt.save_artifact(model, tmp_path / "fitted.ptz", 0, lines.append, hessians)
    assert size <= all_int6 - 2000 and any("int5_matrices:1 quant_method:gptq" in line for line in lines)
    blob = torch.load(io.BytesIO(train_gpt.decompress_artifact((tmp_path / "fitted.ptz").read_bytes())))
    assert [n for n in matrices if int(blob[n + ".q"].abs().max()) <= train_gpt.INT5_MAX] == [cheap]


def test_gptq_survives_hessians_that_float_error_leaves_indefinite():
    """A Hessian a little below positive definite (as float sums over many rows can leave one) gets
    more damping until it factors, and GPTQ still beats rounding on the same grid."""
    w, x = correlated_layer()
    h = x.T @ x
    eigenvalues, vectors = torch.linalg.eigh(h)
    indefinite = h - (eigenvalues[0] + 0.02 * eigenvalues.mean()) * torch.outer(vectors[:, 0], vectors[:, 0]) * 2
    assert torch.linalg.eigvalsh(indefinite)[0] < -0.01 * h.diagonal().mean()  # 1% damping alone does not fix it
    q, scale = train_gpt.quantize_gptq(w, indefinite, train_gpt.INT6_MAX, 3.5)
    rounded = torch.clamp(torch.round(w / scale.float()[:, None]), -train_gpt.INT6_MAX, train_gpt.INT6_MAX)
    assert output_error(w, q, scale, x) < output_error(w, rounded, scale, x)


def test_matrices_with_non_finite_hessians_are_rounded_and_reported(tmp_path, monkeypatch):
    """A matrix whose Hessian is not finite is rounded; over the cap the others drop to int5 first,
    as only they have a measure of what int5 costs."""
    args = tiny_args(**GPTQ_MODEL)
    torch.manual_seed(0)
    model = randomize_(train_gpt.GPT(args), std=0.05)
    state = model.state_dict()
    matrices = [n for n in state if train_gpt.int6_matrix(n, state[n])]
    hessians = {n: torch.eye(state[n].size(1)) for n in matrices}
    hessians[matrices[0]][3, 3] = float("nan")
    lines = []
    train_gpt.save_artifact(model, tmp_path / "a.ptz", 0, lines.append, hessians)
    assert any(line.startswith("WARNING: export: 1 Hessians are not finite") and matrices[0] in line for line in lines)
    loaded = train_gpt.GPT(args)
    train_gpt.load_artifact(tmp_path / "a.ptz", loaded)
    assert all(torch.isfinite(p).all() for p in loaded.parameters())
    usable, _ = train_gpt.finite_hessians(hessians)
    assert train_gpt.int5_order(state, matrices, usable, (7.0, 7.0), {})[-1] == matrices[0]
    monkeypatch.setattr(train_gpt, "SIZE_LIMIT_BYTES", (tmp_path / "a.ptz").stat().st_size - 2000)
    lines = []
    train_gpt.save_artifact(model, tmp_path / "b.ptz", 0, lines.append, hessians)
    exported = [line for line in lines if line.startswith("export: int6_matrices:")]
    assert len(exported) == 1 and " int5_matrices:0 " not in exported[0] and " quant_method:gptq " in exported[0]
    lines = []  # no usable Hessian at all: every matrix rounded, and the log says so
    train_gpt.save_artifact(model, tmp_path / "c.ptz", 0, lines.append, {n: h * float("inf") for n, h in hessians.items()})
    assert any(line.startswith("export: int6_matrices:") and " quant_method:rtn " in line for line in lines)
