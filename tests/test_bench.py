"""tools/bench.py on CPU: `train` with 1 process and with 2 gloo processes, `eval` on the artifact of
a tiny train_gpt.py run. The table's numbers are checked against the log lines they come from and
against an independent FLOP count; the eval scores against those of the training run itself."""
import hashlib
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO_ROOT, TINY_ENV, _clean_environ, log_line, run_trainer, tiny_args

BENCH = REPO_ROOT / "tools" / "bench.py"
sys.path.insert(0, str(BENCH.parent))
import bench  # noqa: E402


def packed_sha256(source: bytes) -> str:
    """What a run of `source` logs as code_sha256: the sha256 of its packed form."""
    return hashlib.sha256(bench.tg.pack_source(source)).hexdigest()


def run_bench(argv, env, cwd, nproc=1):
    """tools/bench.py as a subprocess (under torch.distributed.run with nproc > 1); returns
    (returncode, stdout, stderr, log text)."""
    full_env = {**_clean_environ(), **env}
    cmd = [sys.executable, str(BENCH), *argv]
    if nproc > 1:
        full_env["OMP_NUM_THREADS"] = "1"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(BENCH), *argv]
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True)
    log_path = cwd / "logs" / "bench" / f"{env['RUN_ID']}.txt"
    return proc.returncode, proc.stdout, proc.stderr, log_path.read_text() if log_path.is_file() else ""


def table(log: str, title: str) -> tuple[dict[str, str], list[str]]:
    """({name: value} of the `name  value  note` rows, all table lines) of the log's last table."""
    lines = log.split(f"==== bench {title} ====\n")[-1].splitlines()
    rows = dict(re.split(r"\s{2,}", line.strip())[:2] for line in lines if re.match(r"^[\w-]+\s{2,}\S", line))
    return rows, lines


def expected_flops_per_token(args) -> int:
    """6 * (matmul weights) + 6*L*T*d, counted from the settings, not from the model's modules."""
    d, L, head_dim = args.model_dim, args.num_layers, args.model_dim // args.num_heads
    kv, hidden = args.num_kv_heads * head_dim, int(args.mlp_mult * d)
    per_layer = d * d + 2 * d * kv + d * d + 2 * d * hidden  # q, k, v, proj, mlp fc + proj
    extra = (args.bigram_dim * d if args.bigram_vocab_size else 0) + (args.ve_dim * kv if args.ve_layers else 0)
    return 6 * (L * per_layer + extra + args.vocab_size * d) + 6 * L * args.train_seq_len * d


@pytest.mark.parametrize("extra", [{}, dict(BIGRAM_VOCAB_SIZE="0", VE_ENABLED="0", MLP_MULT="2.5"), dict(NUM_KV_HEADS="4")])
def test_flops_per_token_matches_independent_count(extra):
    args = tiny_args(**extra)
    fpt, n_matmul, attention = bench.flops_per_token(bench.tg.GPT(args), args)
    assert fpt == expected_flops_per_token(args) == 6 * n_matmul + attention


@pytest.mark.parametrize("argv", [["eval", "--phases", "sliding,foo"], ["eval", "--phases", ","], ["train", "--steps", "0"],
                                  ["train", "--bandwidth"], ["train", "--gaps"], ["eval", "--untrained", "--bandwidth"]])
def test_bad_arguments_are_refused(argv):
    with pytest.raises(SystemExit) as e:
        bench.parse_cli(argv)
    assert e.value.code == 2


