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


def test_before_after_table_matches_the_compare_log():
    rows = table_rows(section("Before/after, same GPU"))
    log = (REPO_ROOT / "logs/bench/ab_before_after.txt").read_text()
    assert rows[0][-1] == "`logs/bench/ab_before_after.txt`" and rows[1][-1] == "same"
    medians = {}
    for row, side in zip(rows[:2], ("against", "program")):
        median, runs = re.fullmatch(r"([\d.]+) \(([\d.]+), ([\d.]+)\)", row[1]).group(1), row[1].split("(")[1].rstrip(")").split(", ")
        logged = re.search(rf"^{side}_ms_per_step\s+(\S+)\s+(\S+) (\S+); peak (\d+) MiB$", log, re.M)
        assert [median, *runs] == list(logged.groups()[:3])
        assert row[3] == f"{int(logged[4]):,} MiB"
        assert row[2] == f"{BATCH_TOKENS / float(median) / 1000:.3f}M"
        medians[side] = statistics.median(map(float, runs))
    assert rows[2][1] == f"**{log_value(log, 'speedup').rstrip('x')}×**"
    assert float(rows[2][1].strip("*×")) == pytest.approx(medians["against"] / medians["program"], abs=0.0006)
    assert "program               /" in log and "against               .ab/before/train_gpt.py" in log


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
def test_before_after_logs_ran_the_commits_the_readme_names():
    """The compare ran files (the GPU machine's copy has no .git): their sha256 are those of the
    named commits' train_gpt.py."""
    row_commits = [re.search(r"\b([0-9a-f]{7})\b", r[0])[1] for r in table_rows(section("Before/after, same GPU"))[:2]]
    for side, commit in zip(("against", "program"), row_commits):
        shown = subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"{commit}:train_gpt.py"], capture_output=True)
        if shown.returncode:
            pytest.skip(f"commit {commit} is not in this clone (shallow?)")
        source = shown.stdout
        for r in (1, 2):
            child = (REPO_ROOT / f"logs/bench/ab_before_after_{side}_r{r}.txt").read_text()
            assert f"code_sha256:{hashlib.sha256(source).hexdigest()}" in child


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
