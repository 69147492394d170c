"""Whole runs: a tiny end-to-end training on the sample data, EVAL_ONLY on its artifact, and a
2-process gloo run against a 1-process run. Plus the pieces that make those runs agree: the token
stream split over ranks and the LR schedule."""
import copy
import math
import re
import time

import numpy as np
import pytest
import torch

import train_gpt
from conftest import (LN2, SAMPLE_DATA, TINY_ENV, TINY_MODEL, cpu_run, error_lines, log_line, randomize_, read_shard_tokens, rel_diff,
                      run_trainer, saved_by_1_and_2_processes, tiny_args, train_losses, write_shard)

FINAL_KINDS = ("pre_quant", "artifact", "final_int6_roundtrip", "final_int6_sliding_window", "total", "peak_memory")


# ----------------------------------------------------------------------------- end to end on the sample data

def test_tiny_run_on_sample_data_completes(e2e_run):
    result = e2e_run.result
    assert result.returncode == 0, result.output[-4000:]
    assert error_lines(result.log) == []
    for kind in FINAL_KINDS:
        assert log_line(result.log, kind) is not None, f"missing {kind} line in\n{result.log[-3000:]}"
    assert log_line(result.log, "final_int6_sliding_window")["stride"] == "32"
    assert e2e_run.artifact.is_file() and e2e_run.raw_weights.is_file()
    assert f"artifact:{e2e_run.artifact.name} " in result.log and f"raw_weights:{e2e_run.raw_weights.name} " in result.log
    # every log line also went to stdout
    assert all(line in result.output for line in result.log.splitlines()[-10:])

    losses = train_losses(result.log)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(v) for v in losses.values())
    assert abs(losses[1] - math.log(1024)) < 0.1  # starts near uniform over the vocabulary
    assert min(losses[5], losses[6]) < losses[1] - 0.5  # and learns

    pre, rt = log_line(result.log, "pre_quant"), log_line(result.log, "final_int6_roundtrip")
    assert rel_diff(float(pre["val_loss"]), float(rt["val_loss"])) < 1e-3  # quantization costs little here


def test_run_bpb_uses_the_byte_count_of_the_val_targets(e2e_run):
    """val_bpb = val_loss * targets / (bytes * ln 2), with bytes counted independently from the shard."""
    import sentencepiece as spm
    result = e2e_run.result
    assert result.returncode == 0, result.output[-4000:]
    n = int(TINY_ENV["VAL_MAX_TOKENS"])
    usable = (n - 1) // 64 * 64
    assert f"val_tokens:{usable} " in result.log
    tokens = torch.from_numpy(read_shard_tokens(SAMPLE_DATA / "fineweb_val_000000.bin")[:usable + 1].astype(np.int64))
    sp = spm.SentencePieceProcessor(model_file=e2e_run.env["TOKENIZER_PATH"])
    n_bytes = int(train_gpt.target_bytes(tokens[:-1], tokens[1:], train_gpt.byte_tables(sp)).sum())
    for kind in ("pre_quant", "final_int6_roundtrip", "final_int6_sliding_window"):
        line = log_line(result.log, kind)
        expected_bpb = float(line["val_loss"]) * usable / (n_bytes * LN2)
        assert float(line["val_bpb"]) == pytest.approx(expected_bpb, rel=1e-6), kind


def test_eval_only_reproduces_roundtrip_score(e2e_run):
    trained = e2e_run.result
    assert trained.returncode == 0, trained.output[-4000:]
    again = run_trainer(dict(e2e_run.env, EVAL_ONLY="1", RUN_ID="eval_only", ARTIFACT_PATH=e2e_run.artifact.name), e2e_run.cwd)
    assert again.returncode == 0, again.output[-4000:]
    assert f"eval_only: loading {e2e_run.artifact.name}" in again.log
    assert train_losses(again.log) == {} and "training_done" not in again.log
    for kind in ("final_int6_roundtrip", "final_int6_sliding_window"):
        assert log_line(again.log, kind) == log_line(trained.log, kind), kind
    # the same artifact bytes are counted (code bytes are those of train_gpt.py's packed form at each start)
    artifact_bytes = [int(log_line(r.log, "total")["bytes"]) - int(re.search(r"^run_id:\S+ .* code_bytes:(\d+) ", r.log, re.M)[1])
                      for r in (trained, again)]
    assert artifact_bytes[0] == artifact_bytes[1] == e2e_run.artifact.stat().st_size


