"""The README's speed tables are what the committed bench logs say: each figure is read back from
the log its row names, and the derived columns (speed-up, tokens/s, share of linear) are recomputed."""
import hashlib
import math
import re
import statistics
import subprocess

import pytest

from conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
BATCH_TOKENS = 786_432


def section(title: str) -> str:
    return README.split(f"**{title}**", 1)[1].split("\n\n**", 1)[0]


def table_rows(text: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    return rows[2:]  # past the header and the --- line


def log_value(log: str, name: str) -> str:
    return re.search(rf"^{name}\s{{2,}}(\S+)", log, re.M)[1]


def before_after_rows() -> list[list[str]]:
    rows = table_rows(section("Before/after, same GPU"))
    assert len(rows) == 5 and all(len(r) == 7 for r in rows)
    return rows


@pytest.mark.parametrize("index", range(5))
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
    assert "program               /" in log and re.search(r"^against\s+\.ab/(before|head)/train_gpt\.py$", log, re.M)


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


@pytest.mark.skipif(subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0,
                    reason="not a git checkout")
@pytest.mark.parametrize("index", range(5))
def test_before_after_logs_ran_the_commits_the_readme_names(index):
    """The compare ran files (the GPU machine's copy has no .git): their sha256 are those of the
    named commits' train_gpt.py, the before commit first in the row's label and the after one second."""
    label, *_, log_cell = before_after_rows()[index]
    commits = re.findall(r"\b([0-9a-f]{7})\b", label)
    assert len(commits) == 2 and "→" in label
    for side, commit in zip(("against", "program"), commits):
        shown = subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"{commit}:train_gpt.py"], capture_output=True)
        if shown.returncode:
            pytest.skip(f"commit {commit} is not in this clone (shallow?)")
        for r in (1, 2):
            child = (REPO_ROOT / f"{log_cell.strip('`')[:-4]}_{side}_r{r}.txt").read_text()
            assert f"code_sha256:{hashlib.sha256(shown.stdout).hexdigest()}" in child


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


def test_whole_eval_estimate_adds_up():
    text = " ".join(section("Whole eval on 8 H100s, estimated").split())
    h100 = (REPO_ROOT / "logs/bench/eval_untrained_1gpu_h100.txt").read_text()
    compile_s = [eval_phase(h100, p, "1/2")[0] - eval_phase(h100, p)[0] for p in ("roundtrip", "ttt")]
    assert f"compile: {compile_s[0]:.1f} + {compile_s[1]:.1f} ≈ {sum(compile_s):.0f} s" in text
    scale = 62_021_632 / 999_424
    assert f"{scale:.2f}× the dev val, {math.ceil(62_021_632 / 32_768):,} chunks" in text
    non_sliding = eval_phase(h100, "roundtrip")[0]
    assert f"2 × {non_sliding} s × {scale:.2f} / 8 ≈ {2 * non_sliding * scale / 8:.0f} s" in text
    score = {p: float(re.findall(rf"^eval:{p} seconds:.* score_seconds:(\S+) ", h100, re.M)[-1]) for p in ("ngram", "ttt")}
    assert f"scoring {score['ngram']} s × {scale:.2f} / 8 ≈ {score['ngram'] * scale / 8:.0f} s" in text
    assert f"{score['ngram'] * scale / 8 / 0.795:.0f} s at the 79.5%" in text
    assert f"scoring {score['ttt']} s → {score['ttt'] * scale / 8:.0f}–{score['ttt'] * scale / 8 / 0.795:.0f} s" in text
    train = [float(re.findall(r"^eval:ttt seconds:.* ttt_train_seconds:(\S+)$", (REPO_ROOT / f"logs/bench/{n}.txt").read_text(), re.M)[-1])
             for n in ("eval_untrained_1gpu_s6", "eval_untrained_2gpu_s6", "eval_untrained_1gpu_h100")]
    split = 2 * (train[0] - train[1])
    fixed = train[0] - split
    per_chunk_h200 = (fixed + split / 8) / 30
    per_chunk_h100 = per_chunk_h200 * train[2] / train[0]
    assert f"is {fixed:.1f} + {split:.1f} / ranks s, so {per_chunk_h200:.3f} s per chunk" in text
    assert f"≈ {per_chunk_h100:.3f} s per chunk → ≈{per_chunk_h100 * 1892:.0f} s" in text
    low = sum(compile_s) + 2 * non_sliding * scale / 8 + (score["ngram"] + score["ttt"]) * scale / 8 + 2 * 25 + 85
    high = sum(compile_s) + 2 * non_sliding * scale / 8 + (score["ngram"] + score["ttt"]) * scale / 8 / 0.795 + 2 * 25 + per_chunk_h100 * 1892
    lo, hi = re.search(r"Total \*\*≈ (\d+)–(\d+) s\*\*", text).groups()
    assert abs(int(lo) - low) <= 5 and abs(int(hi) - high) <= 5
    pass1 = [score["ngram"] * scale / 8 + 25, score["ngram"] * scale / 8 / 0.795 + 25]
    assert f"Without its {pass1[0]:.0f}–{pass1[1]:.0f} s" in text
    lo, hi = re.search(r"the legal eval alone \(compile, the non-sliding passes and pass 2\) is ≈ (\d+)–(\d+) s", text).groups()
    assert abs(int(lo) - (low - pass1[0])) <= 5 and abs(int(hi) - (high - pass1[1])) <= 5


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


@pytest.mark.skipif(subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0,
                    reason="not a git checkout")
def test_the_single_change_abs_of_0081bab_ran_what_the_readme_says():
    """The rotary and bincount A/Bs ran bb815a3 against a variant that is bb815a3 plus that one change
    (0081bab is both); the late status read ran against 0081bab itself."""
    def source(commit):
        shown = subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"{commit}:train_gpt.py"], capture_output=True, text=True)
        if shown.returncode:
            pytest.skip(f"commit {commit} is not in this clone (shallow?)")
        return shown.stdout

    def sha(text):
        return hashlib.sha256(text.encode()).hexdigest()

    def ran(name, side):
        return re.search(r"code_sha256:(\S+)", (REPO_ROOT / f"logs/bench/{name}_{side}_r1.txt").read_text())[1]

    before, now = source("bb815a3"), source("0081bab")
    old_count = "delta = torch.bincount(keys, minlength=self.counts.numel()).float()\n"
    new_count = now[now.index("delta = torch.zeros_like(self.counts)"):].split("\n", 1)[0] + "\n"
    assert old_count in before and new_count in now
    for name in ("ab_rope_buffers", "ab_no_bincount_sync", "ab_qk_fp32"):
        assert ran(name, "against") == sha(before)
    assert ran("ab_rope_buffers", "program") == sha(now.replace(new_count, old_count))
    assert ran("ab_no_bincount_sync", "program") == sha(before.replace(old_count, new_count))
    assert ran("ab_lagged_status_s6", "against") == sha(now)
