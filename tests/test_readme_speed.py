"""The README's speed tables are what the committed bench logs say: each figure is read back from
the log its row names, and the derived columns (speed-up, tokens/s, share of linear) are recomputed."""
import hashlib
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
    assert len(rows) == 4 and all(len(r) == 7 for r in rows)
    return rows


@pytest.mark.parametrize("index", range(4))
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
    log = (REPO_ROOT / "logs/bench/ab_bf16_stream_h100.txt").read_text()
    ms = float(log_value(log, "program_ms_per_step"))
    peak = int(re.search(r"^program_ms_per_step .*; peak (\d+) MiB$", log, re.M)[1])
    assert f"Ours on an H100 now: {ms} ms = {BATCH_TOKENS / ms / 1000:.2f}M tokens/s, {746 / ms:.3f}× the reference" in text
    assert f"peak of {peak:,} MiB = {peak / 1024:.1f} GiB ({peak * 2**20 / 1e9:.1f} GB" in text


@pytest.mark.parametrize("name", ["ab_mix_order_off", "ab_activation_budget", "ab_pdl"])
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
@pytest.mark.parametrize("index", range(4))
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


def test_profile_paragraph_matches_the_profile_log():
    text = " ".join(section("Where a training step goes now").split())
    log = (REPO_ROOT / "logs/bench/profile_bf16_stream_h100.txt").read_text()
    assert "device                NVIDIA H100" in log
    ms, total = log_value(log, "ms_per_step"), float(log_value(log, "profile_total"))
    kinds = {k: float(log_value(log, f"profile_{k}")) for k in ("compiled", "attention", "matmul", "other", "memcpy/memset")}
    assert f"{ms} ms/step, MFU {float(log_value(log, 'mfu_measured_peak').rstrip('%')):.1f}%" in text
    assert (f"per step {total} ms, of which Triton-compiled elementwise work {kinds['compiled']} ms" in text
            and f"cuDNN attention {kinds['attention']} ms and GEMMs {kinds['matmul']} ms" in text)
    assert f"other {kinds['other'] + kinds['memcpy/memset']:.1f} ms; the remaining ≈{float(ms) - total:.0f} ms" in text
    rotary_backward = re.search(r"^\s+([\d.]+)\s+88x  triton_per_fused__fused_rms_norm__fused_rms_norm_backward_\S*_cos_", log, re.M)[1]
    before = (REPO_ROOT / "logs/bench/profile_mix_order_off.txt").read_text()
    rotary_before = re.search(r"^\s+([\d.]+)\s+88x  triton_per_fused__fused_rms_norm__fused_rms_norm_backward_\S*_cos_", before, re.M)[1]
    assert f"rotary backward kernels, {rotary_backward} ms ({rotary_before} ms with the fp32 stream" in text
    leaky = [re.search(rf"^\s+([\d.]+)\s+88x  triton_poi_fused_\S*_leaky_relu_{kind}", log, re.M)[1] for kind in ("leaky_relu_backward", "pow")]
    assert f"LeakyReLU² backward ({leaky[0]} ms) and forward ({leaky[1]} ms)" in text
    assert f"from {kinds['compiled']:.0f} to about {kinds['compiled'] - (float(ms) - 574):.0f} ms" in text


def test_eval_per_phase_table_matches_its_log():
    rows = table_rows(section("Eval per phase now"))
    log = (REPO_ROOT / "logs/bench/eval_untrained_1gpu_bf16_stream.txt").read_text()
    assert "device:NVIDIA H200 world_size:1" in log and "val_targets           999424" in log and len(rows) == 4
    for row, phase in zip(rows, ("roundtrip", "sliding", "ngram", "ttt")):
        seconds, tokens = re.search(rf"^{phase}\s+2/2\*\s+(\S+)\s+\S+\s+999424\s+(\S+)", log, re.M).groups()
        assert row[1:3] == [seconds, f"{round(float(tokens)):,}"]
        inside = re.findall(rf"^eval:{phase} seconds:\S+ targets:\d+ \S+ score_seconds:(\S+)(?: mixer_seconds:(\S+))?(?: ttt_train_seconds:(\S+))?$", log, re.M)[-1]
        if phase in ("ngram", "ttt"):
            assert row[3].startswith(f"scoring {inside[0]} s, mixer {inside[1]} s")
    chunks = int(re.search(r"^eval:ttt chunk:\d+/(\d+) ", log, re.M)[1])
    assert rows[3][3].endswith(f"TTT training {inside[2]} s ({float(inside[2]) / (chunks - 1):.3f} s per chunk)")


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
