"""The README's speed tables are what the committed bench logs say: each figure is read back from
the log its row names, and the derived columns (speed-up, tokens/s, share of linear) are recomputed."""
import hashlib
import math
import re
import statistics
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import bench  # noqa: E402  (steady_ms and its step-line pattern)

README = (REPO_ROOT / "README.md").read_text()
BATCH_TOKENS = 786_432


def section(title: str) -> str:
    return README.split(f"**{title}**", 1)[1].split("\n\n**", 1)[0]


def speed_bullet(title: str) -> str:
    """The bullet under the before/after table that starts with **title, as one line."""
    return " ".join(section("Before/after, same GPU").split(f"- **{title}")[1].split("\n- **")[0].split())


def table_rows(text: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    return rows[2:]  # past the header and the --- line


def log_value(log: str, name: str) -> str:
    return re.search(rf"^{name}\s{{2,}}(\S+)", log, re.M)[1]


IN_GIT = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True).returncode == 0
needs_git = pytest.mark.skipif(not IN_GIT, reason="not a git checkout")


def source_if_present(ref: str, path: str = "train_gpt.py") -> str | None:
    """A file of a commit or branch, or None where the clone lacks it (experiment branches, shallow clones)."""
    shown = subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"{ref}:{path}"], capture_output=True, text=True)
    return None if shown.returncode else shown.stdout


def git_source(commit: str, path: str = "train_gpt.py") -> str:
    """A file (train_gpt.py unless named) of a commit (the GPU machine's copy has no .git, so logs name code by sha256)."""
    source = source_if_present(commit, path)
    if source is None:
        pytest.skip(f"commit {commit} is not in this clone (shallow?)")
    return source


def assert_branch_logs_ran_it(ref: str, names) -> None:
    """Each named log ran the experiment branch's train_gpt.py, where the clone has the branch."""
    source = source_if_present(ref)
    if source is not None:
        for name in names:
            assert ran_sha(name) == sha(source), name


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def bench_log(name: str) -> str:
    return (REPO_ROOT / f"logs/bench/{name}.txt").read_text()


def ran_sha(name: str) -> str:
    """The code_sha256 of the program a bench log ran."""
    return re.search(r"code_sha256:(\S+)", bench_log(name))[1]


def before_after_rows() -> list[list[str]]:
    rows = table_rows(section("Before/after, same GPU"))
    assert len(rows) == 12 and all(len(r) == 7 for r in rows)
    return rows


@pytest.mark.parametrize("index", range(12))
def test_before_after_table_matches_the_compare_logs(index):
    label, gpu, before, after, speedup, peak, log_cell = before_after_rows()[index]
    log = (REPO_ROOT / log_cell.strip("`")).read_text()
    for side in ("against", "program"):  # the compare's children name their GPU in their headers
        assert f"device:NVIDIA {gpu}" in (REPO_ROOT / f"{log_cell.strip('`')[:-4]}_{side}_r1.txt").read_text()
    medians, peaks = {}, []
    for cell, side in ((before, "against"), (after, "program")):
        median, run1, run2 = re.fullmatch(r"([\d.]+) \(([\d.]+), ([\d.]+)\)", cell).groups()
        logged = re.search(rf"^{side}_ms_per_step\s+(\S+)\s+(\S+) (\S+); peak (\d+) MiB$", log, re.M)
        assert [median, run1, run2] == list(logged.groups()[:3])
        medians[side] = statistics.median([float(run1), float(run2)])
        peaks.append(f"{int(logged[4]):,}")
    assert peak == " → ".join(peaks) + " MiB"
    assert speedup == f"**{log_value(log, 'speedup').rstrip('x')}×**"
    assert float(speedup.strip("*×")) == pytest.approx(medians["against"] / medians["program"], abs=0.0006)
    assert "program               /" in log and re.search(r"^against\s+\.ab/\S+\.py$", log, re.M)


def test_the_h100_figures_quoted_under_the_table_are_the_h100_compare():
    text = " ".join(section("Before/after, same GPU").split())
    log = (REPO_ROOT / "logs/bench/ab_before_after_s6_h100.txt").read_text()
    ms = float(log_value(log, "program_ms_per_step"))
    peak = int(re.search(r"^program_ms_per_step .*; peak (\d+) MiB$", log, re.M)[1])
    assert f"Ours on an H100 now: {ms} ms = {BATCH_TOKENS / ms / 1000:.2f}M tokens/s, {746 / ms:.3f}× the reference" in text
    assert f"peak of {peak:,} MiB = {peak / 1024:.1f} GiB ({peak * 2**20 / 1e9:.1f} GB" in text
    # the same code on two H100s: this compare's before side and session 4's
    other = (REPO_ROOT / "logs/bench/ab_before_after.txt").read_text()
    here, there = float(log_value(log, "against_ms_per_step")), float(log_value(other, "against_ms_per_step"))
    assert f"96342e1 ran {here} ms on this one and {there} ms on session 4's (last row), {100 * (here / there - 1):.1f}% apart" in text


@pytest.mark.parametrize("name", ["ab_mix_order_off", "ab_activation_budget", "ab_pdl", "ab_rope_buffers", "ab_no_bincount_sync",
                                  "ab_qk_fp32", "ab_lagged_status_s6"])
def test_single_switch_ab_figures_are_in_their_logs(name):
    log = (REPO_ROOT / f"logs/bench/{name}.txt").read_text()
    before, after = log_value(log, "against_ms_per_step"), log_value(log, "program_ms_per_step")
    text = " ".join(README.split())
    claim = text.index(f"{before} → {after} ms")  # the figures, then the speed-up and the log they come from
    assert log_value(log, "speedup").rstrip("x") + "×" in text[claim:claim + 200] and f"logs/bench/{name}.txt" in text[claim:claim + 300]


def test_scaling_table_matches_the_bench_logs():
    rows = table_rows(section("Scaling"))
    assert [r[0] for r in rows] == ["1", "2", "4"]
    one_gpu = None
    for gpus, ms, per_gpu, linear, peak, log_cell in rows:
        log = (REPO_ROOT / log_cell.strip("`")).read_text()
        assert log_value(log, "world_size") == gpus and log_value(log, "ms_per_step") == ms
        tokens = int(log_value(log, "tokens_per_s_per_gpu"))
        assert per_gpu == f"{tokens / 1e6:.3f}M" and peak == f"{int(log_value(log, 'peak_memory_mib')):,} MiB"
        one_gpu = one_gpu or tokens
        assert linear == ("" if gpus == "1" else f"**{100 * tokens / one_gpu:.1f}%**")


@needs_git
@pytest.mark.parametrize("index", [*range(9), 10, 11])  # row 9's before side is checked by the session-13 test
def test_before_after_logs_ran_the_commits_the_readme_names(index):
    """The compare ran files (the GPU machine's copy has no .git): their sha256 are those of the
    named commits' train_gpt.py, the before commit first in the row's label and the after one second."""
    label, *_, log_cell = before_after_rows()[index]
    commits = re.findall(r"\b([0-9a-f]{7})\b", label)
    assert len(commits) == 2 and "→" in label
    name = log_cell.strip("`")[len("logs/bench/"):-4]
    for side, commit in zip(("against", "program"), commits):
        source = git_source(commit)
        if (name, side) in MEASURED_BEFORE_A_DOCSTRING:  # the row says so: the run's code is the commit's but for one docstring
            source = other_side(source, (REPO_ROOT / MEASURED_BEFORE_A_DOCSTRING[name, side]).read_text(), reverse=True)
            assert "but for a docstring" in label
        for r in (1, 2):
            assert ran_sha(f"{name}_{side}_r{r}") == sha(source)


MEASURED_BEFORE_A_DOCSTRING = {("ab_qkv_one_gemm_s11_h200", "program"): "logs/bench/programs_s11/qkv_measured_to_5a2909a_s11.diff"}


def test_ttt_split_table_matches_the_eval_logs():
    rows = table_rows(section("Does TTT training split over ranks?"))
    assert [r[0] for r in rows] == ["1", "2"]
    for gpus, whole, score, mixer, train, per_gpu, log_cell in rows:
        log = (REPO_ROOT / log_cell.strip("`")).read_text()
        assert log_value(log, "world_size") == gpus and "device                NVIDIA H200" in log
        last = re.findall(r"^eval:ttt seconds:(\S+) targets:\d+ \S+ score_seconds:(\S+) mixer_seconds:(\S+) ttt_train_seconds:(\S+)$", log, re.M)[-1]
        assert [whole, score, mixer, train.split(" (")[0]] == [f"{v} s" for v in last]
        chunks = int(re.search(r"^eval:ttt chunk:\d+/(\d+) ", log, re.M)[1])
        assert train.endswith(f"({float(last[3]) / (chunks - 1):.2f} s per chunk)")
        reported = re.search(r"^ttt\s+2/2\*\s+\S+\s+\S+\s+\d+\s+(\S+)", log, re.M)[1]
        assert per_gpu == f"{round(float(reported)):,}"



def assert_compare_quoted(bullet: str, name: str) -> tuple[float, float, list[int]]:
    """A bullet quotes its compare log as 'A → B ms, X× (steady Y×'; returns X, Y and the two sides' peaks (MiB)."""
    log = bench_log(name)
    a, b, x, xs = (log_value(log, k) for k in ("against_ms_per_step", "program_ms_per_step", "speedup", "speedup_steady"))
    assert f"{a} → {b} ms, {x.rstrip('x')}× (steady {xs.rstrip('x')}×" in bullet
    return float(x.rstrip("x")), float(xs.rstrip("x")), [int(p) for p in re.findall(r"; peak (\d+) MiB$", log, re.M)]


def assert_slower_compare_quoted(bullet: str, name: str) -> list[int]:
    """A rejection bullet quotes its compare log (as assert_compare_quoted), X < 1; returns the two sides' peaks (MiB)."""
    speedup, _, peaks = assert_compare_quoted(bullet, name)
    assert speedup < 1
    return peaks


def first(pattern: str, text: str) -> str:
    return re.search(pattern, text, re.M)[1]