@pytest.mark.parametrize("name, kind", [
    ("triton_per_fused__fused_rms_norm__scaled_dot_product_cudnn_attention__to_copy_add_cat_5", "compiled (triton)"),
    ("triton_poi_fused__to_copy__unsafe_view_leaky_relu_pow_13", "compiled (triton)"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x64_4x1x1_cga1x1x1_kernel0_0", "attention"),
    ("void cudnn::fusion::fmha_reduce_head<true>(void const*, void*, unsigned int)", "attention"),
    ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "matmul"),
    ("ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "communication"),
    ("Memset (Device)", "memcpy/memset"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>", "other")])
def test_kernel_kinds(name, kind):
    """A Triton kernel is compiled work whatever ops its name lists (attention's input kernel included)."""
    assert bench.kernel_kind(name) == kind


def test_kernel_bytes_are_read_from_inductor_sources_and_set_against_kernel_time(tmp_path):
    """--bandwidth: each generated kernel's kernel_num_gb, found by name in inductor's cache folder,
    times its calls per step, against its profiled time and against copy bandwidth."""
    meta = "    inductor_meta={{'grid_type': 'Grid1D', 'autotune_hints': set(), 'kernel_name': '{}', 'mutated_arg_names': [], 'kernel_num_gb': {}, 'kernel_flop': 0}},\n"
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "c1.py").write_text("@triton_heuristics.pointwise(\n" + meta.format("triton_poi_fused_mul_0", 0.3) + meta.format("triton_red_fused_sum_1", 0.1))
    (tmp_path / "cd.py").write_text(meta.format("triton_poi_fused_add_2", 0.05) + meta.format("triton_poi_fused_add_2", 0.07)
                                    + "    inductor_meta={'kernel_name': 'triton_poi_fused_cat_3', 'mutated_arg_names': []},\n")
    (tmp_path / "notes.txt").write_text(meta.format("triton_poi_fused_copy_4", 1.0))  # only .py sources count
    found = bench.kernel_gigabytes(tmp_path)
    assert found == {"triton_poi_fused_mul_0": {0.3}, "triton_red_fused_sum_1": {0.1}, "triton_poi_fused_add_2": {0.05, 0.07}}

    kernels = [("triton_poi_fused_mul_0", 10.0, 8), ("triton_red_fused_sum_1", 2.0, 16), ("triton_poi_fused_add_2", 1.5, 8),
               ("triton_poi_fused_cat_3", 0.5, 8)]
    rows = bench.bandwidth_rows(kernels, found, copy_gbps=2000.0)
    values = {r[0]: r[1:] for r in rows if len(r) > 1}
    gb = 8 * 0.3 + 16 * 0.1  # 4.0 GB in 12 ms
    assert values["copy_bandwidth"][0] == "2000 GB/s"
    assert values["compiled_gb_per_step"] == ("4.00 GB", "2 kernels, 12.0 ms per step")
    assert values["compiled_gb_per_s"] == (f"{1000 * gb / 12:.0f} GB/s", f"{100 * (1000 * gb / 2000) / 12:.1f}% of copy_bandwidth")
    assert values["compiled_floor"][0] == "2.0 ms"  # 4 GB at 2000 GB/s
    assert values["no_byte_estimate"][0] == "2.0 ms" and values["no_byte_estimate"][1].startswith("2 kernels")
    listed = [r[0] for r in rows if len(r) == 1 and r[0].startswith("  ")]
    # over the floor: mul 10 - 1.2 = 8.8 ms; sum 2 - 0.8 = 1.2 ms
    assert [line.split()[0] for line in listed] == ["8.80", "1.20"]
    assert listed[0].split()[1:] == ["10.00", "240", "8x", "triton_poi_fused_mul_0"]


def test_gaps_are_the_time_no_kernel_runs_grouped_by_their_neighbours():
    """--gaps: kernels of overlapping streams count as one busy span; what lies between busy spans is
    grouped by the kernel that ended last before it and the one that starts after it, per step."""
    spans = [(0, 10, "a"), (12, 20, "b"), (15, 30, "c"),  # b and c overlap: busy 12..30, then c ended last
             (31, 40, "a"), (40, 41, "b"),                # touching: no gap
             (100, 110, "a"), (112, 120, "b"), (20, 22, "x")]  # x inside a busy span: no gap of its own
    rows = bench.gap_rows(bench.gap_intervals(spans), steps=2)
    values = {r[0]: r[1:] for r in rows if len(r) > 1}
    # gaps: a->b 2 (10..12), c->a 1 (30..31), b->a 59 (41..100), a->b 2 (110..112): 64 us over 2 steps
    assert values["gap_ms_per_step"] == ("0.03 ms", "2.0 gaps per step")
    listed = [r[0].split() for r in rows if len(r) == 1 and r[0].startswith("  ")]
    assert listed == [["0.029", "0.5x", "b", "->", "a"], ["0.002", "1.0x", "a", "->", "b"], ["0.001", "0.5x", "c", "->", "a"]]


def test_host_rows_are_the_host_ops_overlapping_the_long_gaps():
    """--gaps, second part: which host ops ran while the GPU waited. Only gaps of at least min_us
    count; an op's time is its overlap with them, summed over gaps, and a nested op counts too."""
    device = [(0, 10, "a"), (50, 60, "b"), (61, 70, "c"), (200, 210, "d")]  # gaps 10..50, 60..61 (short), 70..200
    host = [(5, 45, "sync"), (40, 80, "launch"), (100, 150, "pin"), (0, 300, "outer"), (60.2, 60.8, "in_short_gap")]
    rows = bench.host_rows(bench.gap_intervals(device), host, steps=1, min_us=20)
    values = {r[0]: r[1:] for r in rows if len(r) > 1}
    assert values["long_gap_ms_per_step"] == ("0.17 ms", "2.0 gaps per step")
    listed = [r[0].split() for r in rows if len(r) == 1 and r[0].startswith("  ")]
    # outer covers both long gaps (40 + 130 us); pin 50 of the second; sync 35 of the first; launch 10 + 10
    assert listed == [["0.170", "100.0%", "outer"], ["0.050", "29.4%", "pin"], ["0.035", "20.6%", "sync"], ["0.020", "11.8%", "launch"]]
    assert bench.gap_intervals(device) == [(10, 50, "a", "b"), (60, 61, "b", "c"), (70, 200, "c", "d")]


@pytest.fixture(scope="module")
def bench_env(tiny_data, tiny_tokenizer):
    # ITERATIONS/WARMDOWN_ITERS of TINY_ENV are set on purpose: bench overrides them.
    return dict(TINY_ENV, DATA_PATH=str(tiny_data), TOKENIZER_PATH=str(tiny_tokenizer), VOCAB_SIZE="64", VAL_LOSS_EVERY="2")


def check_train(code, stdout, stderr, log, steps, world):
    assert code == 0, (stdout + stderr)[-3000:]
    rows, lines = table(log, "train")
    assert stdout.rstrip().endswith(lines[-1])  # the table is printed last
    assert log.count("==== bench train ====") == 1  # only rank 0 writes
    assert rows["device"] == f"cpu x{world}" and rows["world_size"] == str(world) and rows["attention"] == "sdpa"
    assert re.search(rf"^run_id:\S+ torch:{re.escape(rows['torch'])} device:cpu world_size:{world} attention:sdpa code_bytes:\d+ source_bytes:\d+$", log, re.M)
    # the overrides, and nothing but training
    for setting in (f"ITERATIONS={steps}", "WARMDOWN_ITERS=0", "MAX_WALLCLOCK_SECONDS=0.0", "VAL_LOSS_EVERY=0", f"TRAIN_LOG_EVERY={steps}"):
        assert f"hyperparameter {setting}\n" in log
    assert "val_loss" not in log and "eval:" not in log and "artifact" not in log
    assert f"world_size:{world} grad_accum:{8 // world} " in log and "compile_warmup" not in log  # nothing compiles on CPU
    # ms/step and tokens/s are those of the final step line
    final = re.search(rf"^step:{steps}/{steps} .* step_avg:(\S+)ms tokens_per_s:(\S+)M ", log, re.M)
    ms, tps = float(rows["ms_per_step"]), float(rows["tokens_per_s"])
    assert rows["steps"] == str(steps) and ms == float(final[1]) > 0 and tps == pytest.approx(float(final[2]) * 1e6)
    batch = int(rows["batch_tokens"])
    assert batch == int(TINY_ENV["TRAIN_BATCH_TOKENS"])
    lo, hi = batch / (ms + 0.05) * 1000, batch / (ms - 0.05) * 1000  # step_avg has 0.1 ms resolution, tokens_per_s 1000
    assert lo - 500 <= tps <= hi + 500
    assert float(rows["tokens_per_s_per_gpu"]) == pytest.approx(tps / world, abs=0.5)
    # own timer: the whole timed loop at least, plus setup
    assert float(rows["ms_per_step_wall"]) * steps >= ms * steps - 100 - 0.1 * steps
    assert float(rows["setup_overhead_s"]) == pytest.approx((float(rows["ms_per_step_wall"]) - ms) * steps / 1000, abs=0.01)
    # FLOPs and MFU from an independent count
    fpt = expected_flops_per_token(tiny_args(VOCAB_SIZE=64))
    assert float(rows["flops_per_token"]) == fpt
    per_gpu = float(rows["tokens_per_s_per_gpu"])
    assert float(rows["tflops_per_gpu"]) == pytest.approx(fpt * per_gpu / 1e12, rel=1e-3)
    assert float(rows["mfu_vendor_peak"].rstrip("%")) == pytest.approx(100 * fpt * per_gpu / 100e12, rel=1e-3)
    assert float(rows["mfu_measured_peak"].rstrip("%")) == pytest.approx(100 * fpt * per_gpu / 50e12, rel=1e-3)
    assert "6*N_matmul + 6*L*T*d" in log and "peak_memory_mib" not in rows  # no CUDA


def test_train_one_process(bench_env, tmp_path):
    env = dict(bench_env, RUN_ID="train1")
    check_train(*run_bench(["train", "--steps", "4", "--peak-tflops", "100", "--measured-tflops", "50"], env, tmp_path), steps=4, world=1)


def test_train_two_processes(bench_env, tmp_path):
    env = dict(bench_env, RUN_ID="train2")
    argv = ["train", "--steps", "3", "--peak-tflops", "100", "--measured-tflops", "50"]
    check_train(*run_bench(argv, env, tmp_path, nproc=2), steps=3, world=2)


def test_eval_phases(bench_env, tmp_path):
    """Times every phase on the artifact of a tiny run; its scores equal those of the run's own eval."""
    env = dict(bench_env, TTT_CHUNK_TOKENS="2048", VAL_LOSS_EVERY="0", RUN_ID="trained")  # 4 TTT chunks
    trained = run_trainer(env, tmp_path)
    assert trained.returncode == 0, trained.output[-3000:]
    artifact = tmp_path / "final_model_trained.int6.ptz"
    code, stdout, stderr, log = run_bench(["eval", "--artifact", str(artifact), "--phases", "ttt,ngram,roundtrip,sliding", "--repeat", "2"],
                                  dict(env, RUN_ID="eval", ARTIFACT_PATH="missing.ptz"), tmp_path)
    assert code == 0, (stdout + stderr)[-3000:]
    rows, lines = table(log, "eval")
    assert stdout.rstrip().endswith(lines[-1])
    assert rows["device"] == "cpu x1" and rows["artifact"] == str(artifact)
    n_targets = int(rows["val_targets"])
    assert n_targets == (int(TINY_ENV["VAL_MAX_TOKENS"]) - 1) // 64 * 64
    phase_rows = [line.split() for line in lines if re.match(r"^(roundtrip|sliding|ngram|ttt) ", line)]
    assert [(r[0], r[1]) for r in phase_rows] == [(p, f"{k}/2" + "*" * (k == 2)) for p in bench.PHASES for k in (1, 2)]
    for phase, _, seconds, eval_s, targets, per_gpu, full in phase_rows:
        seconds, eval_s, per_gpu, full = map(float, (seconds, eval_s, per_gpu, full))
        assert int(targets) == n_targets and 0 < eval_s <= seconds + 0.001
        assert n_targets / (seconds + 5e-4) - 0.05 <= per_gpu <= n_targets / (seconds - 5e-4) + 0.05  # seconds: 3 decimals
        assert full == pytest.approx(62_021_632 / (per_gpu * 8), abs=0.05 + 62_021_632 / (per_gpu - 0.05) / 8 - 62_021_632 / per_gpu / 8)
        matches = list(re.finditer(rf"^eval:{phase} seconds:(\S+) targets:{n_targets} tokens_per_s_per_gpu:\d+ score_seconds:(\S+)( mixer_seconds:\S+)?( ttt_train_seconds:\S+)?$", log, re.M))
        assert len(matches) == 2  # one per repeat
        for m in matches:
            parts = [float(m[2])] + [float(g.split(":")[1]) for g in m.groups()[2:] if g]
            assert (m[3] is not None) == (phase in ("ngram", "ttt")) and (m[4] is not None) == (phase == "ttt")
            assert sum(parts) <= float(m[1]) + 0.05 * (len(parts) + 1)  # the parts lie inside the pass (each printed to 0.1 s)
    # the same evaluate() calls as the run: the same scores (bench logs 6 decimals), TTT from a fresh load every time
    scores = {}
    for m in re.finditer(r"^bench_eval phase:(\w+) repeat:(\d)/2 .* val_bpb:(\S+)(?: mixed_bpb:(\S+))?$", log, re.M):
        scores.setdefault(m[1], []).append((float(m[3]), float(m[4]) if m[4] else None))
    assert all(len(v) == 2 and v[0] == v[1] for v in scores.values()), scores
    expected = dict(roundtrip=(log_line(trained.log, "final_int6_roundtrip")["val_bpb"], None),
                    sliding=(log_line(trained.log, "final_int6_sliding_window")["val_bpb"], None),
                    ttt=(log_line(trained.log, "ttt_only")["val_bpb"], log_line(trained.log, "final_ngram_ttt")["val_bpb"]))
    # the run puts the mixer in its TTT pass only; the bench's ngram phase (sliding + mixer) has the
    # sliding pass's neural score and a mixed score of its own, the same on both repeats (above)
    assert scores["ngram"][0][0] == pytest.approx(float(expected["sliding"][0]), abs=1.5e-6)
    assert scores["ngram"][0][1] is not None and math.isfinite(scores["ngram"][0][1])
    for phase, (bpb, mixed) in expected.items():
        got = scores[phase][0]
        assert got[0] == pytest.approx(float(bpb), abs=1.5e-6), phase
        assert (got[1] is None) == (mixed is None) and (mixed is None or math.isclose(got[1], float(mixed), abs_tol=1.5e-6)), phase


def test_train_profile_splits_step_time_by_kind(bench_env, tmp_path):
    code, stdout, stderr, log = run_bench(["train", "--steps", "5", "--profile", "2"], dict(bench_env, RUN_ID="profiled"), tmp_path)
    assert code == 0, (stdout + stderr)[-3000:]
    rows, lines = table(log, "train")
    kinds = {name: float(value.split()[0]) for name, value in rows.items() if name.startswith("profile_") and name != "profile_total"}
    assert kinds and all(ms >= 0 for ms in kinds.values())
    assert sum(kinds.values()) == pytest.approx(float(rows["profile_total"].split()[0]), abs=0.05 * (len(kinds) + 1) + 1e-9)  # each printed to 0.1 ms
    assert float(rows["profile_total"].split()[0]) > 0
    calls = lines[lines.index("time by calls per step:") + 1:lines.index("top kernels, ms per step:")]
    assert calls and all(re.match(r"^\s+[\d.]+\s+\d+x\s+(\w+ [\d.]+)(, \w+ [\d.]+)*$", line) for line in calls)
    parts = [float(ms) for line in calls for ms in re.findall(r"\w+ ([\d.]+)", line.split("x", 1)[1])]
    assert sum(float(line.split()[0]) for line in calls) == pytest.approx(float(rows["profile_total"].split()[0]), abs=0.01 * len(calls) + 0.05)
    assert sum(parts) == pytest.approx(float(rows["profile_total"].split()[0]), abs=0.005 * len(parts) + 0.05)
    top = lines[lines.index("top kernels, ms per step:") + 1:]
    assert 5 <= len(top) <= 30 and all(re.match(r"^\s+[\d.]+\s+\d+x\s+\S", line) for line in top)
    assert "profile: cpu op time per step, over 2 profiled steps" in lines
    assert rows["steps"] == "5"


def test_profiled_steps_are_the_hosts_muon_ranges():
    cpu, gpu = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    events = [SimpleNamespace(name=name, device_type=kind) for name, kind in
              [(bench.MUON_STEP, cpu), (bench.MUON_STEP, gpu), ("Optimizer.step#AdamW.step", cpu), (bench.MUON_STEP, cpu), (bench.MUON_STEP, gpu)]]
    assert bench.profiled_steps(events) == 2


def test_mixer_bench_counts_a_long_stream_and_extrapolates_one_pass(bench_env, tmp_path):
    code, stdout, stderr, log = run_bench(["mixer", "--tokens", "5000", "--chunks", "3"],
                                          dict(bench_env, RUN_ID="mixer", TTT_CHUNK_TOKENS="1024"), tmp_path)
    assert code == 0, (stdout + stderr)[-3000:]
    rows, lines = table(log, "mixer")
    tokens = int(rows["tokens"])
    assert 0 < tokens <= 5000 and rows["device"] == "cpu x1"
    line = log_line_of(log, r"^bench_mixer count_seconds:(\S+) per_chunk_seconds:(\S+) chunks_timed:3 full_pass_seconds_per_gpu:(\S+) audit_max_abs_err:(\S+)$")
    count, per_chunk, full, err = map(float, line.groups())
    n_chunks = -(-(tokens - 1) // 1024)
    assert full == pytest.approx(count + per_chunk * n_chunks, abs=0.06)
    assert float(rows["pass_seconds"]) == pytest.approx(full, abs=0.06) and err <= 1e-9
    assert f"{n_chunks} chunks of 1024" in log


def log_line_of(log: str, pattern: str):
    found = re.search(pattern, log, re.M)
    assert found, pattern
    return found


def variant(tmp_path, name: str, edit) -> Path:
    """A copy of train_gpt.py with one edit, as a competitor's experiment would be."""
    source = (REPO_ROOT / "train_gpt.py").read_text()
    path = tmp_path / name / "train_gpt.py"
    path.parent.mkdir(parents=True)
    path.write_text(edit(source))
    return path


def test_compare_same_function_and_changed_function(bench_env, tmp_path):
    """compare: a copy that differs only in a comment trains to the same losses; one whose Newton-
    Schulz coefficient differs does not. Each run's own train log is kept and named in the log."""
    same = variant(tmp_path, "same", lambda s: s + "\n# only a comment differs\n")
    assert same.read_bytes() != (REPO_ROOT / "train_gpt.py").read_bytes()
    changed = variant(tmp_path, "changed", lambda s: s.replace("quintic=((3.4445,", "quintic=((3.0,", 1))
    assert changed.read_text() != (REPO_ROOT / "train_gpt.py").read_text()
    results = {}
    for name, against in (("same", same), ("changed", changed)):
        code, stdout, stderr, log = run_bench(["compare", "--against", str(against), "--steps", "3", "--rounds", "2"],
                                              dict(bench_env, RUN_ID=f"cmp_{name}"), tmp_path / name)
        assert code == 0, (stdout + stderr)[-3000:]
        rows, lines = table(log, "compare")
        assert stdout.rstrip().endswith(lines[-1])
        runs = re.findall(r"^compare round:(\d)/2 (against|program) ms_per_step:(\S+) seconds:\S+ log:(\S+)$", log, re.M)
        assert [(r, n) for r, n, _, _ in runs] == [("1", "against"), ("1", "program"), ("2", "program"), ("2", "against")]
        for _, name_, ms, child in runs:  # every number in the table comes from a child's own bench log
            child_log = (tmp_path / name / child).read_text()
            assert re.search(rf"^ms_per_step\s+{re.escape(ms)}\s", child_log, re.M)
            program = against if name_ == "against" else REPO_ROOT / "train_gpt.py"
            assert f"code_sha256:{packed_sha256(program.read_bytes())}" in child_log
        medians = {n: statistics.median(float(ms) for _, m, ms, _ in runs if m == n) for n in ("against", "program")}
        assert float(rows["against_ms_per_step"]) == pytest.approx(medians["against"], abs=0.051)
        assert float(rows["speedup"].rstrip("x")) == pytest.approx(medians["against"] / medians["program"], abs=0.0011)
        results[name] = float(rows["max_train_loss_diff"])
    assert results["same"] == 0.0
    assert results["changed"] > 1e-4


def test_steady_ms_is_the_rate_from_step_10_to_the_last():
    assert bench.steady_ms({1: 50.0, 10: 100.0, 20: 105.0}) == pytest.approx(110.0)  # (20*105 - 10*100) / 10
    early = {k: (k * 110.0 - 30.0) / k for k in (1, 10, 20)}  # every line read the clock 30 ms before its step ended
    assert bench.steady_ms(early) == pytest.approx(110.0) and early[20] < 110.0
    assert bench.steady_ms({1: 50.0, 10: 100.0}) is None and bench.steady_ms({5: 1.0, 20: 1.0}) is None and bench.steady_ms({}) is None


def test_compare_refuses_an_unknown_ref(bench_env, tmp_path):
    code, stdout, stderr, log = run_bench(["compare", "--against", "no-such-ref-xyz", "--steps", "2"],
                                          dict(bench_env, RUN_ID="cmp_bad"), tmp_path)
    assert code == 2 and "ERROR: --against no-such-ref-xyz: neither a file nor a git ref" in log


@pytest.mark.skipif(subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0,
                    reason="not a git checkout")
def test_compare_against_a_git_ref(bench_env, tmp_path):
    committed = subprocess.run(["git", "-C", str(REPO_ROOT), "show", "HEAD:train_gpt.py"], capture_output=True, check=True).stdout
    code, stdout, stderr, log = run_bench(["compare", "--against", "HEAD", "--steps", "2", "--rounds", "1"],
                                          dict(bench_env, RUN_ID="cmp_head"), tmp_path)
    assert code == 0, (stdout + stderr)[-3000:]
    child = re.search(r"^compare round:1/1 against ms_per_step:\S+ seconds:\S+ log:(\S+)$", log, re.M)[1]
    assert f"code_sha256:{packed_sha256(committed)}" in (tmp_path / child).read_text()


def test_compare_an_env_switch_of_the_same_program(bench_env, tmp_path):
    """--program-env sets a variable for the version under test only: here a learning rate, so the
    train losses part; the baseline's child log keeps the default. With more than 10 steps each run
    also has its steady ms per step (steps 11-12), and the compare their ratio."""
    code, stdout, stderr, log = run_bench(["compare", "--against", str(REPO_ROOT / "train_gpt.py"), "--steps", "12", "--rounds", "1",
                                           "--program-env", "MATRIX_LR=0.09"], dict(bench_env, RUN_ID="cmp_env"), tmp_path)
    assert code == 0, (stdout + stderr)[-3000:]
    rows, _ = table(log, "compare")
    children = dict((n, c) for n, c in re.findall(r"^compare round:1/1 (against|program) ms_per_step:\S+ seconds:\S+ log:(\S+)$", log, re.M))
    assert "hyperparameter MATRIX_LR=0.09" in (tmp_path / children["program"]).read_text()
    assert "hyperparameter MATRIX_LR=0.09" not in (tmp_path / children["against"]).read_text()
    assert float(rows["max_train_loss_diff"]) > 1e-4 and "program_env:MATRIX_LR=0.09" in log
    steady = {}
    for name, child in children.items():
        text = (tmp_path / child).read_text()
        avg = {int(k): float(v) for k, v in re.findall(r"^step:(\d+)/12 .* step_avg:(\S+)ms ", text, re.M)}
        assert sorted(avg) == list(range(1, 11)) + [12]
        steady[name] = float(table(text, "train")[0]["ms_per_step_steady"])
        assert steady[name] == pytest.approx((12 * avg[12] - 10 * avg[10]) / 2, abs=0.051) and steady[name] > 0
        assert float(rows[f"{name}_ms_per_step_steady"]) == steady[name]
    assert float(rows["speedup_steady"].rstrip("x")) == pytest.approx(steady["against"] / steady["program"], abs=0.0011)
    code, _, stderr, _ = run_bench(["compare", "--against", "HEAD", "--program-env", "oops"], dict(bench_env, RUN_ID="cmp_bad_env"), tmp_path)
    assert code == 2 and "--program-env takes NAME=VALUE" in stderr


def training_log(losses: dict[int, float], settings: dict[str, str], world: int = 1, sha: str = "ab" * 32, train_tokens: int = 1000,
                 started: str = "2026-11-28T00:00:00Z") -> str:
    """A log in train_gpt.py's format: run header, hyperparameter lines, step lines."""
    lines = [f"run_id:r torch:2.11.0+cu130 device:NVIDIA H100 80GB HBM3 world_size:{world} attention:sdpa code_bytes:1",
             f"code_sha256:{sha} started_utc:{started} inductor_mix_order_reduction:False"]
    lines += [f"hyperparameter {k}={v}" for k, v in settings.items()] + [f"train_shards:1 train_tokens:{train_tokens}"]
    lines += [f"step:{k}/{max(losses)} train_loss:{v:.4f} lr_mul:1.000 elapsed:1.0s step_avg:1.0ms tokens_per_s:1.000M eta:0m00s"
              for k, v in sorted(losses.items())]
    return "\n".join(lines) + "\n"


def test_curves_compares_train_losses_step_by_step_and_names_changed_settings(tmp_path):
    losses = {k: 7.0 - 0.01 * k for k in range(1, 121)}
    settings = dict(RUN_ID="a", SEED="42", MATRIX_LR="0.025", TRAIN_LOG_EVERY="1")
    before = tmp_path / "before.txt"
    before.write_text(training_log({1: 9.0, 500: 1.0}, dict(settings, MATRIX_LR="0.5"), sha="00" * 32)
                      + training_log(losses, settings))  # an appended log: only its last run counts
    changed = {**losses, 5: losses[5] + 0.5, 60: losses[60] - 0.25}
    after = tmp_path / "after.txt"
    after.write_text(training_log(changed, dict(settings, RUN_ID="b", MATRIX_LR="0.03", TRAIN_LOG_EVERY="25"), world=4, sha="cd" * 32,
                                  train_tokens=2000))
    same = tmp_path / "same.txt"
    same.write_text(training_log(losses, dict(settings, RUN_ID="c"), started="2026-11-28T01:00:00Z"))

    code, stdout, stderr, log = run_bench(["curves", str(before), str(after), "--ranges", "1-10,11-50,51-100,101-200,400-600"],
                                          dict(RUN_ID="cur"), tmp_path)
    assert code == 0, stdout + stderr
    rows, lines = table(log, "curves")
    assert stdout.rstrip().endswith(lines[-1])
    assert rows["shared_steps"] == "120"  # not 121: the old run's step 500 is not read
    assert rows["settings_differ"] == "MATRIX_LR=0.025->0.03, train_tokens (data)=1000->2000"  # RUN_ID, TRAIN_LOG_EVERY: run-only
    assert rows["steps_400-600"] == "none" and "warning" not in rows
    assert "code cdcdcdcdcd, world_size 4" in log and "code abababab" in log
    assert rows["steps_1-10"] == "max|d| 0.5000" and "mean d +0.0500" in log
    assert rows["steps_11-50"] == "max|d| 0.0000" and rows["steps_51-100"] == "max|d| 0.2500" and rows["steps_101-200"] == "max|d| 0.0000"
    assert "over 20 steps" in log  # 101-120 only
    assert re.search(r"^\s+5\s", log, re.M) is None and re.search(r"^\s+50  6\.5000  6\.5000$", log, re.M)

    code, stdout, stderr, log = run_bench(["curves", str(before), str(same)], dict(RUN_ID="cur_same"), tmp_path)
    rows, _ = table(log, "curves")
    assert code == 0 and rows["settings_differ"] == "none"
    assert [rows[f"steps_{r}"] for r in ("1-10", "11-50", "51-100", "101-200", "201-300")] == ["max|d| 0.0000"] * 4 + ["none"]
    assert "warning" not in rows  # another run that trained alike
    code, stdout, stderr, log = run_bench(["curves", str(same), str(same)], dict(RUN_ID="cur_self"), tmp_path)
    assert code == 0 and table(log, "curves")[0]["warning"] == "both logs are the same run"

    notlog = tmp_path / "notes.txt"
    notlog.write_bytes(b"hello \xff\xfe\n")  # not even UTF-8
    code, _, _, log = run_bench(["curves", str(before), str(notlog)], dict(RUN_ID="cur_bad"), tmp_path)
    assert code == 2 and "ERROR:" in log and "not a training log" in log
    code, _, _, log = run_bench(["curves", str(before), str(tmp_path / "missing.txt")], dict(RUN_ID="cur_missing"), tmp_path)
    assert code == 2 and "missing.txt" in log
    for bad in ("5-1", "0-3", "1-2-3", "x"):
        with pytest.raises(SystemExit):
            bench.parse_cli(["curves", "a", "b", "--ranges", bad])


def test_eval_untrained_times_every_phase_without_an_artifact(bench_env, tmp_path):
    """--untrained: no artifact needed (ARTIFACT_PATH points nowhere); every phase runs on the
    initial weights of SEED, TTT restarting from them on each repeat, and the log says the scores
    are meaningless."""
    env = dict(bench_env, TTT_CHUNK_TOKENS="2048", RUN_ID="eval_untrained", ARTIFACT_PATH="missing.ptz")
    code, stdout, stderr, log = run_bench(["eval", "--untrained", "--phases", "sliding,ttt", "--repeat", "2"], env, tmp_path)
    assert code == 0, (stdout + stderr)[-3000:]
    rows, lines = table(log, "eval")
    assert rows["artifact"].startswith("untrained") and "artifact:none untrained weights phases:sliding,ttt repeat:2" in log
    scores = re.findall(r"^bench_eval phase:(\w+) repeat:(\d)/2 .* val_bpb:(\S+)", log, re.M)
    assert [(p, r) for p, r, _ in scores] == [("sliding", "1"), ("sliding", "2"), ("ttt", "1"), ("ttt", "2")]
    assert scores[2][2] == scores[3][2]  # TTT restarted from the same initial weights
    variant = tmp_path / "variant" / "train_gpt.py"  # --program: another train_gpt.py's eval, named by its sha256
    variant.parent.mkdir()
    variant.write_text((REPO_ROOT / "train_gpt.py").read_text() + "\n# a variant\n")
    code, stdout, stderr, log = run_bench(["eval", "--untrained", "--phases", "sliding", "--repeat", "1", "--program", str(variant)],
                                          dict(env, RUN_ID="eval_variant"), tmp_path)
    assert code == 0, (stdout + stderr)[-3000:]
    assert f"code_sha256:{packed_sha256(variant.read_bytes())}" in log
    assert re.search(r"^bench_eval phase:sliding repeat:1/1 .* val_bpb:(\S+)", log, re.M)[1] == scores[0][2]  # same function, same score
    code, _, stderr, _ = run_bench(["eval", "--untrained", "--artifact", "x.ptz"], dict(env, RUN_ID="eval_bad"), tmp_path)
    assert code == 2 and "give it no --artifact" in stderr


def test_eval_ttt_phase_follows_ttt_mode(bench_env, tmp_path):
    """TTT_MODE=lora: the ttt phase times the document-level LoRA pass (its own log lines), restarting
    from the same weights on each repeat (the pass's phase changes them)."""
    env = dict(bench_env, TTT_MODE="lora", TTT_LORA_CONTEXT="16", TTT_PHASE_DOCS="2", RUN_ID="eval_lora", ARTIFACT_PATH="missing.ptz")
    code, stdout, stderr, log = run_bench(["eval", "--untrained", "--phases", "ttt", "--repeat", "2"], env, tmp_path)
    assert code == 0, (stdout + stderr)[-3000:]
    assert len(re.findall(r"^eval:ttt ttt_mode:lora documents:\d+ .* phase_documents:2 context_tokens:16$", log, re.M)) == 2
    assert len(re.findall(r"^eval:ttt phase_sgd documents:2 steps:\d+ ", log, re.M)) == 2
    scores = re.findall(r"^bench_eval phase:ttt repeat:(\d)/2 .* targets:(\d+) .* val_bpb:(\S+) mixed_bpb:(\S+)$", log, re.M)
    assert [r for r, *_ in scores] == ["1", "2"] and scores[0][1:] == scores[1][1:]
    assert "ttt_train_seconds" not in log  # not the chunk pass


def test_eval_profile_splits_each_phase_by_kind(bench_env, tmp_path):
    """--profile: each phase's last call is profiled (CPU ops on CPU), and its time by kind adds up
    to the printed total."""
    env = dict(bench_env, TTT_CHUNK_TOKENS="2048", RUN_ID="eval_profiled", ARTIFACT_PATH="missing.ptz")
    code, stdout, stderr, log = run_bench(["eval", "--untrained", "--phases", "sliding,ttt", "--repeat", "2", "--profile"], env, tmp_path)
    assert code == 0, (stdout + stderr)[-3000:]
    _, lines = table(log, "eval")
    heads = [i for i, line in enumerate(lines) if line.startswith("profile of phase ")]
    assert [re.match(r"profile of phase (\w+) \(its last call, ([\d.]+) ms wall, profiler on\):$", lines[i])[1] for i in heads] == ["sliding", "ttt"]
    for start, end in zip(heads, heads[1:] + [lines.index("* reported: the last repeat (the first call of each phase includes torch.compile on GPU)")]):
        block = lines[start:end]
        rows = dict(re.split(r"\s{2,}", line.strip())[:2] for line in block if re.match(r"^profile_\S+\s{2,}\S", line))
        kinds = [float(v.split()[0]) for k, v in rows.items() if k != "profile_total"]
        assert kinds and sum(kinds) == pytest.approx(float(rows["profile_total"].split()[0]), abs=0.05 * (len(kinds) + 1))
        assert "profile: cpu op time per step, over 1 profiled steps" in block
        assert any(re.match(r"^\s+[\d.]+\s+\d+x\s+\S", line) for line in block[block.index("top kernels, ms per step:") + 1:])
    assert len(re.findall(r"^bench_eval phase:\w+ repeat:\d/2 ", log, re.M)) == 4  # profiling adds no call