# ----------------------------------------------------------------------------- 1 process vs 2 and 4 processes (gloo)

@pytest.fixture(scope="module")
def world_runs(tmp_path_factory, tiny_data, tiny_tokenizer):
    """The same tiny config on self-made data with 1 process (8 micro-steps of accumulation), 2 gloo
    processes (4 each) and 4 (2 each). Late QAT, a periodic validation and the modern recipe's parts
    are switched on so that they are compared too.

    The train shard alternates, micro-batch by micro-batch, between text and uniformly random
    tokens. With 2 or 4 processes the even ranks read text and the odd ones noise, so any mix-up
    in how ranks split or combine the batch shows up in the losses."""
    data = tmp_path_factory.mktemp("world_data")
    (data / "fineweb_val_000000.bin").write_bytes((tiny_data / "fineweb_val_000000.bin").read_bytes())
    span = int(TINY_ENV["TRAIN_BATCH_TOKENS"]) // 8 + 1  # tokens one micro-batch consumes
    text = read_shard_tokens(tiny_data / "fineweb_train_000000.bin")
    assert len(text) >= 64 * span
    noise = np.random.default_rng(0).integers(4, 64, size=32 * span)
    chunks = [text[k * span:(k + 1) * span] if k % 2 == 0 else noise[k // 2 * span:(k // 2 + 1) * span] for k in range(64)]
    write_shard(data / "fineweb_train_000000.bin", np.concatenate(chunks))
    env = dict(TINY_ENV, DATA_PATH=str(data), TOKENIZER_PATH=str(tiny_tokenizer), VOCAB_SIZE="64",
               LATE_QAT_THRESHOLD="0.6", VAL_LOSS_EVERY="3", RUN_ID="world",
               # the modern recipe's parts (layer 1 looped from step 3 on) run on every process count too
               LOOP_LAYERS="1", LOOP_START_FRAC="0.5", PARALLEL_RESIDUAL_FROM="1", SKIP_GATES="1", MUON_ROW_NORM="1",
               MUON_NS_COEFFS="polar")
    return {n: run_trainer(env, tmp_path_factory.mktemp(f"world{n}"), nproc=n) for n in (1, 2, 4)}


def test_multi_process_runs_complete(world_runs):
    for r in world_runs.values():
        assert r.returncode == 0, r.output[-4000:]
        assert error_lines(r.log) == []
        assert "late_qat: enabled at step:5 lr_mul:0.500" in r.log
        assert "loop: on at step:3 (50% of the run): layers 1 run twice, 3 layers deep" in r.log
        assert re.search(r"^loop: step_avg before:\S+ms after:\S+ms", r.log, re.M)
        # the self-made tokenizer is not the official one: a warning, and the run goes on
        assert "not the official sp1024 model (sha256 differs)" in r.log
        assert re.search(r"^step:3 val_loss:\S+ val_bpb:\S+$", r.log, re.M)
    for n, accum in ((1, 8), (2, 4), (4, 2)):
        assert f"world_size:{n} grad_accum:{accum} micro_batch_seqs:8" in world_runs[n].log
        assert world_runs[n].log.count("final_int6_roundtrip ") == 1  # only rank 0 writes the log


@pytest.mark.parametrize("world", [2, 4])
def test_multi_process_run_matches_one_process_validation(world_runs, world):
    one, two = world_runs[1], world_runs[world]
    assert one.returncode == 0 and two.returncode == 0, (one.output[-2000:], two.output[-2000:])
    periodic = [float(re.search(r"^step:3 val_loss:(\S+)", r.log, re.M)[1]) for r in (one, two)]
    assert rel_diff(*periodic) < 1e-4
    for kind in ("pre_quant", "final_int6_roundtrip", "final_int6_sliding_window"):
        a, b = log_line(one.log, kind), log_line(two.log, kind)
        assert rel_diff(float(a["val_loss"]), float(b["val_loss"])) < 1e-4, kind
        assert rel_diff(float(a["val_bpb"]), float(b["val_bpb"])) < 1e-4, kind


@pytest.mark.parametrize("world", [2, 4])
def test_multi_process_run_logs_same_train_loss(world_runs, world):
    one, two = world_runs[1], world_runs[world]
    assert one.returncode == 0 and two.returncode == 0
    a, b = train_losses(one.log), train_losses(two.log)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in a:
        assert rel_diff(a[step], b[step]) < 1e-4, (step, a[step], b[step])


def test_ranks_average_their_gradients(tmp_path, tiny_data, tiny_tokenizer):
    """The gradients a step hands the optimizers are the same on 1 process and on 2 (gloo): the mean
    over ranks of each rank's sum over its micro-steps. Losses cannot show this: Muon and AdamW barely
    change when every gradient is scaled, so a sum instead of a mean would train almost the same."""
    body = ("    torch.manual_seed(0)\n"
            "    model = randomize_(train_gpt.GPT(args))\n"
            "    train_gpt.train(args, model, run)\n"
            "    if run.rank == 0:\n"
            "        torch.save([p.grad for p in model.parameters()], 'grads.pt')")
    env = {**TINY_MODEL, **dict(DATA_PATH=str(tiny_data), TOKENIZER_PATH=str(tiny_tokenizer), VOCAB_SIZE="64",
           TRAIN_BATCH_TOKENS="1024", ITERATIONS="1", WARMUP_STEPS="0", WARMDOWN_ITERS="0", MAX_WALLCLOCK_SECONDS="0",
           COMPLEMENT_ALPHA="0", GRAD_CLIP_NORM="0")}
    grads = saved_by_1_and_2_processes(body, env, tmp_path, "grads.pt")
    assert len(grads[0]) == len(grads[1]) > 10
    for one, two in zip(*grads):
        assert one.abs().sum() > 0
        torch.testing.assert_close(two, one, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------- the token stream

def test_train_stream_wraps_over_shards(tmp_path):
    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(0, 10))
    write_shard(tmp_path / "fineweb_train_000001.bin", np.arange(100, 105))
    stream = train_gpt.TrainStream(train_gpt.find_shards(str(tmp_path), "train"))
    assert stream.take(7).tolist() == list(range(7))
    assert stream.take(6).tolist() == [7, 8, 9, 100, 101, 102]
    assert stream.take(6).tolist() == [103, 104, 0, 1, 2, 3]  # back to the first shard


@pytest.mark.parametrize("world", [2, 4, 8])
def test_ranks_together_see_the_single_process_batches(tmp_path, world):
    """Over one optimizer step, the micro-batches of all ranks are exactly those of 1 process."""
    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(5000) % 60000)
    files = train_gpt.find_shards(str(tmp_path), "train")
    seq_len, batch_tokens = 16, 1024
    cpu = torch.device("cpu")

    def step_batches(world):
        accum = max(1, 8 // world)
        micro = batch_tokens // (world * accum)
        streams = [train_gpt.TrainStream(files) for _ in range(world)]  # every rank reads the same stream
        out = []
        for _ in range(accum):
            for rank in range(world):
                x, y = train_gpt.next_batch(streams[rank], micro, seq_len, rank, world, cpu)
                assert x.shape == (micro // seq_len, seq_len)
                assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
                out.append((x, y))
        return out

    single, multi = step_batches(1), step_batches(world)
    assert len(single) == len(multi) == 8
    for (x1, y1), (x2, y2) in zip(single, multi):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


# ----------------------------------------------------------------------------- LR schedule

def test_lr_multiplier_step_warmdown():
    args = tiny_args(ITERATIONS=10, WARMDOWN_ITERS=4, MAX_WALLCLOCK_SECONDS=0)
    got = [train_gpt.lr_multiplier(args, step, elapsed_ms=1000.0 * step) for step in range(10)]
    assert got == pytest.approx([1, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25])
    assert train_gpt.lr_multiplier(tiny_args(ITERATIONS=10, WARMDOWN_ITERS=0), 9, 1.0) == 1.0


def test_lr_multiplier_wallclock_warmdown():
    # 10 s cap (no GPTQ reserve), 4 warmdown steps; after 10 steps in 8 s (0.8 s/step) 2 s remain = 2.5 steps -> 0.625
    args = tiny_args(ITERATIONS=1000, WARMDOWN_ITERS=4, MAX_WALLCLOCK_SECONDS=10, QUANT_METHOD="rtn")
    assert train_gpt.lr_multiplier(args, 10, 8000.0) == pytest.approx(0.625)
    assert train_gpt.lr_multiplier(args, 5, 1000.0) == 1.0
    assert train_gpt.lr_multiplier(args, 20, 12000.0) == 0.0  # past the cap


def test_lr_multiplier_warmdown_fraction_to_a_floor():
    # by steps: warmdown over the last half of 10 steps, towards 0, never below 0.1
    args = tiny_args(ITERATIONS=10, WARMDOWN_FRAC=0.5, MIN_LR_FRAC=0.1, MAX_WALLCLOCK_SECONDS=0)
    got = [train_gpt.lr_multiplier(args, step, elapsed_ms=0.0) for step in range(11)]
    assert got == pytest.approx([1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0.1])
    # by time: 10 s cap, 7.5 s spent -> halfway through the warmdown of the last half
    args = tiny_args(ITERATIONS=1000, WARMDOWN_FRAC=0.5, MIN_LR_FRAC=0.1, MAX_WALLCLOCK_SECONDS=10, QUANT_METHOD="rtn")
    assert train_gpt.lr_multiplier(args, 3, 7500.0) == pytest.approx(0.5)
    assert train_gpt.lr_multiplier(args, 3, 20000.0) == pytest.approx(0.1)  # past the cap: the floor
    # the floor applies to #803's warmdown too
    assert train_gpt.lr_multiplier(tiny_args(ITERATIONS=10, WARMDOWN_ITERS=4, MIN_LR_FRAC=0.3, MAX_WALLCLOCK_SECONDS=0), 9, 0.0) == pytest.approx(0.3)


def test_run_fraction_takes_steps_or_time_whichever_is_further():
    args = tiny_args(ITERATIONS=100, MAX_WALLCLOCK_SECONDS=10, QUANT_METHOD="rtn")
    assert train_gpt.run_fraction(args, 10, 5000.0) == pytest.approx(0.5)
    assert train_gpt.run_fraction(args, 80, 5000.0) == pytest.approx(0.8)
    assert train_gpt.run_fraction(tiny_args(ITERATIONS=100, MAX_WALLCLOCK_SECONDS=0), 25, 1e9) == pytest.approx(0.25)


def test_step_lines_time_each_step_to_its_end(tiny_data, tiny_tokenizer, monkeypatch):
    """The host waits for the GPU to finish a step where it reads the step's status (the 3-element
    tensor). Each step line's elapsed is taken after that read, so step_avg covers all of every step,
    the last one's included. Here each status read takes 0.3 s."""
    read = torch.Tensor.tolist

    def slow_status_read(t):
        if t.numel() == 3:
            time.sleep(0.3)
        return read(t)

    monkeypatch.setattr(torch.Tensor, "tolist", slow_status_read)
    args = tiny_args(DATA_PATH=tiny_data, TOKENIZER_PATH=tiny_tokenizer, VOCAB_SIZE=64, TRAIN_BATCH_TOKENS=1024,
                     ITERATIONS=2, WARMUP_STEPS=0, WARMDOWN_ITERS=0, MAX_WALLCLOCK_SECONDS=0, TRAIN_LOG_EVERY=1)
    log = []
    assert train_gpt.train(args, train_gpt.GPT(args), cpu_run(log.append)) == 2
    step_avg = {int(k): float(v) for k, v in re.findall(r"^step:(\d+)/2 .* step_avg:([\d.]+)ms", "\n".join(log), re.M)}
    assert sorted(step_avg) == [1, 2] and step_avg[2] >= 300.0, step_avg


def test_compile_warmup_is_skipped_where_nothing_compiles(tiny_data, tiny_tokenizer):
    """On CPU nothing is compiled: WARMUP_STEPS runs no step and reports nothing, and the run trains
    exactly as without it."""
    states, logs = [], []
    for warmup in (0, 2):
        args = tiny_args(DATA_PATH=tiny_data, TOKENIZER_PATH=tiny_tokenizer, VOCAB_SIZE=64, TRAIN_BATCH_TOKENS=1024,
                         ITERATIONS=3, WARMUP_STEPS=warmup, WARMDOWN_ITERS=2, MAX_WALLCLOCK_SECONDS=0)
        torch.manual_seed(0)
        model = train_gpt.GPT(args)
        log = []
        assert train_gpt.train(args, model, cpu_run(log.append)) == 3
        states.append(model.state_dict())
        logs.append(log)
    assert not any("compile_warmup" in line for line in logs[1])
    assert train_losses("\n".join(logs[0])) == train_losses("\n".join(logs[1]))
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name


def test_compile_warmup_steps_leave_no_trace(tiny_data, tiny_tokenizer):
    """The warm-up's steps (real optimizer steps, with QAT on) run inside state_restored(): model
    weights and both optimizers' state (momentum buffers, Adam moments, step counts) are bit for bit
    as before, so the run then trains as if they never happened."""
    args = tiny_args(DATA_PATH=tiny_data, TOKENIZER_PATH=tiny_tokenizer, VOCAB_SIZE=64)
    torch.manual_seed(0)
    model = randomize_(train_gpt.GPT(args))
    optimizers = train_gpt.build_optimizers(model, args)
    x = torch.randint(0, 64, (2, args.train_seq_len))

    def step():
        model(x, x.roll(-1, 1)).backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
    step()  # optimizer state exists before the warm-up, as it would after a restored warm-up
    before = copy.deepcopy(model.state_dict()), [copy.deepcopy(o.state_dict()) for o in optimizers]
    with train_gpt.state_restored(model, optimizers):
        train_gpt.set_qat(model, True)
        step()
        step()
        train_gpt.set_qat(model, False)
        assert not torch.equal(model.state_dict()["blocks.0.mlp.fc.weight"], before[0]["blocks.0.mlp.fc.weight"])
    for name, value in before[0].items():
        assert torch.equal(model.state_dict()[name], value), name
    for opt, saved in zip(optimizers, before[1]):
        now = opt.state_dict()
        assert now["param_groups"] == saved["param_groups"]
        for key, state in saved["state"].items():
            for field, value in state.items():
                assert torch.equal(torch.as_tensor(now["state"][key][field]), torch.as_tensor(value)), (key, field)


def test_gradients_are_one_buffer_summed_over_micro_steps(tiny_data, tiny_tokenizer):
    """After a step every parameter's .grad is a view of one buffer, holding the sum over the 8
    micro-steps of d(loss / 8): bit for bit what autograd's own accumulation (.backward()) gives
    (no clipping, which scales them in place), the compile warm-up's step not among them."""
    args = tiny_args(DATA_PATH=tiny_data, TOKENIZER_PATH=tiny_tokenizer, VOCAB_SIZE=64, TRAIN_BATCH_TOKENS=1024,
                     ITERATIONS=1, WARMUP_STEPS=1, WARMDOWN_ITERS=0, MAX_WALLCLOCK_SECONDS=0, COMPLEMENT_ALPHA=0,
                     GRAD_CLIP_NORM=0)
    torch.manual_seed(0)
    model, reference = randomize_(train_gpt.GPT(args)), train_gpt.GPT(args)  # no zero-initialized path: every gradient != 0
    reference.load_state_dict(model.state_dict())
    assert train_gpt.train(args, model, cpu_run()) == 1
    stream = train_gpt.TrainStream(train_gpt.find_shards(str(tiny_data), "train"))
    for _ in range(8):
        x, y = train_gpt.next_batch(stream, 128, args.train_seq_len, 0, 1, torch.device("cpu"))
        (reference(x, y) / 8).backward()
    grads = [p.grad for p in model.parameters()]
    assert len({g.untyped_storage().data_ptr() for g in grads}) == 1
    for (name, p), g in zip(reference.named_parameters(), grads):
        assert p.grad.abs().sum() > 0 and torch.equal(p.grad, g), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs exist only on CUDA")
def test_cuda_training_replays_graphs_and_follows_the_cpu_run(tiny_data, tiny_tokenizer):
    """On CUDA the compiled forward and backward replay as CUDA graphs, 8 micro-steps a step: each
    replay overwrites the last one's outputs, so gradients must be summed outside them. The losses of
    3 steps (bf16 autocast) follow the same run on CPU (fp32), and inductor skipped no graph."""
    from torch._dynamo.utils import counters
    counters.clear()
    losses = {}
    for device in ("cpu", "cuda"):
        args = tiny_args(DATA_PATH=tiny_data, TOKENIZER_PATH=tiny_tokenizer, VOCAB_SIZE=64, TRAIN_BATCH_TOKENS=1024,
                         ITERATIONS=3, WARMUP_STEPS=2, WARMDOWN_ITERS=2, MAX_WALLCLOCK_SECONDS=0, TRAIN_LOG_EVERY=1)
        torch.manual_seed(0)
        model = train_gpt.GPT(args).to(device)
        log = []
        assert train_gpt.train(args, model, train_gpt.Run(torch.device(device), 0, 1, log.append)) == 3
        assert any(line.startswith("world_size:1 grad_accum:8 ") for line in log)
        losses[device] = train_losses("\n".join(log))
    assert sorted(losses["cuda"]) == [1, 2, 3]
    for step, loss in losses["cpu"].items():
        assert losses["cuda"][step] == pytest.approx(loss, rel=2e-2), step
    assert counters["inductor"]["cudagraph_skips"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="waiting for a GPU happens only on CUDA")
def test_cuda_training_waits_for_the_gpu_only_at_the_status_reads(tiny_data, tiny_tokenizer):
    """Nothing in a step waits for the GPU but the status read (one per step, for the log and the
    stop flags): CUDA's sync debug mode warns at every wait, and after the compile warm-up 3 more steps
    add exactly 3 waits. A hidden wait (.item(), torch.tensor(..., device=)) leaves the GPU idle while
    the host catches up."""
    import warnings
    waits = {}
    for iterations in (2, 5):
        args = tiny_args(DATA_PATH=tiny_data, TOKENIZER_PATH=tiny_tokenizer, VOCAB_SIZE=64, TRAIN_BATCH_TOKENS=1024,
                         ITERATIONS=iterations, WARMUP_STEPS=2, WARMDOWN_ITERS=0, MAX_WALLCLOCK_SECONDS=0)
        torch.manual_seed(0)
        model = train_gpt.GPT(args).cuda()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warmed_up = []
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train_gpt.train(args, model, train_gpt.Run(torch.device("cuda"), 0, 1,
                                lambda msg: warmed_up.append(len(caught)) if msg.startswith("compile_warmup done") else None))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        waits[iterations] = sum("synchronizing CUDA operation" in str(w.message) for w in caught[warmed_up[0]:])
    assert waits[5] - waits[2] == 3, waits


# ----------------------------------------------------------------------------- the CPU quick start

def test_smoke_preset_runs_from_any_folder_on_the_shipped_sample(tmp_path):
    """SMOKE=1 needs nothing but the repository: its data and tokenizer default to data/sample
    (found from the program's own folder, not the working directory), it reports progress from the
    first step, runs no compile warm-up on CPU and has no wallclock cap. Shortened to 4 steps here."""
    result = run_trainer(dict(SMOKE="1", ITERATIONS="4", RUN_ID="smoke"), tmp_path / "elsewhere")
    assert result.returncode == 0, result.output[-3000:]
    log = result.log
    assert "preset:smoke " in log and f"hyperparameter DATA_PATH={SAMPLE_DATA}" in log
    assert "hyperparameter GRAD_ACCUM_STEPS=1" in log and "hyperparameter MAX_WALLCLOCK_SECONDS=0.0" in log
    assert sorted(train_losses(log)) == [1, 2, 3, 4] and "compile_warmup" not in log
    assert "WARNING" not in log  # the shipped tokenizer is the official one
    assert log_line(log, "ngram_audit") is not None and log_line(log, "final_ngram_ttt") is not None
    # RECIPE=modern's TTT_MODE=lora, with SMOKE's rows and phase, so the mixer and the phase do work
    lora = re.search(r"^eval:ngram_ttt ttt_mode:lora documents:39 .* rows:8 .* phase_documents:4 ", log, re.M)
    assert lora is not None, [line for line in log.splitlines() if line.startswith("eval:ngram_ttt")]
    assert float(re.search(r"^gains_bpb .*ngram_gain:(\S+)", log, re.M)[1]) > 0
    assert (tmp_path / "elsewhere" / "final_model_smoke.int6.ptz").is_file()


def test_smoke_preset_yields_to_explicit_settings():
    args = train_gpt.Hyperparameters(environ={"SMOKE": "1", "MODEL_DIM": "96", "NUM_HEADS": "6", "NUM_KV_HEADS": "3"})
    assert (args.model_dim, args.num_layers, args.data_path) == (96, 4, str(SAMPLE_DATA))
    assert train_gpt.Hyperparameters(environ={}).data_path == train_gpt.SETTINGS["DATA_PATH"]