def test_four_gpu_paragraph_matches_its_log():
    text = " ".join(section("4 GPUs").split())
    log = (REPO_ROOT / "logs/multigpu/multigpu_4xh100_285steps.txt").read_text()
    assert "world_size:4 grad_accum:2 micro_batch_seqs:48" in log
    for setting in ("ITERATIONS=285", "WARMDOWN_ITERS=135", "MAX_WALLCLOCK_SECONDS=0.0", "MUON_MOMENTUM_WARMUP_STEPS=58", "SEED=42"):
        assert f"hyperparameter {setting}\n" in log
    last = re.search(r"^step:285/285 .* elapsed:([\d.]+)s step_avg:([\d.]+)ms tokens_per_s:([\d.]+)M ", log, re.M)
    assert f"285 steps at **{last[2]} ms**" in text and f"{float(last[3]) / 4:.3f}M tokens/s per GPU" in text
    warmup = first(r"compile_warmup done steps:5 seconds:(\S+)", log)
    assert f"{last[1]} s of training after a {warmup} s compile" in text
    peak, total = int(first(r"peak_memory_allocated_mib:(\d+)", log)), int(first(r"total_bytes:(\d+)", log))
    assert f"peak {peak:,} MiB" in text and f"artifact + code {total:,} bytes" in text
    bpb = {name: "%.5f" % float(first(rf"^{name} val_loss:\S+ val_bpb:(\S+)", log))
           for name in ("final_int6_sliding_window", "ngram_only", "ttt_only", "final_ngram_ttt")}
    assert (f"sliding window {bpb['final_int6_sliding_window']}, `ngram_only` {bpb['ngram_only']}, "
            f"`ttt_only` {bpb['ttt_only']}, **final {bpb['final_ngram_ttt']}**") in text
    assert float(first(r"^ngram_audit positions:\d+ max_abs_err:(\S+)", log)) <= 1.1e-15 * 1.01
    seconds = dict(re.findall(r"^eval:(\w+) seconds:(\S+) ", log, re.M))
    assert (f"pre-quant {seconds['pre_quant']} (with compile), dequantized non-sliding {seconds['int6_roundtrip']}, "
            f"sliding {seconds['int6_sliding_window']}") in text and f"TTT + mixer pass {seconds['ngram_ttt']} (" in text
    before = (REPO_ROOT / "logs/bench/curve_before_96342e1.txt").read_text()
    assert "final %.5f" % float(first(r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+)", before)) in text


def test_same_function_paragraph_matches_the_curves_log():
    text = " ".join(section("Same model function.").split())
    log = (REPO_ROOT / "logs/bench/curves_before_after_4xh100.txt").read_text()
    stats = {r: (mx, mean) for r, mx, mean in re.findall(r"^steps_(\S+)\s+max\|d\| (\S+)\s+mean d \S+, mean \|d\| (\S+) over", log, re.M)}
    assert f"max {stats['1-10'][0]} over steps 1–10" in text
    assert "mean |d| " + " / ".join(stats[r][1] for r in ("11-50", "51-100", "101-200", "201-300")) in text
    assert f"largest single step {max(float(mx) for mx, _ in stats.values()):.4f}" in text
    assert re.search(r"^settings_differ\s+none\s", log, re.M)


def curve_stats(path: str) -> dict[str, tuple[str, str, str]]:
    """range -> (max |d|, mean d, mean |d|) of a `bench.py curves` log."""
    log = (REPO_ROOT / path).read_text()
    return {r: (mx, mean, mean_abs) for r, mx, mean, mean_abs in
            re.findall(r"^steps_(\S+)\s+max\|d\| (\S+)\s+mean d (\S+), mean \|d\| (\S+) over", log, re.M)}


LATER_RANGES = ("11-50", "51-100", "101-200", "201-300")


def assert_curve_ranges_quoted(text: str, path: str) -> dict[str, tuple[str, str, str]]:
    """The paragraph quotes a curves log's max |d| over steps 1-10, then its mean |d| and mean d over
    the later ranges (as 'a / b / c / d'); returns the log's figures."""
    stats = curve_stats(path)
    assert f"max {stats['1-10'][0]} over steps 1–10" in text
    assert "mean |d| " + " / ".join(stats[r][2] for r in LATER_RANGES) in text
    assert "mean d " + " / ".join(stats[r][1].replace("-", "−") for r in LATER_RANGES) in text
    return stats


def test_bf16_stream_paragraph_matches_its_curves_and_the_seed_noise():
    text = " ".join(section("Same model function, bf16 stream.").split())
    stats = curve_stats("logs/bench/curves_bf16_stream_1gpu.txt")
    later = ("11-50", "51-100", "101-200", "201-300")
    assert f"max {stats['1-10'][0]} over steps 1–10" in text
    assert "mean |d| " + " / ".join(stats[r][2] for r in later) in text
    assert "mean d " + " / ".join(stats[r][1] for r in later) + " (d = after − before)" in text
    bpb = [float(first(r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+)", (REPO_ROOT / f"logs/bench/{name}.txt").read_text()))
           for name in ("curve_bf16_stream_1gpu", "curve_before_96342e1")]
    assert f"final val_bpb {bpb[0]:.5f} vs {bpb[1]:.5f} ({bpb[0] - bpb[1]:+.4f};" in text
    seeds = [curve_stats(f"logs/bench/curves_noise_seed{a}_vs_seed{b}.txt") for a, b in ((42, 1337), (42, 2024), (1337, 2024))]
    assert "mean |d| " + " / ".join(s["101-200"][2] for s in seeds) + " over steps 101–200" in text
    assert "mean d " + " / ".join(s["201-300"][1].replace("-", "−") for s in seeds) + " over steps 201–275" in text
    for name in ("curves_bf16_stream_1gpu", "curves_noise_seed42_vs_seed1337"):
        assert re.search(r"^settings_differ\s+(none|SEED=42->1337)\s", (REPO_ROOT / f"logs/bench/{name}.txt").read_text(), re.M)


def rotary_backward_ms(log: str, name_part: str = "") -> str:
    """The largest 88x (11 layers x 8 micro-steps) q/k RMS norm + rotary backward kernel of a profile log."""
    return re.search(rf"^\s+([\d.]+)\s+88x  triton_per_fused__fused_rms_norm__fused_rms_norm_backward_\S*{name_part}", log, re.M)[1]


def test_profile_paragraph_matches_the_profile_log():
    text = " ".join(section("Where a training step goes now").split())
    log = (REPO_ROOT / "logs/bench/profile_rope_buffers_h100.txt").read_text()
    assert "device                NVIDIA H100" in log
    ms, total = log_value(log, "ms_per_step"), float(log_value(log, "profile_total"))
    kinds = {k: float(log_value(log, f"profile_{k}")) for k in ("compiled", "attention", "matmul", "other", "memcpy/memset")}
    assert f"{ms} ms/step, MFU {float(log_value(log, 'mfu_measured_peak').rstrip('%')):.1f}%" in text
    assert (f"per step {total} ms, of which Triton-compiled elementwise work {kinds['compiled']} ms" in text
            and f"cuDNN attention {kinds['attention']} ms and GEMMs {kinds['matmul']} ms" in text)
    assert f"other {kinds['other'] + kinds['memcpy/memset']:.1f} ms; the remaining ≈{float(ms) - total:.0f} ms" in text
    older = {name: (REPO_ROOT / f"logs/bench/{name}.txt").read_text() for name in ("profile_bf16_stream_h100", "profile_mix_order_off")}
    assert f"elementwise work {kinds['compiled']} ms ({log_value(older['profile_bf16_stream_h100'], 'profile_compiled')} before" in text
    assert f"; {log_value(older['profile_mix_order_off'], 'profile_compiled')} with the fp32 stream" in text
    assert "_cos_" not in re.search(r"^\s+[\d.]+\s+88x  triton_per_fused__fused_rms_norm__fused_rms_norm_backward_\S*", log, re.M)[0]
    assert (f"rotary backward kernel, {rotary_backward_ms(log)} ms ({rotary_backward_ms(older['profile_bf16_stream_h100'], '_cos_')} ms while "
            f"inductor recomputed the cos/sin tables inside it, {rotary_backward_ms(older['profile_mix_order_off'], '_cos_')} ms with the fp32 stream") in text
    leaky = [re.search(rf"^\s+([\d.]+)\s+88x  triton_poi_fused_\S*_leaky_relu_{kind}", log, re.M)[1] for kind in ("leaky_relu_backward", "pow")]
    assert f"LeakyReLU² backward ({leaky[0]} ms) and forward ({leaky[1]} ms)" in text
    assert f"from {kinds['compiled']:.0f} to about {kinds['compiled'] - (float(ms) - 574):.0f} ms" in text


def test_rotary_kernel_figures_of_the_speed_bullet_are_the_two_h100_profiles():
    text = " ".join(section("Before/after, same GPU").split())
    now, before = ((REPO_ROOT / f"logs/bench/{name}.txt").read_text() for name in ("profile_rope_buffers_h100", "profile_bf16_stream_h100"))
    assert f"rotary backward kernel went from {rotary_backward_ms(before, '_cos_')} to {rotary_backward_ms(now)} ms per step" in text


def eval_phase(log: str, phase: str, call: str = "2/2\\*") -> tuple[float, float]:
    """(seconds, tokens/s per GPU) of one call of a phase in a `bench.py eval` table."""
    seconds, tokens = re.search(rf"^{phase}\s+{call}\s+(\S+)\s+\S+\s+999424\s+(\S+)", log, re.M).groups()
    return float(seconds), float(tokens)


def test_eval_per_phase_table_matches_its_log():
    section_text = section("Eval per phase now")
    rows = table_rows(section_text)
    log = (REPO_ROOT / "logs/bench/eval_untrained_1gpu_h100.txt").read_text()
    assert "device:NVIDIA H100 80GB HBM3 world_size:1" in log and "val_targets           999424" in log and len(rows) == 4
    for row, phase in zip(rows, ("roundtrip", "sliding", "ngram", "ttt")):
        seconds, tokens = re.search(rf"^{phase}\s+2/2\*\s+(\S+)\s+\S+\s+999424\s+(\S+)", log, re.M).groups()
        assert row[1:3] == [seconds, f"{round(float(tokens)):,}"]
        inside = re.findall(rf"^eval:{phase} seconds:\S+ targets:\d+ \S+ score_seconds:(\S+)(?: mixer_seconds:(\S+))?(?: ttt_train_seconds:(\S+))?$", log, re.M)[-1]
        if phase in ("ngram", "ttt"):
            assert row[3].startswith(f"scoring {inside[0]} s, mixer {inside[1]} s")
    chunks = int(re.search(r"^eval:ttt chunk:\d+/(\d+) ", log, re.M)[1])
    assert rows[3][3].endswith(f"TTT training {inside[2]} s ({float(inside[2]) / (chunks - 1):.3f} s per chunk)")
    text = " ".join(section_text.split())
    sliding, ttt = eval_phase(log, "sliding")[1], eval_phase(log, "ttt")[1]
    assert f"sliding window {round(sliding):,} / 82,000 = **{sliding / 82000:.2f}×** (the target is 2×: not met)" in text and sliding < 2 * 82000
    assert f"TTT + mixer {round(ttt):,} / 26,000 = **{ttt / 26000:.2f}×** (met)" in text and ttt >= 2 * 26000
    compile_s = [eval_phase(log, p, "1/2")[0] - eval_phase(log, p)[0] for p in ("roundtrip", "ttt")]
    assert f"adds the compile: {compile_s[0]:.1f} s for the model's graph (non-sliding pass), {compile_s[1]:.1f} s for the TTT step" in text


def test_two_gpu_eval_table_matches_its_logs():
    rows = table_rows(section("Eval on 2 GPUs"))
    logs = {n: (REPO_ROOT / f"logs/bench/eval_untrained_{n}gpu_s6.txt").read_text() for n in (1, 2)}
    assert "device                NVIDIA H200 x2" in logs[2] and "device                NVIDIA H200 x1" in logs[1]
    assert [r[0] for r in rows] == ["sliding window", "sliding + mixer", "TTT + mixer pass"]
    for row, phase in zip(rows, ("sliding", "ngram", "ttt")):
        one, two = eval_phase(logs[1], phase)[1], eval_phase(logs[2], phase)[1]
        assert row[1:] == [f"{round(one):,}", f"{round(two):,}", f"{100 * two / one:.1f}%"]
    text = " ".join(section("Eval on 2 GPUs").split())
    train = [re.findall(r"^eval:ttt seconds:.* ttt_train_seconds:(\S+)$", logs[n], re.M)[-1] for n in (1, 2)]
    assert f"TTT training took {train[0]} s on 1 GPU and {train[1]} s on 2 for the 30 trained chunks" in text


def last_eval_line(log: str, phase: str) -> dict[str, str]:
    """The fields of a phase's last `eval:PHASE seconds:...` line (its second call)."""
    line = re.findall(rf"^eval:{phase} (seconds:.*)$", log, re.M)[-1]
    return dict(field.split(":", 1) for field in line.split())


def bench_bpb(log: str, phase: str, call: str) -> str:
    return re.search(rf"^bench_eval phase:{phase} repeat:{call} .* val_bpb:(\S+)", log, re.M)[1]


TTT_GRAPH_LOGS = [("1 H100", "4096 (2)", "eval_ttt_c4096"), ("1 H100", "32768 (16)", "eval_ttt_c32768"),
                  ("2 H200", "8192 (2)", "eval_ttt_2gpu_c8192"), ("2 H200", "32768 (8)", "eval_ttt_2gpu_c32768")]


@pytest.mark.parametrize("index", range(4))
def test_ttt_graphs_table_matches_the_eval_logs(index):
    gpus, chunk, name = TTT_GRAPH_LOGS[index]
    rows = table_rows(section("TTT step as CUDA graphs"))
    assert len(rows) == 4
    row = rows[index]
    logs = [bench_log(f"{name}_{side}") for side in ("head", "ttt_graphs_s7")]
    assert row[:2] == [gpus, chunk] and row[6] == f"`logs/bench/{name}_head.txt`, `logs/bench/{name}_ttt_graphs_s7.txt`"
    count, card = gpus.split()
    for log in logs:
        assert f"device                NVIDIA {card}" in log and log_value(log, "world_size") == count
        assert f"hyperparameter TTT_CHUNK_TOKENS={chunk.split()[0]}" in log
    lines = [last_eval_line(log, "ttt") for log in logs]
    assert row[2] == f"{lines[0]['ttt_train_seconds']} → {lines[1]['ttt_train_seconds']} s"
    passes = [re.search(r"^ttt\s+2/2\*\s+(\S+)\s+\S+\s+999424\s+(\S+)", log, re.M).groups() for log in logs]
    assert row[3] == f"{passes[0][0]} → {passes[1][0]} s"
    assert row[4] == f"{round(float(passes[0][1])):,} → {round(float(passes[1][1])):,}"
    assert row[5] == f"{bench_bpb(logs[0], 'ttt', '2/2')} → {bench_bpb(logs[1], 'ttt', '2/2')}"


def test_ttt_graphs_speedups_and_bpb_spread_are_the_logs():
    text = " ".join(section("TTT step as CUDA graphs").split())
    train = {name: [float(last_eval_line(bench_log(f"{name}_{side}"), "ttt")["ttt_train_seconds"]) for side in ("head", "ttt_graphs_s7")]
             for _, _, name in TTT_GRAPH_LOGS}
    one, two = train["eval_ttt_c4096"], train["eval_ttt_2gpu_c8192"]
    assert f"TTT training is {one[0] / one[1]:.1f}× faster on one H100 and {two[0] / two[1]:.1f}× on two H200s" in text
    assert train["eval_ttt_c32768"][0] == train["eval_ttt_c32768"][1]
    assert train["eval_ttt_2gpu_c32768"][1] == train["eval_ttt_2gpu_c32768"][0] / 2  # "it now halves"
    bpb = [[bench_bpb(bench_log(f"eval_ttt_c4096_{side}"), "ttt", f"{r}/2") for r in (1, 2)] for side in ("head", "ttt_graphs_s7")]
    assert f"{bpb[0][0]} and {bpb[0][1]} before, {bpb[1][0]} and {bpb[1][1]} after" in text
    spread = lambda pair: abs(float(pair[0]) - float(pair[1]))  # noqa: E731
    assert abs(float(bpb[0][1]) - float(bpb[1][1])) <= max(spread(bpb[0]), spread(bpb[1]))


@needs_git
def test_the_eval_abs_of_session_7_ran_what_the_readme_says():
    """Graphs A/B: cf7ebf4 against f25b638's code with the comment lines it ran with; mixer A/B:
    f25b638 against 750626a, exactly."""
    before, graphs, mixer = git_source("cf7ebf4"), git_source("f25b638"), git_source("750626a")
    ran_comments = graphs.replace(
        "        # A rank's share of a chunk is a few ms of GPU work, less than the CPU needs to launch its\n"
        "        # kernels one by one: forward and backward replay as CUDA graphs (mode reduce-overhead).\n",
        "        # On 8 GPUs a rank trains on 2 sequences per step: a few ms of GPU work, less than the CPU needs\n"
        "        # to launch its kernels one by one, so the step runs as a replayed CUDA graph.\n").replace(
        "torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are consumed\n",
        "torch.compiler.cudagraph_mark_step_begin()\n")
    assert ran_comments != graphs
    for _, _, name in TTT_GRAPH_LOGS:
        assert ran_sha(f"{name}_head") == sha(before) and ran_sha(f"{name}_ttt_graphs_s7") == sha(ran_comments)
    for name in ("eval_c4096", "eval_c4096_ngram"):
        assert ran_sha(f"{name}_f25b638") == sha(graphs) and ran_sha(f"{name}_mixer_nosync_s7") == sha(mixer)


def test_mixer_paragraph_matches_its_logs():
    text = " ".join(section("Mixer without host syncs").split())
    runs = {side: [bench_log(f"eval_c4096_{side}"), bench_log(f"eval_c4096_ngram_{side}")] for side in ("f25b638", "mixer_nosync_s7")}
    for logs in runs.values():
        for log in logs:
            assert "hyperparameter TTT_CHUNK_TOKENS=4096" in log and "device                NVIDIA H100" in log
            assert (bench_bpb(log, "ngram", "2/2"), re.search(r"^bench_eval phase:ngram repeat:2/2 .* mixed_bpb:(\S+)", log, re.M)[1]) \
                == ("4.161047", "2.278010")
    assert "identical BPB on both sides (val_bpb 4.161047, mixed 2.278010)" in text
    mixer = {side: [last_eval_line(log, "ngram")["mixer_seconds"] for log in logs] for side, logs in runs.items()}
    passes = {side: [f"{eval_phase(log, 'ngram')[0]:.3f}" for log in logs] for side, logs in runs.items()}
    old, new = mixer["f25b638"], mixer["mixer_nosync_s7"]
    assert f"sliding + mixer pass {old[0]} and {old[1]} → {new[0]} and {new[1]} s" in text
    old, new = passes["f25b638"], passes["mixer_nosync_s7"]
    assert f"the pass {old[0]} and {old[1]} → {new[0]} and {new[1]} s" in text
    ttt = [last_eval_line(runs[side][0], "ttt")["mixer_seconds"] for side in runs]
    ttt_pass = [f"{eval_phase(runs[side][0], 'ttt')[0]:.3f}" for side in runs]
    assert f"in the TTT + mixer pass the mixer {ttt[0]} → {ttt[1]} s, the pass {ttt_pass[0]} → {ttt_pass[1]} s" in text


def test_whole_eval_estimate_adds_up():
    text = " ".join(section("Whole eval on 8 H100s, estimated").split())
    h100 = (REPO_ROOT / "logs/bench/eval_untrained_1gpu_h100.txt").read_text()
    compile_s = [eval_phase(h100, p, "1/2")[0] - eval_phase(h100, p)[0] for p in ("roundtrip", "ttt")]
    assert f"compile: {compile_s[0]:.1f} + {compile_s[1]:.1f} ≈ {sum(compile_s):.0f} s" in text
    graphs = last_eval_line(bench_log("eval_ttt_c4096_ttt_graphs_s7"), "ttt")
    first_call = re.findall(r"^eval:ttt seconds:.* ttt_train_seconds:(\S+)$", bench_log("eval_ttt_c4096_ttt_graphs_s7"), re.M)[0]
    assert f"the TTT step's first call added {float(first_call) - float(graphs['ttt_train_seconds']):.1f} s" in text
    full, dev = 62_021_632, 999_424
    assert f"{math.ceil(full / 32_768):,} chunks of 32,768 targets" in text and f"dev val's {dev // 4096} chunks" in text
    one, two = full / dev / 8, full / dev / 8 * 2
    assert f"× {full:,} / {dev:,} / 8 = ×{one:.2f} (the 2-GPU runs at 8192: ×{two:.2f})" in text
    non_sliding = eval_phase(h100, "roundtrip")[0]
    assert f"2 × {non_sliding} s × {full / dev:.2f} / 8 ≈ {2 * non_sliding * full / dev / 8:.0f} s" in text
    ngram_log, ttt_log = bench_log("s8_laps_ngram_events"), bench_log("s8_laps_ttt_events")
    assert "hyperparameter TTT_CHUNK_TOKENS=8192" in bench_log("eval_ttt_2gpu_c8192_ttt_graphs_s7")
    for log in (ngram_log, ttt_log):
        assert "hyperparameter TTT_CHUNK_TOKENS=4096" in log and "hyperparameter EVAL_BATCH_SEQS=32" in log
        assert "device                NVIDIA H100 80GB HBM3 x1" in log
    ngram = eval_phase(ngram_log, "ngram")[0]
    pass1 = ngram * one
    assert f"pass 1, sliding + mixer (`ngram`): {ngram:.3f} s × {one:.2f} ≈ {pass1:.0f} s" in text
    ttt_one = eval_phase(ttt_log, "ttt")[0]
    ttt_two = eval_phase(bench_log("eval_ttt_2gpu_c8192_ttt_graphs_s7"), "ttt")[0]
    pass2 = [ttt_one * one, ttt_two * two]
    assert f"{ttt_one:.3f} s × {one:.2f} ≈ {pass2[0]:.0f} s" in text and f"{ttt_two:.3f} s × {two:.2f} ≈ {pass2[1]:.0f} s" in text
    older = [eval_phase(bench_log(n), "ttt")[0] for n in ("s8_laps_ttt_before", "s8_c4096_nosync_bs32")]
    assert f"the code before it took {older[0]:.3f} s on this one and {older[1]:.3f} s on another" in text
    fixed = sum(compile_s) + 2 * non_sliding * full / dev / 8
    assert f"Total **≈ {fixed + pass1 + pass2[0]:.0f}–{fixed + pass1 + pass2[1]:.0f} s**" in text
    assert f"is **≈ {fixed + pass2[0]:.0f}–{fixed + pass2[1]:.0f} s**, under the issue's 300 s aim" in text and fixed + pass2[1] < 300


S8_PAIRS = {"sliding window, call 1 (A B B A)": (("s8_sliding_before_r1", "s8_sliding_before_r2"), ("s8_sliding_nosync_r1", "s8_sliding_nosync_r2")),
            "sliding window, call 2": (("s8_c4096_before",), ("s8_c4096_nosync_bs32",)),
            "sliding + mixer (`ngram`), call 2": (("s8_c4096_before",), ("s8_c4096_nosync_bs32",)),
            "TTT + mixer (`ttt`), call 2": (("s8_c4096_before",), ("s8_c4096_nosync_bs32",))}


def test_host_sync_table_matches_the_eval_logs():
    """Each figure of "Scoring without host syncs" is read back from its log; the logs ran ff9842c
    (before) and d6fb001 (after) exactly, on an H100, with identical BPB on both sides."""
    rows = table_rows(section("Scoring without host syncs"))
    assert [r[0] for r in rows] == list(S8_PAIRS)
    for row in rows:
        sides = S8_PAIRS[row[0]]
        phase = "sliding" if row[0].startswith("sliding window") else re.search(r"`(\w+)`", row[0])[1]
        call = "2/3" if "call 1" in row[0] else "2/2"  # the second call of each phase (in call 1 the third is profiled)
        seconds = [[eval_phase(bench_log(n), phase, call + ("\\*" if call == "2/2" else ""))[0] for n in names] for names in sides]
        assert row[1:3] == [", ".join(f"{x:.3f}" for x in side) for side in seconds]
        speedup = statistics.mean(seconds[0]) / statistics.mean(seconds[1])
        assert row[3].startswith(f"**{speedup:.3f}×**") and speedup > 1
        for names in sides:
            assert all(f"`{n}.txt`" in row[4] or row[4] == "the same two" for n in names)
            for n in names:
                assert "device:NVIDIA H100 80GB HBM3" in bench_log(n)
        if phase != "ttt":
            assert {bench_bpb(bench_log(n), phase, call) for names in sides for n in names} == {"4.161047"}
    if IN_GIT:  # the sha checks need the commits
        before, after = git_source("ff9842c"), git_source("d6fb001")
        for names, code in zip(S8_PAIRS["sliding window, call 1 (A B B A)"] + S8_PAIRS["sliding window, call 2"], (before, after, before, after)):
            assert all(ran_sha(n) == sha(code) for n in names)
    text = " ".join(section("Scoring without host syncs").split())
    ttt = [bench_bpb(bench_log(n), "ttt", r) for n in ("s8_c4096_before", "s8_c4096_nosync_bs32") for r in ("1/2", "2/2")]
    assert f"its pass gave val_bpb {ttt[0]} and {ttt[1]} (first and second call) before, {ttt[2]} and {ttt[3]} after" in text
    assert re.search(r"^bench_eval phase:ngram repeat:2/2 .* mixed_bpb:2.278010$", bench_log("s8_c4096_nosync_bs32"), re.M)
    tokens = eval_phase(bench_log("s8_c4096_nosync_bs32"), "sliding")[1]
    assert f"Sliding is now {round(tokens):,} tokens/s per GPU (call 2) = **{tokens / 82000:.2f}×** the reference's 82,000 (the target is 2×: not met)" in text
    assert tokens < 2 * 82000


def test_calls_per_step_paragraph_matches_the_profile_log():
    text = " ".join(section("Kernels by calls per step").split())
    log = bench_log("profile_s7_h100")
    assert log_value(log, "profile_total") + " ms of kernel time per step" in text
    rows = {m[2]: (m[1], m[3]) for m in re.finditer(r"^\s+(\S+)\s+(\d+)x  (\w.*)$", log.split("time by calls per step:")[1].split("top kernels")[0], re.M)}
    total88, kinds88 = rows["88"]
    split88 = dict(part.split() for part in kinds88.split(", "))
    assert f"run 88× per step (once per layer and micro-step, one kernel shared by all 11 layers) take {total88} ms " \
           f"(attention {split88['attention']}, elementwise {split88['compiled']}, GEMMs {split88['matmul']})" in text
    total8, kinds8 = rows["8"]
    assert f"kernels run 8× take {total8} ms, of which elementwise {dict(p.split() for p in kinds8.split(', '))['compiled']}" in text
    eights = [float(m[1]) for m in re.finditer(r"^\s+(\S+)\s+8x  triton", log.split("top kernels")[1], re.M)]
    assert f"takes {eights[0]:.2f} ms" in text and f"the next {eights[1]:.2f}, {eights[2]:.2f} and {eights[3]:.2f} ms" in text
    listed = [float(m[1]) for m in re.finditer(r"^\s+(\S+)\s+\d+x  ", log.split("top kernels")[1], re.M)]
    assert min(listed) == eights[-1]  # the list stops at the last 8x kernel quoted: every unlisted kernel takes at most that


def test_rejected_inductor_switches_are_quoted_from_their_logs():
    text = " ".join(README.split())
    child = {f"{side}_r{r}": (REPO_ROOT / f"logs/bench/ab_coordinate_descent_{side}_r{r}.txt").read_text()
             for side, r in (("against", 1), ("program", 1), ("program", 2))}
    assert "program_env:TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1" in (REPO_ROOT / "logs/bench/ab_coordinate_descent.txt").read_text()
    ms = {k: log_value(v, "ms_per_step") for k, v in child.items()}
    warm = {k: first(r"^compile_warmup done steps:3 seconds:(\S+)", v) for k, v in child.items()}
    assert f"{ms['against_r1']} → {ms['program_r1']} and {ms['program_r2']} ms" in text
    assert f"first compile warm-up of {warm['program_r1']} s instead of {warm['against_r1']} s ({warm['program_r2']} s on its second run" in text
    autotune = (REPO_ROOT / "logs/bench/ab_max_autotune_gemm_program_r1.txt").read_text()
    assert "compile_warmup: 3 steps" in autotune and "compile_warmup done" not in autotune
    pointwise = bench_log("ab_max_autotune_pointwise_s9_h200")
    assert "program_env:TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE=1" in pointwise and "rounds:1" in pointwise
    sides = {side: bench_log(f"ab_max_autotune_pointwise_s9_h200_{side}_r1") for side in ("against", "program")}
    assert ran_sha("ab_max_autotune_pointwise_s9_h200_against_r1") == ran_sha("ab_max_autotune_pointwise_s9_h200_program_r1") == ran_sha("profile_bandwidth_s9_h200")
    assert (f"{log_value(pointwise, 'against_ms_per_step')} → {log_value(pointwise, 'program_ms_per_step')} ms "
            f"({log_value(pointwise, 'speedup').rstrip('x')}×; compile warm-up "
            + " → ".join(first(r"^compile_warmup done steps:3 seconds:(\S+)", sides[k]) for k in ("against", "program")) + " s") in text


@needs_git
def test_the_single_change_abs_of_0081bab_ran_what_the_readme_says():
    """The rotary and bincount A/Bs ran bb815a3 against a variant that is bb815a3 plus that one change
    (0081bab is both); the late status read ran against 0081bab itself."""
    def ran(name, side):
        return ran_sha(f"{name}_{side}_r1")

    before, now = git_source("bb815a3"), git_source("0081bab")
    old_count = "delta = torch.bincount(keys, minlength=self.counts.numel()).float()\n"
    new_count = now[now.index("delta = torch.zeros_like(self.counts)"):].split("\n", 1)[0] + "\n"
    assert old_count in before and new_count in now
    for name in ("ab_rope_buffers", "ab_no_bincount_sync", "ab_qk_fp32"):
        assert ran(name, "against") == sha(before)
    assert ran("ab_rope_buffers", "program") == sha(now.replace(new_count, old_count))
    assert ran("ab_no_bincount_sync", "program") == sha(before.replace(old_count, new_count))
    assert ran("ab_lagged_status_s6", "against") == sha(now)


def test_end_to_end_row_of_the_current_code_matches_its_log():
    row = next(line for line in README.splitlines() if "logs/dev/2026-11-28_h100_session7_end_to_end_40steps.txt" in line)
    log = (REPO_ROOT / "logs/dev/2026-11-28_h100_session7_end_to_end_40steps.txt").read_text()
    audit = re.search(r"^ngram_audit positions:(\d+) max_abs_err:(\S+)$", log, re.M)
    assert f"max_abs_err {audit[2]} over {int(audit[1]):,} positions" in row and float(audit[2]) < 1e-6
    ttt = last_eval_line(log, "ngram_ttt")
    assert f"the TTT + mixer pass {ttt['seconds']} s, of which TTT training {ttt['ttt_train_seconds']} s" in row
    warm = last_eval_line(bench_log("eval_ttt_c32768_ttt_graphs_s7"), "ttt")["ttt_train_seconds"]
    assert f"a warm call's TTT training takes {warm} s" in row
    for line in ("final_int6_roundtrip", "final_int6_sliding_window", "ngram_only", "ttt_only", "final_ngram_ttt", "Total submission size"):
        assert re.search(rf"^{line} ", log, re.M)  # every pass ran to its result line
    if (REPO_ROOT / ".git").exists():  # the run's code is 750626a's train_gpt.py
        assert f"code_sha256:{sha(git_source('750626a'))}" in log


def cudnn_ms(log: str) -> float:
    """cuDNN's kernels in a profile log's top list (all of them there: its attention kernels are the largest)."""
    top = log.split("top kernels, ms per step:")[1]
    return sum(float(m[1]) for m in re.finditer(r"^\s+(\S+)\s+\d+x  (cudnn|void cudnn)", top, re.M))


def compiled_ms(log: str) -> float:
    """The compiled kernels' time of a --bandwidth log (the kernels with a byte estimate)."""
    return float(re.search(r"^compiled_gb_per_step\s+\S+ GB\s+\d+ kernels, ([\d.]+) ms", log, re.M)[1])


def sliding_kernel_split(log: str) -> tuple[float, float, float]:
    """(cuDNN attention, Triton, Triton counted as attention) ms of a sliding-pass profile logged before
    bench.py classified Triton kernels first. Its attention kind is cuDNN's kernels (all in the top list:
    the forward kernel is the largest of all) plus Triton kernels named after the attention op."""
    kinds = {k: float(log_value(log, f"profile_{k}")) for k in ("compiled", "matmul", "attention", "memcpy/memset", "other")}
    top = log.split("top kernels, ms per step:")[1]
    cudnn = cudnn_ms(log)
    assert re.search(r"^\s+\S+\s+5368x  triton_per_fused\S*_scaled_dot_product_cudnn_attention_", top, re.M)
    miscounted = kinds["attention"] - cudnn
    triton = float(log_value(log, "profile_total")) - kinds["matmul"] - cudnn - kinds["memcpy/memset"] - kinds["other"]
    assert triton == pytest.approx(kinds["compiled"] + miscounted, abs=0.2)
    return cudnn, triton, miscounted


def test_host_sync_profile_and_batch_size_figures_are_the_logs():
    text = " ".join(section("Scoring without host syncs").split())
    totals = {n: log_value(bench_log(n), "profile_total") for n in ("s8_sliding_before_r1", "s8_sliding_before_r2", "s8_sliding_nosync_r1", "s8_sliding_nosync_r2")}
    assert (f"add up to the same {float(totals['s8_sliding_before_r1']):,.1f} and {float(totals['s8_sliding_before_r2']):,.1f} ms before and "
            f"{float(totals['s8_sliding_nosync_r1']):,.1f} and {float(totals['s8_sliding_nosync_r2']):,.1f} ms after") in text
    busy = [float(totals[n]) / 1000 / eval_phase(bench_log(n), "sliding", "2/3")[0] for n in totals]
    assert f"busy {100 * busy[0]:.1f}% and {100 * busy[1]:.1f}% of the unprofiled pass before and {100 * busy[3]:.1f}% after" in text
    assert abs(busy[2] - busy[3]) < 0.001
    log = bench_log("s8_sliding_nosync_r2")
    kinds = {k: float(log_value(log, f"profile_{k}")) for k in ("compiled", "matmul", "attention")}
    top = log.split("top kernels, ms per step:")[1]
    cudnn, triton, miscounted = sliding_kernel_split(log)
    assert (f"Of the {float(totals['s8_sliding_nosync_r2']):,.1f} ms, Triton (elementwise) kernels take {triton:,.1f}, "
            f"GEMMs {kinds['matmul']:,.1f} and cuDNN's attention kernel {cudnn:,.1f}") in text
    assert (f"its `profile_` lines say {kinds['compiled']:,.1f} compiled and {kinds['attention']:,.1f} attention, "
            f"counting {miscounted:,.1f} ms of Triton kernels as attention") in text
    leaky = re.search(r"^\s+(\S+)\s+5368x  triton_poi_fused__to_copy__unsafe_view_leaky_relu_pow", top, re.M)[1]
    assert f"the LeakyReLU² forward, {leaky} ms" in text
    blocks = sorted(float(m[1]) for m in re.finditer(r"^\s+(\S+)\s+488x  triton_per_fused__fused_rms_norm_\S*_sigmoid_slice", top, re.M))
    assert len(blocks) == 11 and f"then 10 kernels of {blocks[1]:.2f}–{blocks[-1]:.2f} ms and one of {blocks[0]:.2f} ms" in text
    target_s = 999_424 / 164_000
    assert f"(164,000 tokens/s, {target_s:.2f} s for the dev val) with GEMMs and attention as they are ({(kinds['matmul'] + cudnn) / 1000:.2f} s)" in text
    assert f"leaves ≤ {target_s - (kinds['matmul'] + cudnn) / 1000:.2f} s for all elementwise work, against {triton / 1000:.2f} s now" in text
    bs32, bs64 = bench_log("s8_c4096_nosync_bs32"), bench_log("s8_c4096_nosync_bs64")
    assert "hyperparameter EVAL_BATCH_SEQS=64" in bs64
    a, b = ({p: f"{eval_phase(log, p)[0]:.3f}" for p in ("sliding", "ngram", "ttt")} for log in (bs32, bs64))
    assert f"sliding {a['sliding']} → {b['sliding']} s, but `ngram` {a['ngram']} → {b['ngram']} s and `ttt` {a['ttt']} → {b['ttt']} s" in text


def test_session_8_rejections_are_quoted_from_their_logs():
    text = " ".join(README.split("- Rejected, session 8 (one H100):", 1)[1].split("\n\n", 1)[0].split())
    ab = bench_log("ab_x0_stored_s8_h100")
    against, program = log_value(ab, "against_ms_per_step"), log_value(ab, "program_ms_per_step")
    peaks = re.findall(r"peak (\d+) MiB", ab)
    assert f"{against} → {program} ms ({float(against) / float(program):.3f}×), peak {int(peaks[0]):,} → {int(peaks[1]):,} MiB" in text
    assert ran_sha("ab_x0_stored_s8_h100_against_r1") == ran_sha("s8_c4096_nosync_bs32") != ran_sha("ab_x0_stored_s8_h100_program_r1") == ran_sha("s8_x0_stored_bs64")
    slow, fast = eval_phase(bench_log("s8_c4096_nosync_bs64"), "sliding")[0], eval_phase(bench_log("s8_x0_stored_bs64"), "sliding")[0]
    assert f"7.717 → 7.640 s, {slow / fast:.3f}×" in text and (slow, fast) == (7.717, 7.640)
    probe = {m[1].strip(): float(m[2]) for m in re.finditer(r"^(\S.*?)\s+([\d.]+) ms$", bench_log("mlp_fusion_probe_s8_h100"), re.M)}
    assert "proj fwd 0.000e+00" in bench_log("mlp_fusion_probe_s8_h100") and "grad_h 0.000e+00" in bench_log("mlp_fusion_probe_s8_h100")
    fwd = (probe["proj fwd: act kernel + cuBLAS (inductor)"], probe["proj fwd: Triton mm + act prologue"])
    bwd = (probe["grad_h: cuBLAS + deriv kernel (inductor)"], probe["grad_h: Triton mm + deriv epilogue"])
    assert f"prologue {fwd[0]:.4f} → {fwd[1]:.4f} ms" in text and f"epilogue {bwd[0]:.4f} → {bwd[1]:.4f} ms" in text
    assert f"at most ({fwd[0] - fwd[1]:.4f} + {bwd[0] - bwd[1]:.4f}) × 88 = {(fwd[0] - fwd[1] + bwd[0] - bwd[1]) * 88:.0f} ms per step" in text
    triton = " / ".join(f"{probe[k]:.4f}" for k in ("proj fwd: Triton mm, no prologue", "grad_h: Triton mm, no epilogue", "fc fwd: Triton x @ wf^T"))
    cublas = " / ".join(f"{probe[k]:.4f}" for k in ("proj fwd: cuBLAS mm only", "grad_h: cuBLAS mm only", "fc fwd: cuBLAS x @ wf^T"))
    assert f"runs {triton} ms where cuBLAS takes {cublas}" in text


def test_mlp_fusion_probe_log_has_the_rows_of_its_script():
    """The probe needs CUDA and Triton (no CPU twin): here its source compiles and names every row its log has, in order."""
    source = (REPO_ROOT / "tools/mlp_fusion_probe.py").read_text()
    compile(source, "mlp_fusion_probe.py", "exec")
    labels = re.findall(r'rows\.append\(\("([^"]+)"', source)
    logged = [m[1].strip() for m in re.finditer(r"^(\S.*?)\s+[\d.]+ ms$", bench_log("mlp_fusion_probe_s8_h100"), re.M)]
    assert labels == logged and len(labels) == 13


def test_event_timing_table_matches_the_eval_logs():
    """"Eval parts timed with CUDA events": each figure from its log; the logs ran d6fb001 and caee05a exactly."""
    section_text = section("Eval parts timed with CUDA events")
    rows = table_rows(section_text)
    assert [r[0] for r in rows] == ["sliding + mixer (`ngram`)", "TTT + mixer (`ttt`)"]
    for row, phase in zip(rows, ("ngram", "ttt")):
        before, after = bench_log(f"s8_laps_{phase}_before"), bench_log(f"s8_laps_{phase}_events")
        a, b = eval_phase(before, phase)[0], eval_phase(after, phase)[0]
        assert row[1:4] == [f"{a:.3f}", f"{b:.3f}", f"**{a / b:.3f}×**"] and a > b
        mixed = [re.search(rf"^bench_eval phase:{phase} repeat:2/2 .* mixed_bpb:(\S+)$", log, re.M)[1] for log in (before, after)]
        assert row[4] == f"{bench_bpb(before, phase, '2/2')} → {bench_bpb(after, phase, '2/2')} (mixed {mixed[0]} → {mixed[1]})"
        assert row[5] == f"`s8_laps_{phase}_before.txt`, `s8_laps_{phase}_events.txt`"
        assert "hyperparameter TTT_CHUNK_TOKENS=4096" in before and "hyperparameter TTT_CHUNK_TOKENS=4096" in after
    assert bench_bpb(bench_log("s8_laps_ngram_before"), "ngram", "2/2") == bench_bpb(bench_log("s8_laps_ngram_events"), "ngram", "2/2")
    text = " ".join(section_text.split())
    mixer = {(p, side): last_eval_line(bench_log(f"s8_laps_{p}_{side}"), p)["mixer_seconds"] for p in ("ngram", "ttt") for side in ("before", "events")}
    assert (f"the mixer's share fell from {mixer['ngram', 'before']} to {mixer['ngram', 'events']} s (`ngram`) and from "
            f"{mixer['ttt', 'before']} to {mixer['ttt', 'events']} s (`ttt`)") in text
    call2 = [f"{eval_phase(bench_log('s8_c4096_nosync_bs32'), p)[0]:.3f}" for p in ("ngram", "ttt")]
    call4 = [f"{eval_phase(bench_log(f's8_laps_{p}_before'), p)[0]:.3f}" for p in ("ngram", "ttt")]
    assert f"took {call2[0]} and {call2[1]} s on call 2's H100 and {call4[0]} and {call4[1]} s on this one" in text
    if IN_GIT:  # the sha checks need the commits
        before, after = sha(git_source("d6fb001")), sha(git_source("caee05a"))
        assert {ran_sha(f"s8_laps_{p}_before") for p in ("ngram", "ttt")} == {before, ran_sha("s8_c4096_nosync_bs32")}
        assert {ran_sha(f"s8_laps_{p}_events") for p in ("ngram", "ttt")} == {after}


def test_folded_scales_bullet_and_curves_paragraph_are_their_logs():
    bullet = speed_bullet("Residual scales on the weights**")
    compare = bench_log("ab_folded_scales_s9_h200")
    before, after = log_value(compare, "against_ms_per_step"), log_value(compare, "program_ms_per_step")
    peaks = [f"{int(p):,}" for p in re.findall(r"^(?:against|program)_ms_per_step .*; peak (\d+) MiB$", compare, re.M)]
    assert f"{before} → {after} ms, **{log_value(compare, 'speedup').rstrip('x')}×**, peak {peaks[0]} → {peaks[1]} MiB" in bullet
    curves = {name: bench_log(name) for name in ("curve_head_s9_h200", "curve_folded_scales_s9_h200")}
    step_ms = [float(re.findall(r"^step:285/285 .* step_avg:([\d.]+)ms", log, re.M)[-1]) for log in curves.values()]
    assert f"{step_ms[0]} → {step_ms[1]} ms/step ({step_ms[0] / step_ms[1]:.3f}×)" in bullet
    gb = [float(log_value(bench_log(name), "compiled_gb_per_step")) for name in ("profile_bandwidth_head_s9_h200", "profile_bandwidth_s9_h200")]
    assert f"fell from {gb[0]:.2f} to {gb[1]:.2f} GB ({100 * (gb[1] / gb[0] - 1):.1f}%".replace("-", "−") in bullet

    text = " ".join(section("Same model function, residual scales on the weights.").split())
    assert_curve_ranges_quoted(text, "logs/bench/curves_folded_scales_s9_h200.txt")
    assert re.search(r"^settings_differ\s+none\s", bench_log("curves_folded_scales_s9_h200"), re.M)
    final = {k: [first(rf"^{k} val_loss:\S+ val_bpb:(\S+)", log) for log in curves.values()] for k in ("final_ngram_ttt", "final_int6_sliding_window")}
    assert f"(TTT + mixer) {float(final['final_ngram_ttt'][0]):.6f} vs {float(final['final_ngram_ttt'][1]):.6f}" in text
    assert f"sliding window {float(final['final_int6_sliding_window'][0]):.6f} vs {float(final['final_int6_sliding_window'][1]):.6f}" in text
    seeds = [float(curve_stats(f"logs/bench/curves_noise_seed{a}_vs_seed{b}.txt")["101-200"][2]) for a, b in ((42, 1337), (42, 2024), (1337, 2024))]
    assert f"(mean |d| {min(seeds):.4f}–{max(seeds):.4f} over steps 101–200)" in text


@needs_git
def test_session_9_logs_ran_the_commits_the_readme_names():
    for name, commit in (("curve_head_s9_h200", "9b0967d"), ("curve_folded_scales_s9_h200", "ee6ab13"),
                         ("profile_bandwidth_head_s9_h200", "9b0967d"), ("profile_bandwidth_s9_h200", "ee6ab13"),
                         ("eval_bandwidth_s9_h200", "ee6ab13"), ("dump_s9_h200", "ee6ab13")):
        assert ran_sha(name) == sha(git_source(commit)), name


def test_elementwise_bandwidth_paragraph_is_the_logs():
    text = " ".join(section("Elementwise work against memory bandwidth").split())
    train = bench_log("profile_bandwidth_s9_h200")
    gb, ms = float(log_value(train, "compiled_gb_per_step")), compiled_ms(train)
    copy, floor = float(log_value(train, "copy_bandwidth")), float(log_value(train, "compiled_floor"))
    assert f"move {gb:.2f} GB per step in {ms} ms: {float(log_value(train, 'compiled_gb_per_s')):,.0f} GB/s" in text
    assert f"{1000 * gb / ms / copy:.1%} of the {copy:,.0f} GB/s copy bandwidth" in text
    assert f"would take {floor} ms, so better elementwise kernels could save at most {ms - floor:.0f} ms" in text
    worst = re.search(r"^\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+88x  triton_per_fused__fused_rms_norm__fused_rms_norm_backward_\S*_unsqueeze_", train, re.M)
    assert worst.start() == re.search(r"^\s+[\d.]+\s+[\d.]+\s+\d+\s+\d+x  triton", train, re.M).start()  # the first listed: furthest over
    assert f"{worst[2]} ms at {int(worst[3]):,} GB/s, {worst[1]} ms over" in text
    k = re.search(r"^\s+[\d.]+\s+([\d.]+)\s+(\d+)\s+88x  triton_per_fused__fused_rms_norm__fused_rms_norm_backward_\S*_transpose_view_\d+$", train, re.M)
    assert f"yet {float(worst[2]) / float(k[1]):.2f}× k's {k[1]} ms ({int(k[2]):,} GB/s)" in text

    h100 = bench_log("profile_s7_h100")
    cudnn = cudnn_ms(h100)
    gemm = float(log_value(h100, "profile_matmul"))
    assert f"cuDNN's attention kernels take {cudnn:.1f} ms per step and the GEMMs {gemm} ms" in text
    assert f"574 ms leaves {574 - cudnn - gemm:.1f} ms" in text
    assert f"{gb:.2f} GB at the H100's peak bandwidth of 3.35 TB/s" in text and f"take {gb / 3.35:.1f} ms on their own" in text
    assert 574 - cudnn - gemm < gb / 3.35
    over_log = bench_log("inplace_overcount_s9_h200")
    over_gb, over_n = re.search(r"^overcount_gb_per_step (\S+) over (\d+) kernels$", over_log, re.M).groups()
    assert f"finds {over_gb} GB per step of such arguments in {over_n} kernels" in text
    assert f"the other {gb - float(over_gb):.2f} GB still take {(gb - float(over_gb)) / 3.35:.1f} ms at 3.35 TB/s" in text
    assert 574 - cudnn - gemm < (gb - float(over_gb)) / 3.35
    corrected_floor = 1000 * (gb - float(over_gb)) / copy
    assert f"and {corrected_floor:.1f} ms at the H200's copy bandwidth, so better elementwise kernels could save at most {ms - corrected_floor:.0f} ms per step there, not {ms - floor:.0f})" in text
    written = {m[2]: float(m[1]) for m in re.finditer(r"^\s+\S+\s+\d+\s+(\S+)\s+(triton\S+)$", over_log, re.M)}
    rates = []
    q_name, k_name = (train[m.start():].split("\n", 1)[0].split()[-1] for m in (worst, k))
    for kernel_ms, gbps, name in ((worst[2], worst[3], q_name), (k[1], k[2], k_name)):
        launch_gb = float(kernel_ms) / 1000 * float(gbps) / 88
        rates.append((launch_gb - written[name] / 1000) * 88 / (float(kernel_ms) / 1000))
    assert f"without those {written[q_name]} and {written[k_name]} MB per launch, q moves its bytes at {rates[0]:,.0f} GB/s and k at {rates[1]:,.0f} GB/s" in text
    assert f"3.2 ms of `profile_s7_h100.txt`'s {float(log_value(h100, 'profile_attention'))} ms" in text
    assert f"{float(log_value(h100, 'profile_attention')) - cudnn:.1f}" == "3.2"

    sliding = bench_log("eval_bandwidth_s9_h200")
    sgb, sms = float(log_value(sliding, "compiled_gb_per_step")), compiled_ms(sliding)
    scopy = float(log_value(sliding, "copy_bandwidth"))
    assert f"{sgb:,.2f} GB in {sms:,.1f} ms ({1000 * sgb / sms / scopy:.1%} of the {scopy:,.0f} GB/s copy bandwidth; floor {float(log_value(sliding, 'compiled_floor')):,.1f} ms)" in text
    cudnn_s, triton_s, miscounted = sliding_kernel_split(bench_log("s8_sliding_nosync_r2"))
    gemm_s = float(log_value(bench_log("s8_sliding_nosync_r2"), "profile_matmul"))
    target_s = 999_424 / 164_000
    assert f"less cuDNN's attention and the GEMMs ({(cudnn_s + gemm_s) / 1000:.2f} s" in text
    assert f"leaves {target_s - (cudnn_s + gemm_s) / 1000:.2f} s, and {sgb:,.2f} GB at 3.35 TB/s take {sgb / 3350:.2f} s" in text
    assert f"holds unless it exceeds {100 * (1 - (target_s - (cudnn_s + gemm_s) / 1000) / (sgb / 3350)):.0f}%" in text
    assert f"{miscounted:,.1f} ms of `s8_sliding_nosync_r2.txt`'s {float(log_value(bench_log('s8_sliding_nosync_r2'), 'profile_attention')):,.1f} ms" in text
    # the training paragraph's note on its own profile
    rope = bench_log("profile_rope_buffers_h100")
    rope_cudnn = cudnn_ms(rope)
    note = " ".join(section("Where a training step goes now").split())
    assert f"the attention figure includes {float(log_value(rope, 'profile_attention')) - rope_cudnn:.1f} ms of a Triton kernel" in note


def other_side(text: str, diff: str, reverse: bool = False) -> str:
    """Apply a unified diff of one file to `text` (its "a" side), or with reverse=True take `text` as
    its "b" side and return the "a" side."""
    lines, out, at = text.splitlines(keepends=True), [], 0
    gone, added = ("+", "-") if reverse else ("-", "+")  # lines of `text` the result loses / gains
    for hunk in re.split(r"^@@ ", diff, flags=re.M)[1:]:
        header, *body = hunk.splitlines(keepends=True)
        start = int(re.match(r"-(\d+)(?:,\d+)? \+(\d+)", header)[2 if reverse else 1]) - 1
        out += lines[at:start]
        at = start
        for line in body:
            if line.startswith((" ", gone)):  # a line of `text`: kept (context) or dropped
                assert lines[at].rstrip("\n") == line[1:].rstrip("\n"), line
                if line[0] == " ":
                    out.append(lines[at])
                at += 1
            elif line.startswith(added):
                out.append(line[1:])
    return "".join(out + lines[at:])


def test_other_side_applies_a_diff_both_ways():
    a, b = "1\n2\n3\n4\n5\n", "1\n2\nthree\n4\n5\nsix\n"
    diff = "--- a\n+++ b\n@@ -2,2 +2,2 @@\n 2\n-3\n+three\n@@ -5 +5,2 @@\n 5\n+six\n"
    assert other_side(a, diff) == b and other_side(b, diff, reverse=True) == a


@needs_git
def test_session_10_logs_ran_the_code_the_readme_names():
    """The committed kernel (832e7d9), its baseline (225c8af) and the variants, kept as diffs under
    logs/bench/programs_s10/ against one of the two."""
    head, kernel = git_source("225c8af"), git_source("832e7d9")
    programs = REPO_ROOT / "logs/bench/programs_s10"
    two_kernels = other_side(kernel, (programs / "two_kernels_to_committed_s10.diff").read_text(), reverse=True)
    slow = other_side(kernel, (programs / "slow_one_kernel_to_committed_s10.diff").read_text(), reverse=True)
    gain = other_side(head, (programs / "gain_before_rotary_s10.diff").read_text())
    ran = {
        head: ["ab_norm_rotary_kernels_s10_h200_against_r1", "curve_head_s10_h200", "eval_head_s10_h200", "eval_ttt_head_s10_h200_gpu0",
               "eval_ttt_head_s10_h200_gpu1", "ab_norm_rotary_final_s10_h200_against_r1", "ab_gain_before_rotary_s10_h200_against_r1",
               "ab_qkv_gain_s10_h200_against_r1"],
        kernel: ["ab_one_kernel_fixed_vs_two_s10_h200_program_r1", "eval_norm_rotary_fixed_s10_h200", "eval_ttt_norm_rotary_s10_h200_gpu0",
                 "eval_ttt_norm_rotary_s10_h200_gpu1"],
        two_kernels: ["ab_norm_rotary_kernels_s10_h200_program_r1", "curve_norm_rotary_kernels_s10_h200", "profile_bandwidth_kernels_s10_h200",
                      "ab_one_kernel_fixed_vs_two_s10_h200_against_r1", "ab_one_kernel_vs_two_s10_h200_against_r1"],
        slow: ["ab_norm_rotary_final_s10_h200_program_r1", "ab_one_kernel_vs_two_s10_h200_program_r1"],
        gain: ["ab_gain_before_rotary_s10_h200_program_r1"],
    }
    assert len({sha(source) for source in ran}) == len(ran)
    for source, logs in ran.items():
        for name in logs:
            assert ran_sha(name) == sha(source), name
    added, size = len(kernel.encode()) - len(head.encode()), len(kernel.encode())
    assert f"Cost: {added:,} bytes of code (train_gpt.py was {size:,} bytes at 832e7d9)" in speed_bullet("q/k RMS norm + rotary + gain")


def test_qk_kernel_bullet_curves_and_rejections_are_their_logs():
    bullet = speed_bullet("q/k RMS norm + rotary + gain")
    for name, text in (("ab_norm_rotary_fixed_s10_h200", "{} → {} ms, **{}×**"), ("ab_norm_rotary_kernels_s10_h200", "{} → {} ms ({}×"),
                       ("ab_one_kernel_fixed_vs_two_s10_h200", "{} → {} ms ({}×")):
        log = bench_log(name)
        assert text.format(log_value(log, "against_ms_per_step"), log_value(log, "program_ms_per_step"), log_value(log, "speedup").rstrip("x")) in bullet
    before = bench_log("profile_bandwidth_s9_h200").split("top kernels, ms per step:")[1]
    old = [float(m[1]) for m in re.finditer(r"^\s+(\S+)\s+88x  (triton_per_fused__fused_rms_norm_\S*(?:slice_slice_backward|cat_mul_slice_sub)\S*"
                                            r"|triton_red_fused_mul_sum_transpose_\d+)$", before, re.M)]
    assert len(old) == 5 and f"kernels took {sum(old):.2f} ms as inductor's five" in bullet
    profile = bench_log("profile_bandwidth_kernels_s10_h200")
    new = {m[2]: float(m[1]) for m in re.finditer(r"^\s+(\S+)\s+176x  (_norm_rotary_\w+_kernel)$", profile, re.M)}
    backward, forward = new["_norm_rotary_backward_kernel"], new["_norm_rotary_forward_kernel"]
    assert f"and {backward + forward:.2f} ms as the two kernels ({backward:.2f} backward, {forward:.2f} forward" in bullet
    step_ms = [float(re.findall(r"^step:285/285 .* step_avg:([\d.]+)ms", bench_log(n), re.M)[-1]) for n in ("curve_head_s10_h200", "curve_norm_rotary_kernels_s10_h200")]
    assert f"{step_ms[0]} → {step_ms[1]} ms/step ({step_ms[0] / step_ms[1]:.3f}×)" in bullet
    ttt = {(n, gpu): first(r"^ttt\s+2/2\*\s+(\S+)", bench_log(f"eval_ttt_{n}_s10_h200_{gpu}")) for n in ("head", "norm_rotary") for gpu in ("gpu0", "gpu1")}
    assert f"{ttt['head', 'gpu0']} and {ttt['head', 'gpu1']} s before, {ttt['norm_rotary', 'gpu0']} and {ttt['norm_rotary', 'gpu1']} s after" in bullet
    sliding = [first(r"^sliding\s+2/2\*\s+(\S+)", bench_log(n)) for n in ("eval_head_s10_h200", "eval_norm_rotary_fixed_s10_h200")]
    assert f"{sliding[0]} s before and {sliding[1]} s after" in bullet

    text = " ".join(section("Same model function, q/k kernel.").split())
    stats = assert_curve_ranges_quoted(text, "logs/bench/curves_norm_rotary_kernels_s10_h200.txt")
    assert all(float(stats[r][1]) > 0 for r in LATER_RANGES) and "d is positive in every range" in text
    curves = [bench_log(n) for n in ("curve_head_s10_h200", "curve_norm_rotary_kernels_s10_h200")]
    for key, label in (("final_ngram_ttt", "(TTT + mixer)"), ("final_int6_sliding_window", "sliding window")):
        values = [float(first(rf"^{key} val_loss:\S+ val_bpb:(\S+)", log)) for log in curves]
        assert f"{label} {values[0]:.6f} vs {values[1]:.6f}" in text
    audit = first(r"^ngram_audit positions:\d+ max_abs_err:(\S+)", curves[1])
    assert f"max_abs_err {audit}" in text

    rejected = " ".join(README.split("- Rejected, session 10")[1].split("\n- ")[0].split())
    call1 = bench_log("s10_call1_stdout")
    for variant in ("qkv_gemm", "gain_before_rotary", "qkv_gain"):
        block = call1.split(f"== /tmp/ab_{variant}_s10_h200.out")[1]
        a, b, x = (log_value(block, k) for k in ("against_ms_per_step", "program_ms_per_step", "speedup"))
        assert f"{a} → {b} ms ({x.rstrip('x')}×)" in rejected
    s9 = bench_log("profile_bandwidth_s9_h200")
    assert f"GEMMs {log_value(call1, 'profile_matmul')} ms per step ({log_value(s9, 'profile_matmul')} in session" in rejected
    assert f"bytes {log_value(call1, 'compiled_gb_per_step')} GB against {log_value(s9, 'compiled_gb_per_step')}" in rejected
    for name, text in (("ab_one_kernel_vs_two_s10_h200", "ran {2}× against the two-kernel form ({0} → {1} ms)"),
                       ("ab_norm_rotary_final_s10_h200", "and {2}× against 225c8af")):
        log = bench_log(name)
        assert text.format(log_value(log, "against_ms_per_step"), log_value(log, "program_ms_per_step"), log_value(log, "speedup").rstrip("x")) in rejected


def assert_probe_gbps(heads: int, fwd_ms: str, fwd_gbps: str, bwd_ms: str, bwd_gbps: str) -> None:
    """A norm_rotary_probe row's GB/s are the bytes each direction must move (2 or 3 tensors of
    48*2048*heads*64 bf16) over its ms, printed to 4 decimals."""
    size_gb = 48 * 2048 * heads * 64 * 2 / 1e9
    for tensors, ms, gbps in ((2, fwd_ms, fwd_gbps), (3, bwd_ms, bwd_gbps)):
        fastest, slowest = (tensors * size_gb / (float(ms) + d) * 1e3 for d in (-5e-5, 5e-5))
        assert slowest - 1 <= int(gbps) <= fastest + 1


@pytest.mark.parametrize("name", ["norm_rotary_probe_s10_h200", "norm_rotary_probe_final_s10_h200", "norm_rotary_probe_fixed_s10_h200"])
def test_norm_rotary_probe_logs_rows_and_bandwidths(name):
    """Session 10's logs, of earlier forms of the probe: a row per head count and tile (and inductor), and
    each GB/s is the bytes the direction must move (2 or 3 tensors of 48*2048*heads*64 bf16) over its ms."""
    compile((REPO_ROOT / "tools/norm_rotary_probe.py").read_text(), "norm_rotary_probe.py", "exec")
    rows = re.findall(r"^\s+(\d+)\s+(tile \d+|inductor)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)$", bench_log(name), re.M)
    expected = [(h, impl) for h in ("8", "4") for impl in ["tile 8", "tile 16", "tile 32", "tile 64", "tile 128", "inductor"]]
    assert [(r[0], r[1]) for r in rows] == expected
    for heads, _, fwd_ms, fwd_gbps, bwd_ms, bwd_gbps in rows:
        assert_probe_gbps(int(heads), fwd_ms, fwd_gbps, bwd_ms, bwd_gbps)


def test_h200_step_paragraph_is_its_profile():
    text = " ".join(section("Where an H200 step goes now").split())
    log = bench_log("profile_bandwidth_epi_s15_h200")
    assert "kernel's 20.37 in it" in text and re.search(r"^\s+20\.37\s+352x  _norm_rotary_kernel$", log, re.M)
    assert "61.73 of it" in text and re.search(r"^\s+61\.73\s+176x  _act_gemm_kernel$", log, re.M)
    older = bench_log("profile_bandwidth_main_s12_h200")
    assert (f"{log_value(older, 'ms_per_step')} ms, attention {log_value(older, 'profile_attention')}, GEMMs {log_value(older, 'profile_matmul')}, "
            f"inductor's kernels {log_value(older, 'profile_compiled')} ({log_value(older, 'compiled_gb_per_step')} GB)") in text
    step, mfu = float(log_value(log, "ms_per_step")), float(log_value(log, "mfu_measured_peak").rstrip("%"))
    kinds = {k: float(log_value(log, f"profile_{k}")) for k in ("attention", "matmul", "compiled", "other", "memcpy/memset", "total")}
    assert f"{step} ms per step, MFU {mfu:.2f}% of the 790 TFLOP/s" in text and "of 790 TFLOP/s" in log
    assert f"Of {kinds['total']} ms of kernel time, cuDNN's attention takes {kinds['attention']} ms, the GEMMs {kinds['matmul']}" in text
    assert f"inductor's kernels {kinds['compiled']} (" in text and f"elementwise kernels ({kinds['compiled']} ms" in text
    share = first(r"^compiled_gb_per_s\s+\S+ GB/s\s+(\S+) of copy_bandwidth", log)
    assert f"({log_value(log, 'compiled_gb_per_step')} GB at {share} of the copy bandwidth)" in text
    rest = kinds["total"] - kinds["attention"] - kinds["matmul"]
    assert f"everything else {kinds['other'] + kinds['memcpy/memset']:.1f}" in text
    assert f"in the other {step - kinds['total']:.1f} ms of the step the GPU runs no kernel" in text
    target = step * mfu / 50
    assert f"50% MFU would be {target:.1f} ms per step, {step - target:.1f} ms less than now" in text
    assert f"take {rest:.1f} ms: at attention and GEMMs as they are, 50% needs {(step - target) / rest:.0%} of the rest gone" in text
    assert f"cuDNN, {kinds['attention'] / 88:.2f} ms per layer and micro-step here" in text  # 11 layers x 8 micro-steps
    probe = bench_log("act_gemm_probe_s11_h200")
    plain = {m[1]: float(m[2]) for m in re.finditer(r"^\s+98304 (plain|bwd)\s+\S+\s+(\S+)", probe, re.M)}
    assert f"about {88 * (plain['plain'] + plain['bwd']):.1f} for the same products, {plain['plain']:.3f} ms per call" in text
    gaps = bench_log("gaps_epi_s15_h200")
    total, count = first(r"^gap_ms_per_step\s+(\S+) ms", gaps), float(first(r"^gap_ms_per_step\s+\S+ ms\s+(\S+) gaps per step", gaps))
    top = gaps.split("before -> after):")[1].splitlines()[1]
    assert top.split()[1] == "1.0x" and "Memcpy HtoD" in top.split("->")[1]
    assert (f"{total} ms per step over {count:,.0f} gaps, about {1000 * float(total) / count:.1f} µs each, the largest group "
            f"{top.split()[0]} ms once per step before the batch's copy") in text


def test_session_11_bullets_and_curves_are_their_logs():
    mlp, qkv = speed_bullet("LeakyReLU² in the epilogue"), speed_bullet("q, k and v from one GEMM")
    for bullet, name in ((mlp, "ab_mlp_kernels_s11_h200"), (qkv, "ab_qkv_one_gemm_s11_h200")):
        log = bench_log(name)
        assert "{} → {} ms, **{}×**".format(log_value(log, "against_ms_per_step"), log_value(log, "program_ms_per_step"),
                                             log_value(log, "speedup").rstrip("x")) in bullet
    best = {m[1]: (m[2], m[3], m[4]) for m in re.finditer(r"^\s+\d+ (\w+)\s+(\S+)\s+(\S+)\s+(\S+)\s+\S+  \(", bench_log("act_gemm_probe_s11_h200"), re.M)}
    assert "training forward {0} → {2}, backward {3} → {5}, inference (32 windows) {6} → {8}".format(*best["fwd"], *best["bwd"], *best["eval"]) in mlp
    assert f"the plain GEMM itself runs {best['plain'][2]} ms against cuBLAS's {best['plain'][0]}" in mlp
    per_step = sum(float(best[m][0]) - float(best[m][2]) for m in ("fwd", "bwd")) * 88  # 11 layers x 8 micro-steps
    assert f"promised ≈{per_step:.0f} ms per step" in mlp
    sliding = {n: re.search(r"phase:sliding repeat:2/2 seconds:(\S+) .* tokens_per_s_per_gpu:(\S+)", bench_log(f"eval_sliding_{n}_s11_h200")).groups()
               for n in ("qkv_main", "mlp_kernels")}
    (s0, t0), (s1, t1) = sliding["qkv_main"], sliding["mlp_kernels"]
    assert f"{s0} s → {s1} s, **{float(s0) / float(s1):.3f}×**, {round(float(t0)):,} → {round(float(t1)):,} tokens/s" in mlp
    ttt_bpb = first(r"phase:ttt repeat:1/1 .* val_bpb:(\S+)", bench_log("eval_ttt_mlp_kernels_s11_h200"))
    assert f"val_bpb {ttt_bpb}" in mlp
    ttt_first = [first(r"phase:ttt repeat:1/2 seconds:(\S+)", bench_log(n)) for n in ("eval_ttt_qkv_main_s11_h200", "eval_ttt_mlp_kernels_r2_s11_h200")]
    assert f"took {ttt_first[0]} s for 5a2909a and {ttt_first[1]} s for the kernel" in mlp
    assert "phase:ttt repeat:2/2" not in bench_log("eval_ttt_mlp_kernels_r2_s11_h200")
    old, new = bench_log("profile_bandwidth_kernels_s10_h200"), bench_log("profile_bandwidth_qkv_one_gemm_s11_h200")
    assert (f"GEMMs {log_value(old, 'profile_matmul')} → {log_value(new, 'profile_matmul')} ms per step, inductor's kernels "
            f"{log_value(old, 'profile_compiled')} → {log_value(new, 'profile_compiled')} ms ({log_value(old, 'compiled_gb_per_step')} → "
            f"{log_value(new, 'compiled_gb_per_step')} GB)") in qkv
    text = " ".join(section("Same model function, session 11.").split())
    assert_curve_ranges_quoted(text, "logs/bench/curves_mlp_kernels_s11_h200.txt")
    curves = [bench_log(n) for n in ("curve_norm_rotary_kernels_s10_h200", "curve_mlp_kernels_s11_h200")]
    loss = [first(r"^step:285/285 train_loss:(\S+)", c) for c in curves]
    assert f"final train loss {loss[0]} vs {loss[1]}" in text
    for key, label in (("final_int6_roundtrip", "dequantized artifact val_bpb"), ("final_int6_sliding_window", "sliding window"),
                       ("ngram_only", "(`ngram_only`)")):
        values = [first(rf"^{key} val_loss:\S+ val_bpb:(\S+)", c) for c in curves]
        assert f"{label} {values[0]} vs {values[1]}" in text
    assert "final_ngram_ttt" not in curves[1] and "cut by the call's time limit" in text


@needs_git
def test_session_11_logs_ran_the_code_the_readme_names():
    qkv_main, mlp = git_source("5a2909a"), git_source("8d66aa4")
    measured_qkv = other_side(qkv_main, (REPO_ROOT / MEASURED_BEFORE_A_DOCSTRING["ab_qkv_one_gemm_s11_h200", "program"]).read_text(), reverse=True)
    ran = {measured_qkv: ["profile_bandwidth_qkv_one_gemm_s11_h200"],
           qkv_main: ["eval_sliding_qkv_main_s11_h200", "eval_ttt_qkv_main_s11_h200"],
           mlp: ["eval_sliding_mlp_kernels_s11_h200", "eval_ttt_mlp_kernels_s11_h200", "eval_ttt_mlp_kernels_r2_s11_h200", "curve_mlp_kernels_s11_h200"]}
    for source, logs in ran.items():
        for name in logs:
            assert ran_sha(name) == sha(source), name
    for bullet, (before, after) in ((speed_bullet("LeakyReLU² in the epilogue"), (qkv_main, mlp)),
                                    (speed_bullet("q, k and v from one GEMM"), (git_source("438cc84"), qkv_main))):
        added = len(after.encode()) - len(before.encode())
        assert f"Cost: {added:,} bytes of code (train_gpt.py was {len(after.encode()):,} bytes at" in bullet


def test_session_12_tail_bullet_and_rejection_are_their_logs():
    bullet = speed_bullet("The last block computes only what a window scores")
    runs = {n: re.search(r"phase:sliding repeat:2/2 seconds:(\S+) .* tokens_per_s_per_gpu:(\S+)", bench_log(f"eval_sliding_{n}_s12_h200_stdout")).groups()
            for n in ("head_a1", "tail_b1", "tail_b2", "head_a2")}
    before, after = [float(runs[n][0]) for n in ("head_a1", "head_a2")], [float(runs[n][0]) for n in ("tail_b1", "tail_b2")]
    assert f"{runs['head_a1'][0]} and {runs['head_a2'][0]} s → {runs['tail_b1'][0]} and {runs['tail_b2'][0]} s, **{sum(before) / sum(after):.3f}×**" in bullet
    assert f"{round(float(runs['head_a1'][1])):,} → {round(float(runs['tail_b1'][1])):,} tokens/s (first runs" in bullet
    train, tail = bench_log("tail_check_train_main_s12_h200"), bench_log("tail_check_eval_tail_s12_h200")
    sliding = [float(first(r"^final_int6_sliding_window val_loss:\S+ val_bpb:(\S+)", log)) for log in (train, tail)]
    plain = [float(first(r"^final_int6_roundtrip val_loss:\S+ val_bpb:(\S+)", log)) for log in (train, tail)]
    assert f"was {sliding[0]:.8f} before and {sliding[1]:.8f} after, a difference of {abs(sliding[0] - sliding[1]):.1e}" in bullet
    assert f"differed by {abs(plain[0] - plain[1]):.1e} ({plain[0]:.8f}, {plain[1]:.8f})" in bullet
    assert "hyperparameter EVAL_ONLY=True" in tail and "hyperparameter TTT_ENABLED=False" in train and "hyperparameter NGRAM_ENABLED=False" in train
    assert re.search(r"^step:100/100 ", train, re.M) and "passed" in bench_log("kernel_tests_s12_h200").splitlines()[-1]

    mlp = speed_bullet("LeakyReLU² in the epilogue")
    ttt = {n: float(first(r"phase:ttt repeat:2/2 seconds:(\S+)", bench_log(f"eval_ttt_{n}_s12_h200_stdout")))
           for n in ("qkv_main", "head", "head_r2", "qkv_main_r2")}
    assert f"5a2909a {ttt['qkv_main']:.3f} s then 8d66aa4 {ttt['head']:.3f} s; 8d66aa4 {ttt['head_r2']:.3f} s then 5a2909a {ttt['qkv_main_r2']:.3f} s" in mlp
    old, new = (ttt["qkv_main"] + ttt["qkv_main_r2"]) / 2, (ttt["head"] + ttt["head_r2"]) / 2
    assert f"the means, {old:.3f} s against {new:.3f} s ({old / new:.3f}×)" in mlp

    rejected = " ".join(README.split("- Rejected, session 12")[1].split("\n- ")[0].split())
    log = bench_log("ab_qkv_heads_s12_h200")
    a, b, x = (log_value(log, k) for k in ("against_ms_per_step", "program_ms_per_step", "speedup"))
    peaks = re.findall(r"peak (\d+) MiB", log)
    assert f"{a} → {b} ms ({x.rstrip('x')}×), peak {int(peaks[0]):,} → {int(peaks[1]):,} MiB" in rejected
    main, variant = bench_log("profile_bandwidth_main_s12_h200"), bench_log("profile_bandwidth_qkv_heads_s12_h200")
    assert f"inductor's kernels at {log_value(variant, 'profile_compiled')} ms per step against main's {log_value(main, 'profile_compiled')}" in rejected
    idle = [float(log_value(p, "ms_per_step")) - float(log_value(p, "profile_total")) for p in (variant, main)]
    assert f"and {idle[0]:.1f} ms of its {log_value(variant, 'ms_per_step')} ms step outside any kernel against main's {idle[1]:.1f}" in rejected
    assert re.search(r"^\s+4\.38\s+48x  triton_poi_fused_cat_transpose_view_21$", main, re.M) and "(`triton_poi_fused_cat_transpose_view_21`, 4.38 ms" in rejected

    gaps = {n: bench_log(f"gaps_{n}_s12_h200") for n in ("main", "qkv_heads")}
    total = {n: float(first(r"^gap_ms_per_step\s+(\S+) ms", g)) for n, g in gaps.items()}
    kernels = {n: log_value(g, "profile_total") for n, g in gaps.items()}
    assert f"kernels {kernels['main']} → {kernels['qkv_heads']} ms per step, but no kernel running {total['main']} → {total['qkv_heads']} ms" in rejected
    worst = re.search(r"^\s+(\S+)\s+(\S+)x  _norm_rotary_kernel -> Memset", gaps["qkv_heads"], re.M)
    ms, count = float(worst[1]), float(worst[2])
    assert gaps["qkv_heads"].split("before -> after):")[1].split()[0] == worst[1]  # the costliest group
    assert f"{ms} ms of it in the {count:.0f} gaps per step ({1000 * ms / count:.0f} µs each)" in rejected
    step = " ".join(section("Where an H200 step goes now").split())
    n_gaps = float(first(r"^gap_ms_per_step\s+\S+ ms\s+(\S+) gaps per step", gaps["main"]))
    assert f"{total['main']} ms per step over {n_gaps:,.0f} gaps, about {1000 * total['main'] / n_gaps:.1f} µs each" in step
    largest = gaps["main"].split("before -> after):")[1].split()[:2]
    assert f"the largest group {largest[0]} ms once per step" in step and largest[1] == "1.0x"


@needs_git
def test_session_12_logs_ran_the_code_the_readme_names():
    main, tail, qkv_main = git_source("8d66aa4"), git_source("4eddad0"), git_source("5a2909a")
    variant = source_if_present("s12-qkv-heads")
    ran = {main: ["eval_sliding_head_a1_s12_h200", "eval_sliding_head_a2_s12_h200", "eval_ttt_head_s12_h200", "eval_ttt_head_r2_s12_h200",
                  "tail_check_train_main_s12_h200", "profile_bandwidth_main_s12_h200", "gaps_main_s12_h200"],
           tail: ["eval_sliding_tail_b1_s12_h200", "eval_sliding_tail_b2_s12_h200", "tail_check_eval_tail_s12_h200", "ab_qkv_heads_s12_h200_against_r1"],
           qkv_main: ["eval_ttt_qkv_main_s12_h200", "eval_ttt_qkv_main_r2_s12_h200"]}
    for source, logs in ran.items():
        for name in logs:
            assert ran_sha(name) == sha(source), name
    if variant is not None:  # the rejected branch, where the clone has it
        assert ran_sha("ab_qkv_heads_s12_h200_program_r1") == ran_sha("profile_bandwidth_qkv_heads_s12_h200") == ran_sha("gaps_qkv_heads_s12_h200") == sha(variant)
        assert f"not worth its {len(variant.encode()) - len(tail.encode()):,} bytes" in " ".join(README.split("- Rejected, session 12")[1].split())
    bullet = speed_bullet("The last block computes only what a window scores")
    added = len(tail.encode()) - len(main.encode())
    assert f"Cost: {added:,} bytes of code (train_gpt.py was {len(tail.encode()):,} bytes at 4eddad0)" in bullet


def test_session_13_cuda_graph_bullet_and_rejection_are_their_logs():
    bullet = speed_bullet("Training forward and backward as CUDA graphs")
    log = bench_log("ab_cudagraphs_s13_h200")
    a, b, x = (log_value(log, k) for k in ("against_ms_per_step", "program_ms_per_step", "speedup"))
    peaks = [int(p) for p in re.findall(r"peak (\d+) MiB", log)]
    assert f"{a} → {b} ms, **{x.rstrip('x')}×**, peak {peaks[0]:,} → {peaks[1]:,} MiB" in bullet
    failure = bench_log("cudagraphs_grads_none_failure_s13_h200_stdout")
    assert "accessing tensor output of CUDAGraphs that has been overwritten" in failure
    assert "in train_step\n    (loss / grad_accum).backward()" in failure.split("compile_warmup: 3 steps")[1]

    ddp = {n: bench_log(f"train_2gpu_{n}_s13_h200") for n in ("head_a1", "cudagraphs_b1", "cudagraphs_b2", "head_a2")}
    ms = {n: float(log_value(t, "ms_per_step")) for n, t in ddp.items()}
    assert all(re.search(r"^world_size\s+2$", t, re.M) for t in ddp.values())
    before, after = (ms["head_a1"] + ms["head_a2"]) / 2, (ms["cudagraphs_b1"] + ms["cudagraphs_b2"]) / 2
    assert (f"{ms['head_a1']} and {ms['head_a2']} ms → {ms['cudagraphs_b1']} and {ms['cudagraphs_b2']} ms, "
            f"**{before / after:.3f}×** on the means") in bullet
    peak = {n: int(log_value(t, "peak_memory_mib")) for n, t in ddp.items()}
    assert peak["head_a1"] == peak["head_a2"] and peak["cudagraphs_b1"] == peak["cudagraphs_b2"]
    assert f"peak {peak['head_a1']:,} → {peak['cudagraphs_b1']:,} MiB" in bullet

    gaps = {n: bench_log(name) for n, name in (("graphs", "gaps_cudagraphs_s13_h200"), ("main", "gaps_main_s12_h200"))}
    total = {n: float(first(r"^gap_ms_per_step\s+(\S+) ms", g)) for n, g in gaps.items()}
    count = {n: float(first(r"^gap_ms_per_step\s+\S+ ms\s+(\S+) gaps per step", g)) for n, g in gaps.items()}
    assert (f"{total['graphs']} ms per step with no kernel running, over {count['graphs']:,.0f} gaps "
            f"({1000 * total['graphs'] / count['graphs']:.1f} µs each), against main's {total['main']} ms over "
            f"{count['main']:,.0f} gaps ({1000 * total['main'] / count['main']:.1f} µs each)") in bullet
    groups = gaps["graphs"].split("before -> after):")[1].splitlines()[1:3]
    (ms1, n1), (ms2, n2) = (g.split()[:2] for g in groups)
    assert n1 == "1.0x" and "Memcpy HtoD" in groups[0].split("->")[1] and "at::native::" in groups[1]
    assert f"{ms1} ms once per step before the batch's copy to the GPU, and {ms2} ms in {float(n2.rstrip('x')):.0f} gaps" in bullet
    adds = re.search(r"^\s+(\S+)\s+(\d+)x  void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>", gaps["graphs"], re.M)
    assert groups[1].count("at::native::CUDAFunc") == 2 and f"kernels, {adds[2]} per step taking {adds[1]} ms" in bullet
    assert ran_sha("gaps_cudagraphs_s13_h200") == ran_sha("ab_cudagraphs_s13_h200_program_r1")
    step = " ".join(section("Where an H200 step goes now").split())
    assert f"{total['graphs']} ms over {count['graphs']:,.0f} gaps of {1000 * total['graphs'] / count['graphs']:.1f} µs remain" in step

    curves = bench_log("curves_cudagraphs_s13_h200")
    ranges = ["11-50", "51-100", "101-200", "201-300"]
    found = {m[0]: m[1:] for m in re.findall(r"^steps_(\S+)\s+max\|d\| (\S+)\s+mean d (\S+), mean \|d\| (\S+) over", curves, re.M)}
    assert f"max {found['1-10'][0]} over steps 1–10" in bullet
    assert "mean |d| " + " / ".join(found[r][2] for r in ranges) + " over" in bullet
    assert "mean d " + " / ".join(found[r][1].replace("-", "−") for r in ranges) + ";" in bullet
    old, new = bench_log("curve_mlp_kernels_s11_h200"), bench_log("curve_cudagraphs_s13_h200")
    losses = [first(r"^step:285/285 train_loss:(\S+) ", t) for t in (old, new)]
    assert f"final train loss {losses[0]} → {losses[1]}" in bullet
    for kind, words in (("final_int6_roundtrip", "dequantized artifact val_bpb"), ("final_int6_sliding_window", "sliding window"),
                        ("ngram_only", "sliding + mixer")):
        bpb = [first(rf"^{kind} val_loss:\S+ val_bpb:(\S+)", t) for t in (old, new)]
        assert f"{words} {bpb[0]} → {bpb[1]}" in bullet, kind
    assert "a03fc1fb79" in curves and ran_sha("curve_cudagraphs_s13_h200")[:10] in curves
    assert re.search(r"^1 passed", bench_log("cuda_graph_training_test_s13_h200"), re.M)

    rejected = " ".join(README.split("- Rejected, session 12")[1].split("\n- ")[0].split())
    log = bench_log("ab_cg_qkv_heads_s13_h200")
    a, b, x = (log_value(log, k) for k in ("against_ms_per_step", "program_ms_per_step", "speedup"))
    peaks = [int(p) for p in re.findall(r"peak (\d+) MiB", log)]
    assert f"{a} → {b} ms ({x.rstrip('x')}×), peak {peaks[0]:,} → {peaks[1]:,} MiB" in rejected


@needs_git
def test_session_13_logs_ran_the_code_the_readme_names():
    before, graphs = sha(git_source("4eddad0")), sha(git_source("c06bc29"))
    for name in ("ab_cudagraphs_s13_h200_against_r1", "ab_cudagraphs_s13_h200_against_r2", "train_2gpu_head_a1_s13_h200",
                 "train_2gpu_head_a2_s13_h200"):
        assert ran_sha(name) == before, name
    for name in ("ab_cudagraphs_s13_h200_program_r1", "ab_cudagraphs_s13_h200_program_r2", "train_2gpu_cudagraphs_b1_s13_h200",
                 "train_2gpu_cudagraphs_b2_s13_h200", "gaps_cudagraphs_s13_h200", "curve_cudagraphs_s13_h200",
                 "ab_cg_qkv_heads_s13_h200_against_r1", "ab_cg_qkv_heads_s13_h200_against_r2"):
        assert ran_sha(name) == graphs, name
    assert ran_sha("curve_mlp_kernels_s11_h200") == sha(git_source("8d66aa4"))
    for ref, names in (("a33ba5e", ["cudagraphs_grads_none_failure_s13_h200_stdout"]),
                       ("s13-cg-qkv-heads", ["ab_cg_qkv_heads_s13_h200_program_r1", "ab_cg_qkv_heads_s13_h200_program_r2"])):
        assert_branch_logs_ran_it(ref, names)


def steady_of(name: str) -> float:
    """bench.steady_ms of a bench log's step lines, read as bench_train reads them."""
    return bench.steady_ms({int(m[1]): float(m[3]) for m in map(bench.STEP_LINE.match, bench_log(name).splitlines()) if m})


def test_steady_rate_table_is_the_before_after_runs():
    """Each row: the steady ms per step (bench.steady_ms of the run's own step lines) of the two runs
    per side of the before/after row with the same commits, their medians, the ratio, and the row's
    own speed-up by the last step_avg."""
    steady = table_rows(section("Steady step rates"))
    assert len(steady) == len(before_after_rows())
    for (label, gpu, before, after, speedup, last), row in zip(steady, before_after_rows()):
        assert re.match(r"([0-9a-f]{7})\b.*?→ ([0-9a-f]{7})", row[0]).groups() == tuple(label.split(" → ")) and gpu == row[1]
        name = row[-1].strip("`")[len("logs/bench/"):-4]
        medians = {}
        for cell, side in ((before, "against"), (after, "program")):
            runs = [steady_of(f"{name}_{side}_r{r}") for r in (1, 2)]
            medians[side] = statistics.median(runs)
            assert cell == f"{medians[side]:.1f} ({runs[0]:.1f}, {runs[1]:.1f})", (label, side)
        assert speedup == f"**{medians['against'] / medians['program']:.3f}×**" and last == row[4].strip("*")
    text = " ".join(section("Steady step rates").split())
    ratios = [r[4].strip("*×") for r in steady[5:]]  # ee6ab13 to 5305a81: the H200 rows since 0081bab
    assert "Chained on H200s since 0081bab (ee6ab13 to 5305a81, steady): " + " × ".join(ratios) in text
    chained = math.prod(float(r) for r in ratios)
    assert f"= {chained:.3f}×" in text and steady[0][3].startswith("652.6 ") and f"about {652.6 / chained:.0f} ms" in text
    assert "c06bc29's 1.008× is 1.000×" in " ".join(section("Before/after, same GPU").split()) and steady[9][4] == "**1.000×**"


def test_session_14_bullets_are_their_logs():
    bullet = speed_bullet("Gradients as views of one buffer")
    for name in ("ab_grads_one_buffer_alone_s14_h200", "ab_grads_one_buffer_s14_h200"):
        log = bench_log(name)
        a, b, x = (log_value(log, k) for k in ("against_ms_per_step", "program_ms_per_step", "speedup"))
        assert f"{a} → {b} ms, {'**' if 'alone' in name else ''}{x.rstrip('x')}×" in bullet, name
    ms = {n: float(log_value(bench_log(f"train_4gpu_{n}_s14_h200"), "ms_per_step")) for n in ("head_r1", "head_r2", "flat_r1", "flat_r2", "lag_r1", "lag_r2")}
    peak = {n: int(log_value(bench_log(f"train_4gpu_{n}_s14_h200"), "peak_memory_mib")) for n in ms}
    assert all(re.search(r"^world_size\s+4$", bench_log(f"train_4gpu_{n}_s14_h200"), re.M) for n in ms)
    ratio = (ms["head_r1"] + ms["head_r2"]) / (ms["flat_r1"] + ms["flat_r2"])
    assert (f"{ms['head_r1']} and {ms['head_r2']} ms → {ms['flat_r1']} and {ms['flat_r2']} ms, {ratio:.3f}× on the means, "
            f"peak {peak['head_r1']:,} → {peak['flat_r1']:,} and {peak['flat_r2']:,} MiB") in bullet
    two = {n: float(log_value(bench_log(f"train_2gpu_{n}_s14_h200"), "ms_per_step")) for n in ("head_a1", "head_a2", "lag_b1", "lag_b2")}
    ratio = (two["head_a1"] + two["head_a2"]) / (two["lag_b1"] + two["lag_b2"])
    assert f"{two['head_a1']} and {two['head_a2']} → {two['lag_b1']} and {two['lag_b2']} ms, {ratio:.3f}×" in bullet
    gaps = bench_log("gaps_grads_one_buffer_s14_h200")
    assert "over 4 profiled steps" in gaps and "CUDAFunctor_add" not in gaps.split("before -> after):")[1].split("\n\n")[0]
    total, count = first(r"^gap_ms_per_step\s+(\S+) ms", gaps), float(first(r"^gap_ms_per_step\s+\S+ ms\s+(\S+) gaps per step", gaps))
    top = gaps.split("before -> after):")[1].splitlines()[1]
    assert top.split()[1] == "1.0x" and "Memcpy HtoD" in top.split("->")[1]
    assert f"{total} ms per step with no kernel running, over {count:,.0f} gaps, the largest {top.split()[0]} ms" in bullet
    curves = bench_log("curves_lagged_status_s14_h200")
    found = {m[0]: m[1] for m in re.findall(r"^steps_(\S+)\s+max\|d\| \S+\s+mean d \S+, mean \|d\| (\S+) over", curves, re.M)}
    assert "mean |d| " + " / ".join(found[r] for r in ("1-10", "11-50", "51-100", "101-200", "201-300")) + " over" in bullet
    old, new = bench_log("curve_cudagraphs_s13_h200"), bench_log("curve_lagged_status_s14_h200")
    assert "final train loss {} → {}".format(*(first(r"^step:285/285 train_loss:(\S+) ", t) for t in (old, new))) in bullet
    for kind, words in (("final_int6_roundtrip", "dequantized artifact val_bpb"), ("final_int6_sliding_window", "sliding window"),
                        ("ngram_only", "sliding + mixer")):
        assert "{} {} → {}".format(words, *(first(rf"^{kind} val_loss:\S+ val_bpb:(\S+)", t) for t in (old, new))) in bullet, kind
    assert re.search(r"^1 passed", bench_log("cuda_graph_training_test_s14_h200"), re.M)
    assert re.search(r"^2 passed", bench_log("cuda_training_tests_lag_s14_h200"), re.M)

    rejected = " ".join(README.split("- Rejected again, session 14")[1].split("\n- ")[0].split())
    for name in ("ab_lagged_status_s14_h200", "ab_lagged_status_gpu_flag_s14_h200"):
        log = bench_log(name)
        a, b, x = (log_value(log, k) for k in ("against_ms_per_step", "program_ms_per_step", "speedup"))
        assert f"{a} → {b} ms ({x.rstrip('x')}×, `logs/bench/{name}.txt`" in rejected, name
    assert f"f31c633 {ms['flat_r1']} and {ms['flat_r2']} ms, lagged {ms['lag_r1']} and {ms['lag_r2']} ms" in rejected
    lag_gaps = bench_log("gaps_lagged_status_gpu_flag_s14_h200")
    assert "over 6 profiled steps" in lag_gaps
    top = lag_gaps.split("before -> after):")[1].splitlines()[1:3]
    batch = next(line for line in top if "Memcpy HtoD" in line.split("->")[1])
    assert f"{batch.split()[0]} × 2 = {2 * float(batch.split()[0]):.2f} ms per step" in rejected
    assert "AssertionError: {2: 4, 5: 10}" in bench_log("cuda_waits_test_on_flat_s14_h200")
    assert "{2: 4, 5: 10}" not in rejected and "2 waits per step" in rejected
    c06 = speed_bullet("Training forward and backward as CUDA graphs")
    runs = {n: steady_of(f"train_2gpu_{n}_s13_h200") for n in ("head_a1", "head_a2", "cudagraphs_b1", "cudagraphs_b2")}
    ratio = (runs["head_a1"] + runs["head_a2"]) / (runs["cudagraphs_b1"] + runs["cudagraphs_b2"])
    assert (f"steady, {runs['head_a1']:.1f} and {runs['head_a2']:.1f} → {runs['cudagraphs_b1']:.1f} and "
            f"{runs['cudagraphs_b2']:.1f} ms, {ratio:.3f}×") in c06


@needs_git
def test_session_14_logs_ran_the_code_the_readme_names():
    main, flat = sha(git_source("08811ef")), sha(git_source("f31c633"))
    for name in ("ab_grads_one_buffer_alone_s14_h200", "ab_grads_one_buffer_s14_h200"):
        for r in (1, 2):
            assert ran_sha(f"{name}_against_r{r}") == main and ran_sha(f"{name}_program_r{r}") == flat
    for name in ("train_4gpu_head_r1_s14_h200", "train_4gpu_head_r2_s14_h200", "train_2gpu_head_a1_s14_h200", "train_2gpu_head_a2_s14_h200"):
        assert ran_sha(name) == main, name
    for name in ("train_4gpu_flat_r1_s14_h200", "train_4gpu_flat_r2_s14_h200", "gaps_grads_one_buffer_s14_h200",
                 "ab_lagged_status_s14_h200_against_r1", "ab_lagged_status_gpu_flag_s14_h200_against_r1"):
        assert ran_sha(name) == flat, name
    for ref, names in (("4727599", ["ab_lagged_status_s14_h200_program_r1", "curve_lagged_status_s14_h200"]),
                       ("7725492", ["ab_lagged_status_gpu_flag_s14_h200_program_r1", "train_4gpu_lag_r1_s14_h200", "train_2gpu_lag_b1_s14_h200",
                                    "gaps_lagged_status_gpu_flag_s14_h200"])):
        assert_branch_logs_ran_it(ref, names)


def test_h200_scaling_table_matches_the_bench_logs():
    rows = table_rows(section("Scaling on H200s"))
    assert [r[0] for r in rows] == ["1", "2", "4", "4", "2", "1"]
    logs = {r[-1]: (REPO_ROOT / r[-1].strip("`")).read_text() for r in rows}
    one_gpu = statistics.mean(int(log_value(logs[r[-1]], "tokens_per_s_per_gpu")) for r in rows if r[0] == "1")
    for gpus, ms, steady, per_gpu, linear, peak, log_cell in rows:
        log = logs[log_cell]
        assert "device:NVIDIA H200" in log and re.search(rf"^world_size\s+{gpus}$", log, re.M)
        assert log_value(log, "ms_per_step") == ms and log_value(log, "ms_per_step_steady") == steady
        tokens = int(log_value(log, "tokens_per_s_per_gpu"))
        assert per_gpu == f"{tokens / 1e6:.3f}M" and peak == f"{int(log_value(log, 'peak_memory_mib')):,} MiB"
        assert linear == ("" if gpus == "1" else f"**{100 * tokens / one_gpu:.1f}%**")
    assert all("_s16_h200.txt" in r[-1] for r in rows)
    text = " ".join(section("Scaling on H200s").split())
    earlier = {r: int(log_value(bench_log(f"scaling_{r}_s15_h200"), "tokens_per_s_per_gpu")) for r in ("1gpu_r1", "1gpu_r2", "2gpu_r1", "2gpu_r2")}
    two = [f"{100 * earlier[r] / statistics.mean((earlier['1gpu_r1'], earlier['1gpu_r2'])):.1f}%" for r in ("2gpu_r1", "2gpu_r2")]
    assert f"5305a81 on a 2×H200 host in session 15, {two[0]} and {two[1]} of linear on 2 GPUs" in text


def test_session_15_mlp_epilogue_bullet_is_its_logs():
    bullet = speed_bullet("The MLP kernel's epilogue on two half tiles")
    sweep = bench_log("act_gemm_overlap_s15_h200")
    now = {m[1]: m[2] for m in re.finditer(r"^M=\d+ (\w+): train_gpt\._act_gemm now (\S+) ms$", sweep, re.M)}
    best = {m[1]: m[2] for m in re.finditer(r"^(\w+)\s+\S+\s+(\S+)\s+\S+\s+\(128, 256, 64, 3, 8\)\s+sub ptr", sweep, re.M)}
    assert set(best) == {"fwd", "bwd", "eval"}  # the committed kernel's variant was the sweep's best in every mode
    for mode, words in (("fwd", "training forward"), ("bwd", "backward"), ("eval", "inference")):
        assert f"{words} {now[mode]} → {best[mode]}" in bullet, mode
    assert re.search(r"^  \(128, 256, 64, 3, 8\)\s+ptr early 1/SM (0\.9152) ms", sweep, re.M) and "(backward 0.9152 ms)" in bullet
    exact = bench_log("mlp_epilogue_exact_s15_h200")
    assert exact.count("bit-identical=True") == 9 and "bit-identical=False" not in exact
    log = bench_log("ab_mlp_epilogue_s15_h200")
    a, b, x = (log_value(log, k) for k in ("against_ms_per_step", "program_ms_per_step", "speedup"))
    sa, sb, sx = (log_value(log, k) for k in ("against_ms_per_step_steady", "program_ms_per_step_steady", "speedup_steady"))
    assert f"{a} → {b} ms, **{x.rstrip('x')}×** (steady {sa} → {sb} ms, {sx.rstrip('x')}×)" in bullet
    assert f"differ by at most {float(log_value(log, 'max_train_loss_diff')):.4f}" in bullet
    last = [float(first(r"^step:20/20 train_loss:(\S+) ", bench_log(f"ab_mlp_epilogue_s15_h200_against_r{r}"))) for r in (1, 2)]
    assert f"rounds differ by {abs(last[0] - last[1]):.4f} at step 20" in bullet
    sliding = {n: eval_phase(bench_log(f"eval_sliding_{n}_s15_h200_stdout"), "sliding") for n in ("head_a1", "head_a2", "epi_b1", "epi_b2")}
    secs = {n: v[0] for n, v in sliding.items()}
    ratio = (secs["head_a1"] + secs["head_a2"]) / (secs["epi_b1"] + secs["epi_b2"])
    assert f"{secs['head_a1']:.3f} and {secs['head_a2']:.3f} s → {secs['epi_b1']:.3f} and {secs['epi_b2']:.3f} s, {ratio:.3f}×" in bullet
    fastest = lambda names: max(sliding[n][1] for n in names)
    assert f"{fastest(('head_a1', 'head_a2')):,.0f} → {fastest(('epi_b1', 'epi_b2')):,.0f} tokens/s at best" in bullet
    assert "61.73 ms per step, against 69.96" in bullet
    assert re.search(r"^13 passed", bench_log("mlp_kernel_tests_s15_h200"), re.M)
    second = bench_log("act_gemm_overlap2_s15_h200")
    fwd_now = first(r"^M=98304 fwd: train_gpt\._act_gemm now (\S+) ms$", second)
    fwd_4 = first(r"^  \(128, 256, 64, 4, 8\)\s+2 piece\(s\) ptr (\S+) ms", second)
    stages = bench_log("ab_mlp_stages_s15_h200")
    a, b, x = (log_value(stages, k) for k in ("against_ms_per_step", "program_ms_per_step", "speedup"))
    assert f"{fwd_now} → {fwd_4} ms per forward call" in bullet and f"{a} → {b} ms per step ({x.rstrip('x')}×" in bullet


@needs_git
def test_session_15_logs_ran_the_code_the_readme_names():
    head, epi = sha(git_source("604d77c")), sha(git_source("5305a81"))
    for r in (1, 2):
        assert ran_sha(f"ab_mlp_epilogue_s15_h200_against_r{r}") == head and ran_sha(f"ab_mlp_epilogue_s15_h200_program_r{r}") == epi
        assert ran_sha(f"ab_mlp_stages_s15_h200_against_r{r}") == epi
        stages4 = other_side(git_source("5305a81"), (REPO_ROOT / "logs/bench/programs_s15/stages4.diff").read_text())
        assert ran_sha(f"ab_mlp_stages_s15_h200_program_r{r}") == sha(stages4)
    for name in ("eval_sliding_head_a1_s15_h200", "eval_sliding_head_a2_s15_h200"):
        assert ran_sha(name) == head, name
    for name in ("eval_sliding_epi_b1_s15_h200", "eval_sliding_epi_b2_s15_h200", "profile_bandwidth_epi_s15_h200", "gaps_epi_s15_h200",
                 "scaling_1gpu_r1_s15_h200", "scaling_2gpu_r1_s15_h200", "scaling_2gpu_r2_s15_h200", "scaling_1gpu_r2_s15_h200"):
        assert ran_sha(name) == epi, name


def test_session_15_warp_specialization_rejection_is_its_log():
    bullet = speed_bullet("The MLP kernel's epilogue on two half tiles")
    sweep = bench_log("act_gemm_overlap_ws_s15_h200")
    fwd = sweep.split(" fwd: ")[1].split("\nM=")[0]
    now = first(r"^train_gpt\._act_gemm now (\S+) ms", fwd)
    ws = {form: first(r"^  \(128, 256, 64, 3, 8\)\s+2 piece\(s\) ptr " + form + r" (\S+) ms", fwd) for form in ("ws flat", "ws     ")}
    assert (f"training forward {now} ms now, {ws['ws flat']} with it on the flattened loop (no change), "
            f"{ws['ws     ']} with it on the loop not flattened") in bullet
    assert "triton:3.6.0" in sweep.splitlines()[0]


@needs_git
@pytest.mark.parametrize("form, digest", [("call1", "7805e4fec38a05e919110955b124a0645bb904536befd623c461763e403c6afe"),
                                          ("call3", "de326501339c2aaba84c8fea610b95a3c8c437b01b762e14a142cbb5d2b34205")])
def test_session_15_probe_forms_are_kept_as_diffs(form, digest):
    """The earlier forms of act_gemm_probe.py that printed session 15's first two sweeps: fbaf0ff's probe with
    the form's diff applied gives back the file that ran (sha256 taken of it when it ran)."""
    diff = (REPO_ROOT / f"logs/bench/programs_s15/act_gemm_probe_{form}.diff").read_text()
    assert sha(other_side(git_source("fbaf0ff", "tools/act_gemm_probe.py"), diff)) == digest


def test_where_it_stands_table_is_the_logs_and_sections_it_names():
    rows = {r[0]: r[1:] for r in table_rows(section("Where it stands against issue 4's targets"))}
    assert len(rows) == 6
    training, _ = rows["training on 1×H100 ≥ 1.3× the reference (≤ 574 ms/step)"]
    h100, main = bench_log("ab_before_after_s6_h100"), bench_log("ab_mlp_epilogue_s15_h200")
    h100_ms, main_ms = float(log_value(h100, "program_ms_per_step")), log_value(main, "program_ms_per_step")
    assert f"{h100_ms} ms at 0081bab" in training and f"{746 / h100_ms:.3f}×" in training and f"5305a81: {main_ms} ms on an H200" in training
    steady = " ".join(section("Steady step rates").split())
    assert re.search(r"about (\d+) ms", steady)[1] in re.search(r"about (\d+) ms on an H100", training)[1]
    peak = int(re.search(r"^program_ms_per_step .*; peak (\d+) MiB$", main, re.M)[1])
    assert rows["peak memory ≤ 22 GB"][0].startswith(f"{peak:,} MiB = {peak * 2**20 / 1e9:.1f} GB") and peak * 2**20 <= 22e9
    scaling = rows["2 and 4 GPUs ≥ 90% of linear"][0]
    h200 = {g: [r[4].strip("*") for r in table_rows(section("Scaling on H200s")) if r[0] == g] for g in ("2", "4")}
    h100_scaling = [r[3].strip("*") for r in table_rows(section("Scaling")) if r[0] != "1"]
    assert f"{h200['2'][0]} and {h200['2'][1]} on 2, {h200['4'][0]} and {h200['4'][1]} on 4 H200s of one host (d4929fb" in scaling
    assert f"{h100_scaling[0]} on 2 and {h100_scaling[1]} on 4 H100s" in scaling and all(float(x.rstrip("%")) >= 90 for x in h200["4"])
    sliding = rows["sliding eval ≥ 2× the reference's 82K tokens/s per GPU"][0]
    h100_tps = float(first(r"phase:sliding repeat:2/2 .*tokens_per_s_per_gpu:(\S+)", bench_log("s8_c4096_nosync_bs32")))
    h200_tps = eval_phase(bench_log("eval_sliding_epi_b2_s15_h200_stdout"), "sliding")[1]
    assert f"{h100_tps:,.0f} on an H100 at d6fb001" in sliding and f"{h100_tps / 82000:.2f}×" in sliding and h100_tps < 164000
    assert f"{h200_tps:,.0f} on an H200 at 5305a81" in sliding and ran_sha("eval_sliding_epi_b2_s15_h200") == ran_sha("ab_mlp_epilogue_s15_h200_program_r1")
    ttt = rows["TTT + mixer ≥ 2× the reference's 26K"][0]
    ttt_tps = next(r[2] for r in table_rows(section("Eval per phase now")) if r[0].startswith("TTT + mixer"))
    assert ttt.startswith(f"{ttt_tps} on an H100 at 0081bab") and f"{int(ttt_tps.replace(',', '')) / 26000:.2f}×" in ttt
    assert "**≈ 168–225 s**, under the issue's 300 s aim" in README and "≈ 168–225 s" in rows["whole legal eval on 8 GPUs ≤ 300 s"][0]


def test_session_16_int64_flag_and_prefetch_bullets_are_their_logs():
    flag = speed_bullet("Offsets past 2³¹ elements")
    assert re.search(r"^24 passed", bench_log("cuda_tests_s16_h200").splitlines()[-1]) and "24 passed" in flag
    cubin = bench_log("wide_flag_cubin_s16_cpu").splitlines()
    assert len(cubin) == 6 and all(line.endswith(")") and "ptx identical True, cubin identical True" in line for line in cubin[1:])
    assert cubin[0].startswith("triton 3.9.0, target sm_90") and "Triton 3.9 on the CPU for sm_90" in flag
    wide = bench_log("ab_wide_flag_s16_h200")
    assert f"{log_value(wide, 'against_ms_per_step')} → {log_value(wide, 'program_ms_per_step')} ms" in flag
    sliding = {n: eval_phase(bench_log(f"eval_sliding_{n}_s16_h200_stdout"), "sliding")[0] for n in ("main_a1", "main_a2", "epi_b1")}
    assert f"{sliding['main_a1']:.3f} and {sliding['main_a2']:.3f} s for d4929fb, {sliding['epi_b1']:.3f} s for 5305a81" in flag
    prefetch = speed_bullet("Rejected: reading the next micro-batch early")
    assert_slower_compare_quoted(prefetch, "ab_prefetch_s16_h200")
    main_gaps, branch_gaps, old_gaps = (bench_log(n) for n in ("gaps_main_s16_h200", "gaps_prefetch_s16_h200", "s15_call5_gaps_stdout"))
    fill = r"^\s+(\S+)\s+1\.0x  void at::native::vectorized_elementwise_kernel<4, at::native::FillFunc -> Memcpy HtoD"
    assert f"{first(fill, main_gaps)} ms per step between the batch's fill and its copy" in prefetch
    assert f"({first(fill, old_gaps)} ms in session 15's)" in prefetch and not re.search(fill, branch_gaps, re.M)
    pin = r"^\s+(\S+)\s+\S+%  aten::pin_memory$"
    assert f"{first(pin, main_gaps)} ms per step in `aten::pin_memory` during the long gaps ({first(pin, old_gaps)})" in prefetch
    gap = lambda text: log_value(text, "gap_ms_per_step")
    assert f"{gap(branch_gaps)} ms per step with no kernel running against main's {gap(main_gaps)}" in prefetch


@needs_git
def test_session_16_logs_ran_the_code_the_readme_names():
    main, epi = sha(git_source("d4929fb")), sha(git_source("5305a81"))
    names = [f"scaling_{g}gpu_r{r}_s16_h200" for g in (1, 2, 4) for r in (1, 2)]
    names += ["ab_prefetch_s16_h200_against_r1", "ab_prefetch_s16_h200_against_r2", "ab_wide_flag_s16_h200_program_r1",
              "gaps_main_s16_h200", "eval_sliding_main_a1_s16_h200", "eval_sliding_main_a2_s16_h200"]
    for name in names:
        assert ran_sha(name) == main, name
    for name in ("ab_wide_flag_s16_h200_against_r1", "eval_sliding_epi_b1_s16_h200"):
        assert ran_sha(name) == epi, name
    cubin = bench_log("wide_flag_cubin_s16_cpu").splitlines()[0]
    assert f"before .ab/epi_s15.py sha256 {epi}, after .ab/main_s16.py sha256 {main}" in cubin
    assert_branch_logs_ran_it("2890385", ["ab_prefetch_s16_h200_program_r1", "ab_prefetch_s16_h200_program_r2", "gaps_prefetch_s16_h200"])


def test_session_16_norm_rotary_probe_log_and_bullet():
    """The sweep's rows: every config for q and k, GB/s the bytes over the ms; the summary adds q and k
    forward + backward per config, fastest first, and train_gpt's config (32 rows, 4 warps) leads it."""
    log = bench_log("norm_rotary_probe_s16_h200")
    assert log.startswith("device:NVIDIA H200 ") and "triton:3.6.0" in log.splitlines()[0]
    rows = re.findall(r"^ ([qk]) +rows (\d+) warps (\d+) +(\S+) +(\d+) +(\S+) +(\d+)$", log, re.M)
    assert len(rows) == 32 and {(r[1], r[2]) for r in rows} == {(str(a), str(b)) for a in (8, 16, 32, 64) for b in (1, 2, 4, 8)}
    per_config = {}
    for x, rows_per_program, warps, fwd, fwd_gbps, bwd, bwd_gbps in rows:
        assert_probe_gbps(8 if x == "q" else 4, fwd, fwd_gbps, bwd, bwd_gbps)
        per_config[rows_per_program, warps] = per_config.get((rows_per_program, warps), 0.0) + float(fwd) + float(bwd)
    summary = re.findall(r"^rows +(\d+) warps (\d+) +(\S+) ms +(\S+) ms per step +(\S+)x of train_gpt's$", log, re.M)
    assert [(r[0], r[1]) for r in summary] == sorted(per_config, key=per_config.get) and summary[0][:2] == ("32", "4")
    for rows_per_program, warps, ms, step_ms, ratio in summary:
        assert float(ms) == pytest.approx(per_config[rows_per_program, warps], abs=3e-4)
        assert float(step_ms) == pytest.approx(88 * float(ms), abs=0.0095)  # ms printed to 4 decimals, the step to 2
        assert float(ratio) == pytest.approx(float(summary[0][2]) / float(ms), abs=1.2e-3)  # from the unrounded ms
    bullet = speed_bullet("Checked, no change: the q/k kernel's launch config")
    assert f"{summary[0][2]} ms per layer and micro-step, {summary[0][3]} ms per step" in bullet
    assert f"against {summary[1][2]} ms for the next ({summary[1][0]} rows, {summary[1][1]} warps)" in bullet
    assert re.search(r"^\s+20\.37\s+352x  _norm_rotary_kernel$", bench_log("profile_bandwidth_epi_s15_h200"), re.M) and "profile has 20.37" in bullet
    q_gain = first(r"^q: kernel vs inductor, .*gain grad max rel diff (\S+)$", log)
    assert f"differed from inductor's by {q_gain}" in bullet
    check = bench_log("norm_rotary_gain_check_s16_h200")
    heads = re.findall(r"^  head \d+: fp32\s+(\S+) kernel\s+(\S+) inductor\s+(\S+)$", check, re.M)
    assert len(heads) == 12
    worst = max(abs(float(f) - float(k)) for f, k, _ in heads)
    assert worst < 0.0012 and "within 0.0012 of the fp32 value" in bullet
    near_zero = min(heads[:8], key=lambda h: abs(float(h[0])))
    assert f"gradient is {near_zero[0].replace('-', '−')}, a sum that nearly cancels; the kernel gives {near_zero[1].replace('-', '−')}" in bullet
    assert f"inductor's bf16 formula {near_zero[2].replace('-', '−')}" in bullet


def test_session_16_end_to_end_table_is_its_logs():
    """Each cell of the before/after end-to-end table is read back from the run's own log, and the
    paragraph's means, spread and step ratio are recomputed."""
    rows = table_rows(section("The whole program at equal training time, before and after the speed work"))
    assert [(r[0], r[1]) for r in rows] == [("68ff6fb", "42"), ("68ff6fb", "1337"), ("d4929fb", "42"), ("d4929fb", "1337")]
    final, steps = {}, {}
    for code, seed, n_steps, step_avg, pre, sliding, full, int6, total, ttt, peak, log_cell in rows:
        log = (REPO_ROOT / log_cell.strip("`")).read_text()
        bpb = lambda label: "{:.5f}".format(float(first("^" + label + r" .*val_bpb:(\S+)", log)))
        assert "device:NVIDIA H200 world_size:1" in log and re.search(rf"^hyperparameter SEED={seed}$", log, re.M)
        assert re.search(r"^hyperparameter MAX_WALLCLOCK_SECONDS=220.0$", log, re.M)
        assert n_steps == first(r"^stopping_early: wallclock cap reached at step:(\d+)/", log)
        assert step_avg == re.findall(r"^step:\d+/\d+ .*step_avg:(\S+)ms", log, re.M)[-1] + " ms"
        assert (pre, sliding, full) == (bpb("pre_quant"), bpb("final_int6_sliding_window"), bpb("final_ngram_ttt"))
        assert int6 == first(r"^export: int6_matrices:(\d+)", log) + " of 66"
        total_bytes = int(first(r"total_bytes:(\d+)", log))
        assert total == f"{total_bytes:,}" and total_bytes <= 16_000_000
        assert ttt == first(r"^eval:ngram_ttt seconds:(\S+)", log) + " s"
        peak_mib = int(first(r"peak_memory_allocated_mib:(\d+)", log))
        assert peak == f"{peak_mib:,} MiB"
        assert float(first(r"^ngram_audit positions:\d+ max_abs_err:(\S+)", log)) <= 1.443e-15
        final.setdefault(code, []).append(float(first(r"^final_ngram_ttt .*val_bpb:(\S+)", log)))
        steps.setdefault(code, []).append(int(n_steps))
    text = " ".join(section("The whole program at equal training time, before and after the speed work").split())
    before, after = (statistics.mean(final[c]) for c in ("68ff6fb", "d4929fb"))
    assert f"{100 * (sum(steps['d4929fb']) / sum(steps['68ff6fb']) - 1):.0f}% more steps" in text
    assert f"scores {before - after:.4f} BPB lower on the mean of the two seeds ({before:.5f} → {after:.5f})" in text
    spread = [abs(final[c][0] - final[c][1]) for c in ("68ff6fb", "d4929fb")]
    assert f"seed-to-seed spread of either side ({spread[0]:.4f} and {spread[1]:.4f})" in text and before - after > 5 * max(spread)
    four = bench_log("e2e_main_4gpu_90s_s16_h200")
    four_text = " ".join(section("Main on four GPUs, end to end").split())
    assert "device:NVIDIA H200 world_size:4" in four and re.search(r"^hyperparameter MAX_WALLCLOCK_SECONDS=90.0$", four, re.M)
    step_avg = re.findall(r"^step:\d+/\d+ .*step_avg:(\S+)ms", four, re.M)[-1]
    four_steps = first(r"^stopping_early: wallclock cap reached at step:(\d+)/", four)
    four_bpb, four_total = float(first(r"^final_ngram_ttt .*val_bpb:(\S+)", four)), int(first(r"total_bytes:(\d+)", four))
    assert f"{four_steps} steps at {step_avg} ms" in four_text and f"full stack {four_bpb:.5f}, total {four_total:,} bytes" in four_text
    assert "audit " + first(r"^ngram_audit positions:\d+ max_abs_err:(\S+)", four) in four_text
    sliding_mixer = first(r"^eval:int6_sliding_window .* mixer_seconds:(\S+)$", four)
    ttt_mixer = first(r"^eval:ngram_ttt seconds:.* mixer_seconds:(\S+) ", four)
    one_gpu = first(r"^eval:int6_sliding_window .* mixer_seconds:(\S+)$", bench_log("e2e_main_seed42_s16_h200"))
    assert f"put {sliding_mixer} s in the mixer part, against {one_gpu} s on one GPU and {ttt_mixer} s in this run's TTT + mixer pass" in four_text
    pre_seconds, pre_lap = (float(x) for x in re.search(r"^eval:pre_quant seconds:(\S+) .* score_seconds:(\S+)$", four, re.M).groups())
    one_pre = first(r"^eval:pre_quant seconds:(\S+) ", bench_log("e2e_main_seed42_s16_h200"))
    assert f"rank 0's scoring lap was {pre_lap} s of a {pre_seconds} s pass (on one GPU, {one_pre} s with the compile)" in four_text
    assert f"rank 0 waited about {pre_seconds - pre_lap:.0f} s at the pass's closing all-reduce" in four_text


@needs_git
def test_session_16_end_to_end_logs_ran_the_code_they_name():
    old, main = sha(git_source("68ff6fb")), sha(git_source("d4929fb"))
    for seed in (42, 1337):
        assert ran_sha(f"e2e_68ff6fb_seed{seed}_s16_h200") == old and ran_sha(f"e2e_main_seed{seed}_s16_h200") == main
    assert ran_sha("e2e_main_4gpu_90s_s16_h200") == main


def by_rank(log: str, pass_name: str) -> list[str]:
    """A 4-GPU eval line's per-rank scoring laps, rank 0 first."""
    return first(rf"^eval:{pass_name} seconds:.* score_seconds_by_rank:(\S+)$", log).split(",")


def test_session_17_cold_and_warm_four_gpu_runs_are_their_logs():
    """The paragraph's per-rank laps, rank 0's mixer part and the compile warm-ups are the two runs'
    eval lines; the first run found an empty cache and the second the first one's."""
    cold, warm = (bench_log(f"e2e_main_4gpu_45s_{n}_s17_h200") for n in ("cold", "warm"))
    text = " ".join(section("Main on four GPUs, end to end").split())
    for log in (cold, warm):
        assert "device:NVIDIA H200 world_size:4" in log and re.search(r"^hyperparameter MAX_WALLCLOCK_SECONDS=45.0$", log, re.M)
        assert float(first(r"^ngram_audit positions:\d+ max_abs_err:(\S+)", log)) <= 1.443e-15
    laps = lambda log, name: ", ".join(by_rank(log, name)[:-1]) + " and " + by_rank(log, name)[-1]
    mixer = lambda log: first(r"^eval:int6_sliding_window .* mixer_seconds:(\S+) score_seconds_by_rank:", log)
    warmup = lambda log: first(r"^compile_warmup done steps:\d+ seconds:(\S+)", log)
    assert f"{laps(cold, 'pre_quant')} s in the first pass, {laps(cold, 'int6_sliding_window')} s in the sliding + mixer pass, whose mixer part on rank 0 is {mixer(cold)} s" in text
    assert f"{laps(warm, 'pre_quant')} s, then {laps(warm, 'int6_sliding_window')} s, the mixer part {mixer(warm)} s" in text
    assert f"the compile warm-up falls from {warmup(cold)} to {warmup(warm)} s" in text
    assert min(map(float, by_rank(cold, "pre_quant"))) > 5 * max(map(float, by_rank(warm, "pre_quant")))
    how = " ".join(README.split("## From logs to a submission")[0].split("Each `eval:<pass> seconds:`")[1].split())
    assert f"first pass's laps were {laps(cold, 'pre_quant')} s, and {laps(warm, 'pre_quant')} s run again" in how


def test_session_17_xsa_rejection_is_its_logs():
    bullet = speed_bullet("Rejected: XSA as one reduction")
    peaks = assert_slower_compare_quoted(bullet, "ab_xsa_one_reduction_s17_h200")
    unit_vectors_mib = 4 * 48 * 2048 * 4 * 64 * 4 / 2**20
    assert f"peak {peaks[0]:,} → {peaks[1]:,} MiB ({peaks[0] - peaks[1]} MiB less; the four tensors are {unit_vectors_mib:.0f} MiB)" in bullet
    gb = lambda name: re.search(r"^compiled_gb_per_step\s+(\S+) GB\s+(\d+) kernels", bench_log(name), re.M).groups()
    (branch_gb, branch_kernels), (main_gb, main_kernels) = gb("profile_bandwidth_xsa_s17_h200"), gb("profile_bandwidth_epi_s15_h200")
    assert f"{branch_gb} GB per step in {branch_kernels} kernels, against {main_gb} GB in {main_kernels}" in bullet
    cat = first(r"^\s+(\S+)\s+32x  triton_poi_fused__to_copy_add_cat_squeeze_transpose_view_8$", bench_log("profile_bandwidth_xsa_s17_h200"))
    assert f"`triton_poi_fused__to_copy_add_cat_squeeze_transpose_view_8`, {cat} ms per step" in bullet
    curves = bench_log("curves_xsa_one_reduction_s17_h200")
    first_steps = first(r"^steps_1-10 +max[|]d[|] (\S+)", curves)
    assert f"at most {first_steps} over steps 1–10" in bullet
    means = [first(rf"^steps_{r} .*mean [|]d[|] (\S+) over", curves) for r in ("11-50", "51-100", "101-200", "201-300")]
    assert "mean |d| " + " / ".join(means) + " over steps 11–50 / 51–100 / 101–200 / 201–285" in bullet
    sliding = [float(first(r"^final_int6_sliding_window .*val_bpb:(\S+)", bench_log(f"curve_{n}_s17_h200"))) for n in ("main", "xsa")]
    assert f"sliding window val_bpb {sliding[0]:.5f} (main) and {sliding[1]:.5f}" in bullet


def test_session_17_inductor_graphs_keep_the_xsa_unit_vectors_in_fp32():
    """The forward graph in the tarball returns (saves for the backward) four fp32 (48, 2048, 4, 64) buffers."""
    with tarfile.open(REPO_ROOT / "logs/bench/inductor_training_graphs_s17_h200.tar.xz") as tar:
        graphs = [tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()]
    forward = next(g for g in graphs if g.startswith("# AOT ID: ['0_forward']"))
    assert any(g.startswith("# AOT ID: ['0_backward']") for g in graphs)
    unit = re.findall(r"(buf\d+) = empty_strided_cuda\(\(48, 2048, 4, 64\), \([^)]*\), torch\.float32\)", forward)
    returned = set(re.findall(r"\bbuf\d+\b", re.search(r"def call\(self, args\):.*?\n        return \((.*?)\)\n", forward, re.S)[1]))
    assert len(unit) == 4 and set(unit) <= returned
    bullet = speed_bullet("Rejected: XSA as one reduction")
    assert "keeps four fp32 tensors of shape (48, 2048, 4, 64)" in bullet and f"({48 * 2048 * 4 * 64 * 4 / 1e6:.1f} MB per XSA layer" in bullet


@needs_git
def test_session_17_logs_ran_the_code_the_readme_names():
    main = sha(git_source("c380510"))
    names = ["e2e_main_4gpu_45s_cold_s17_h200", "e2e_main_4gpu_45s_warm_s17_h200", "curve_main_s17_h200",
             "ab_xsa_one_reduction_s17_h200_against_r1", "ab_xsa_one_reduction_s17_h200_against_r2"]
    for name in names:
        assert ran_sha(name) == main, name
    assert_branch_logs_ran_it("0db25e5", ["ab_xsa_one_reduction_s17_h200_program_r1", "ab_xsa_one_reduction_s17_h200_program_r2",
                                          "curve_xsa_s17_h200", "profile_bandwidth_xsa_s17_h200"])


def kernel_ab_rows(name: str) -> dict[str, tuple[str, str, str]]:
    """program -> (fwd, bwd, eval) ms of one of session 18's kernel A/B logs."""
    return {m[1]: (m[2], m[3], m[4]) for m in re.finditer(r"^(\w+_s1[78])\s+(\S+)\s+(\S+)\s+(\S+)\s+\S+\s+\S+$", bench_log(name), re.M)}


def test_session_18_sign_bits_rejection_is_its_logs():
    bullet = speed_bullet("Rejected: the MLP kernel keeping u's sign instead of u")
    peaks = assert_slower_compare_quoted(bullet, "ab_mlp_sign_bits_s18_h200")
    assert f"peak {peaks[0]:,} → {peaks[1]:,} MiB" in bullet
    passed = first(r"^(\d+) passed", bench_log("mlp_kernel_tests_bits_s18_h200"))
    assert f"tests ({passed} passed," in bullet
    ab2, ab3 = kernel_ab_rows("mlp_kernel_ab2_s18_h200"), kernel_ab_rows("mlp_kernel_ab3_s18_h200")
    assert set(ab2) == {"main_s17", "bits_s18", "packed_s18", "int8_s18"} and len(ab3) == 7
    best_fwd = min(r[0] for n, r in ab2.items() if n != "main_s17")
    assert f"forward {ab2['main_s17'][0]} ms → {best_fwd} at best" in bullet
    assert (f"backward {ab2['main_s17'][1]} → {ab2['packed_s18'][1]} (packed bits, each row's bytes read once), "
            f"{ab2['int8_s18'][1]} (a byte per unit) or {ab2['bits_s18'][1]} (the branch") in bullet
    assert all(r[1] > ab2["main_s17"][1] for n, r in ab2.items() if n != "main_s17")
    quarters = sorted(r[1] for n, r in ab3.items() if n.endswith("q_s18"))
    assert f"slower still, {quarters[0]} to {quarters[-1]} ms" in bullet
    assert all(ab3[n.replace("q_s18", "_s18")][1] < r[1] for n, r in ab3.items() if n.endswith("q_s18"))
    conversions = dict(re.findall(r"^(\w+) backward kernel: .* spills 0 .* layout conversions (\d+) ", bench_log("mlp_kernel_ab3_s18_h200"), re.M))
    assert len(conversions) == 7 and conversions["main_s17"] == "2" and {conversions[n] for n in ("bits_s18", "packed_s18", "int8_s18")} == {"6"}
    assert f"forward {ab3['main_s17'][0]} → {min(r[0] for n, r in ab3.items() if n != 'main_s17')} ms at best in the quarters' A/B" in bullet
    for name in ("mlp_kernel_ab2_s18_h200", "mlp_kernel_ab3_s18_h200"):
        assert len(re.findall(r"vs bits_s18: h identical True, backward identical True$", bench_log(name), re.M)) == len(kernel_ab_rows(name)) - 2
    first_ab = bench_log("mlp_kernel_ab_bits_s18_h200")
    assert "fwd h identical: True  sign bits == (u < 0): True" in first_ab
    norm, share = re.search(r"rel\. norm (\S+)\s+elements differing (\S+)", first_ab).groups()
    assert f"(relative norm {norm}, {100 * float(share):.1f}% of the elements" in bullet
    branch, own = curve_stats("logs/bench/curves_mlp_sign_bits_s18_h200.txt"), curve_stats("logs/bench/curves_main_s17_against_s18_h200.txt")
    assert "differ by mean |d| " + " / ".join(branch[r][2] for r in LATER_RANGES) + " over steps 11–50" in bullet
    assert "session-17 curve (" + " / ".join(own[r][2] for r in LATER_RANGES) + "," in bullet
    assert all(float(branch[r][2]) <= float(own[r][2]) for r in LATER_RANGES)
    sliding = [float(first(r"^final_int6_sliding_window .*val_bpb:(\S+)", bench_log(f"curve_{n}_s18_h200"))) for n in ("main", "bits")]
    assert f"sliding window val_bpb {sliding[0]:.5f} (main) and {sliding[1]:.5f}" in bullet


def test_session_18_variants_are_diffs_of_the_branch():
    """Each variant the kernel A/Bs ran is its diff applied to the branch's train_gpt.py; the A/B programs load them."""
    folder = REPO_ROOT / "logs/bench/programs_s18"
    branch = source_if_present("39fa5b0")
    for variant in ("packed", "int8", "bitsq", "packedq", "int8q"):
        diff = (folder / f"{variant}_s18.diff").read_text()
        assert diff.startswith(f"--- bits_s18.py\n+++ {variant}_s18.py\n")
        assert f'"{variant}_s18"' in (folder / "s18_kernel_ab3.py").read_text()
        if branch is not None:
            changed = other_side(branch, diff)
            assert changed != branch and "_act_gemm_kernel" in changed


@needs_git
def test_session_18_logs_ran_the_code_the_readme_names():
    main = sha(git_source("c380510"))
    for name in ("curve_main_s18_h200", "ab_mlp_sign_bits_s18_h200_against_r1", "ab_mlp_sign_bits_s18_h200_against_r2"):
        assert ran_sha(name) == main, name
    assert_branch_logs_ran_it("39fa5b0", ["ab_mlp_sign_bits_s18_h200_program_r1", "ab_mlp_sign_bits_s18_h200_program_r2", "curve_bits_s18_h200"])


# log name -> (the switch as the README names it, the line its diff adds to launch())
SWITCHES_S18 = {"combo": ("combo_kernels", "combo_kernels = True"), "aggressive": ("aggressive_fusion", "aggressive_fusion = True"),
                "ndtiling": ("triton.prefer_nd_tiling", "triton.prefer_nd_tiling = True"), "multikernel": ("triton.multi_kernel = 1", "triton.multi_kernel = 1")}


def test_session_18_inductor_switches_are_their_logs():
    bullet = speed_bullet("Rejected, session 18: four inductor switches not tried before")
    for name, (switch, _) in SWITCHES_S18.items():
        assert f"`logs/bench/ab_{name}_s18_h200.txt`" in bullet
        if name == "multikernel":  # no summary: its second run failed
            log = bench_log(f"ab_{name}_s18_h200")
            rounds = dict(re.findall(r"^compare round:1/2 (against|program) ms_per_step:(\S+) ", log, re.M))
            assert f"`{switch}` (each reduction picks its kernel at run time) {rounds['against']} → {rounds['program']} ms in its first round" in bullet
            assert "ERROR: the program run" in log and "TypeError: 'NoneType' object does not support the context manager protocol" in log
            continue
        assert f"`{switch}`" in bullet and assert_compare_quoted(bullet, f"ab_{name}_s18_h200")[1] < 1.01


@needs_git
def test_session_18_switch_logs_ran_main_and_its_diffs():
    """The against side of each switch's compare ran main; the program side ran main with the switch's diff applied."""
    main = git_source("c380510")
    for name, (_, line) in SWITCHES_S18.items():
        diff = (REPO_ROOT / f"logs/bench/programs_s18/{name}_s18.diff").read_text()
        assert f"\n+    torch._inductor.config.{line}\n" in diff
        for r in ["r1", "r2"] if name != "multikernel" else ["r1"]:
            assert ran_sha(f"ab_{name}_s18_h200_against_{r}") == sha(main)
            assert ran_sha(f"ab_{name}_s18_h200_program_{r}") == sha(other_side(main, diff))
