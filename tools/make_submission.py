#!/usr/bin/env python3
"""Write submission.json for the 10min_16mb track from the logs of train_gpt.py runs.

    python tools/make_submission.py logs/seed1.txt logs/seed2.txt logs/seed3.txt \\
        --name "..." --blurb "..." --author "..." --github-id "..." [--output submission.json]

Every number in the json is parsed from the logs (logs/<RUN_ID>.txt, one training run each); the
path and sha256 of each log are recorded. The logs must be distinct, complete, valid trainings of
one configuration; anything else is refused with a one-line error and exit code 2 (see REFUSALS
in --help and tools/README.md).

Optional: a one-sided Welch t-test against a baseline (its seeds' logs, --baseline-log, or its
numbers, --baseline-mean/--baseline-std), and a
2x2 PNG of training and validation curves (--plot out.png; --plot-only for ablation logs that
differ in settings, writes no json). Standard library only; the plot needs matplotlib.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import re
import statistics
import sys
from pathlib import Path

SIZE_LIMIT_BYTES = 16_000_000   # code + compressed model, as in train_gpt.py
AUDIT_TOLERANCE = 1e-6          # largest |sum_v p(v) - 1| train_gpt.py accepts for the n-gram mixer
TRACK = "10min_16mb"
ALWAYS_DIFFERENT = ("SEED", "RUN_ID")               # settings that may differ between the seeds
COMPARED_HEADER = ("code_bytes", "world_size", "val_tokens")  # run facts that must agree too
FINAL_NAMES = ("pre_quant", "final_int6_roundtrip", "final_int6_sliding_window", "ngram_only", "ttt_only",
               "final_ngram_ttt")

REFUSALS = """\
refusals (exit code 2, one line on stderr; nothing is written):
  * a log with more than one run (a RUN_ID reused: train_gpt.py appends to logs/<RUN_ID>.txt),
    or that is not a train_gpt.py log (no run_id: line);
  * EVAL_ONLY=True: it evaluated an existing artifact, it is not a training;
  * a run that did not finish: no final_ngram_ttt line, no training_done/artifact/Total line,
    or any "ERROR:" line;
  * artifact over the cap: "Total submission size" or total_bytes > 16,000,000, or the text
    "ARTIFACT OVER LIMIT" anywhere;
  * the n-gram mixer on (NGRAM_ENABLED=True) without an "ngram_audit ... max_abs_err:E" line,
    or with E > 1e-6 (or not a number);
  * the same log twice, or the same SEED twice;
  * settings that differ between logs other than SEED and RUN_ID (every "hyperparameter" line,
    plus code_bytes, world_size and val_tokens); the message names them. --allow-different-settings
    accepts them (and records them under settings_differ), --ignore-setting NAME ignores one;
  * with --code PATH: a log whose code_sha256 is not PATH's sha256 (it ran other code; a run hashes
    the packed train_gpt.py it counts), or whose code_bytes is not PATH's size."""

SIGNIFICANCE_HELP = """\
significance test (--baseline-log LOG ... or --baseline-mean X --baseline-std S [--baseline-n N]; [--delta D]):
  one-sided Welch t-test of H1: mean_ours < X - D against H0: mean_ours >= X - D, where
  mean_ours/std_ours are the mean and sample std (ddof=1) of our seeds' val_bpb (full legal stack).
      t  = ((X - D) - mean_ours) / sqrt(std_ours^2/n_ours + S^2/N)
      df = Welch-Satterthwaite;  p_value = P(T_df >= t)
  All of X, S, D are in val_bpb units (bits per byte), the log's own unit; D is NOT converted
  from nats. The challenge's rule is an improvement of 0.005 nats (val_loss, per token); the json
  records bpb_per_nat = val_bpb / val_loss of our logs (= tokens / (bytes * ln 2) of the val set)
  and delta_nats = D / bpb_per_nat, so for the nats rule pass --delta 0.005*bpb_per_nat.
  improvement_bpb = X - mean_ours. N defaults to our number of seeds (recorded as assumed).
  --baseline-log: X, S and N are the mean, sample std and count of the full-stack val_bpb of the
  baseline's seed logs, checked as ours are (distinct, finished, valid trainings of one
  configuration; EVAL_ONLY logs joined to their trainings) and scored on as many val tokens; the
  json lists them and the settings in which the baseline differs from ours, and --table adds its row."""


class Refusal(Exception):
    """A log (or set of logs) that must not become a submission."""


# ----------------------------------------------------------------------------- Student t distribution

def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes betacf)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def _lgamma_ratio(a: float, b: float) -> float:
    """log(Gamma(a+b) / Gamma(a)), without the cancellation of two huge lgamma values when a is large."""
    if a < 100:
        return math.lgamma(a + b) - math.lgamma(a)
    def stirling_tail(z):  # lgamma(z) - [(z - 1/2) log z - z + log(2 pi)/2]
        return 1 / (12 * z) - 1 / (360 * z ** 3) + 1 / (1260 * z ** 5)
    return (a - 0.5) * math.log1p(b / a) + b * math.log(a + b) - b + stirling_tail(a + b) - stirling_tail(a)


def regularized_incomplete_beta(a: float, b: float, x: float, y: float | None = None) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1. y = 1 - x may be passed when it is known more precisely
    than 1 - x can be computed (x close to 1)."""
    y = 1.0 - x if y is None else y
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(f"regularized_incomplete_beta needs a, b > 0 and x in [0, 1]; got {a}, {b}, {x}")
    if x == 0.0 or y == 0.0:
        return 0.0 if x == 0.0 else 1.0
    log_x = math.log(x) if x < 0.5 else math.log1p(-y)
    log_y = math.log(y) if y < 0.5 else math.log1p(-x)
    log_front = (_lgamma_ratio(a, b) if a >= b else _lgamma_ratio(b, a)) - math.lgamma(min(a, b)) + a * log_x + b * log_y
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, y) / b


def t_sf(t: float, df: float) -> float:
    """P(T >= t) for Student's t with df > 0 degrees of freedom (df need not be an integer)."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    # P(T >= |t|) = I_x(df/2, 1/2) / 2 with x = df/(df+t^2); 1-x = t^2/(df+t^2) is passed exactly
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """P(T <= t)."""
    return t_sf(-t, df)


def welch_one_sided(ours: list[float], baseline_mean: float, baseline_std: float, baseline_n: int,
                    delta: float) -> dict:
    """One-sided Welch test of H1: mean(ours) < baseline_mean - delta."""
    n1 = len(ours)
    if n1 < 2:
        raise Refusal(f"the significance test needs at least 2 seeds (their sample std); got {n1}")
    if baseline_n < 2:
        raise Refusal(f"--baseline-n must be >= 2 (the baseline std is a sample std); got {baseline_n}")
    if baseline_std < 0:
        raise Refusal(f"--baseline-std must be >= 0; got {baseline_std}")
    mean1, std1 = statistics.fmean(ours), statistics.stdev(ours)
    a, b = std1 ** 2 / n1, baseline_std ** 2 / baseline_n
    diff = (baseline_mean - delta) - mean1
    if a + b == 0:  # no spread at all: the hypothesis is simply true or false
        t, df, p = (math.copysign(math.inf, diff) if diff else 0.0), None, (0.0 if diff > 0 else 1.0)
    else:
        t = diff / math.sqrt(a + b)
        df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (baseline_n - 1))
        p = t_sf(t, df)
    return dict(test="one-sided Welch", hypothesis="mean_ours < baseline_mean - delta", units="val_bpb (bits per byte)",
                delta=delta, baseline_mean=baseline_mean, baseline_std=baseline_std, baseline_n=baseline_n,
                mean=mean1, std=std1, n=n1, improvement_bpb=baseline_mean - mean1,
                t=None if math.isinf(t) else t, df=df, p_value=p)


# ----------------------------------------------------------------------------- parsing one log

@dataclasses.dataclass
class RunLog:
    path: Path
    sha256: str
    n_runs: int                      # run_id: lines in the file (train_gpt.py appends when a RUN_ID is reused)
    header: dict                     # run_id, torch, device, world_size, attention, code_bytes, source_bytes (of the last run)
    settings: dict                   # NAME -> value, exactly as logged ("True", "0.025", "(9, 10)")
    warnings: list
    errors: list                     # text after "ERROR: "
    over_limit_text: bool            # "ARTIFACT OVER LIMIT" anywhere in the file
    val_tokens: int | None
    train: list                      # dicts: step, iterations, train_loss, elapsed_s, step_avg_ms
    val: list                        # periodic: dicts step, val_loss, val_bpb
    finals: dict                     # FINAL_NAMES -> dict(val_loss, val_bpb, rest of the line)
    artifact: dict | None            # path, compressed_bytes, code_bytes, total_bytes
    total_bytes: int | None          # "Total submission size int6+lzma: N bytes"
    audit: dict | None               # positions, max_abs_err (float; nan if unreadable)
    eval_phases: list                # (label, seconds) in log order
    training_done: dict | None       # steps, seconds
    compile_warmup_seconds: float | None
    stopped_early: bool
    peak_memory_mib: int | None
    int5_matrices: int | None
    code_sha256: str | None = None   # header's second line: of the packed program (of the plain source before 2026-12)
    eval_log: "RunLog | None" = None  # the EVAL_ONLY log that scored this training's artifact (pair_split_runs)

    @property
    def label(self) -> str:
        seed = self.settings.get("SEED")
        return f"{self.header.get('run_id', self.path.stem)} (seed {seed})" if seed is not None else self.header.get("run_id", self.path.stem)


_HEADER = re.compile(r"^run_id:(?P<run_id>\S*) torch:(?P<torch>\S+) device:(?P<device>.*?) world_size:(?P<world_size>\d+)"
                     r"(?: attention:(?P<attention>\S+))?(?: code_bytes:(?P<code_bytes>\d+))?(?: source_bytes:(?P<source_bytes>\d+))?")
_SETTING = re.compile(r"^hyperparameter (?P<name>[A-Za-z0-9_]+)=(?P<value>.*)$")
_TRAIN = re.compile(r"^step:(?P<step>\d+)/(?P<iterations>\d+) train_loss:(?P<loss>\S+)(?P<rest>.*)$")
_VAL = re.compile(r"^step:(?P<step>\d+) val_loss:(?P<val_loss>\S+) val_bpb:(?P<val_bpb>\S+)")
_FINAL = re.compile(r"^(?P<name>" + "|".join(FINAL_NAMES) + r") val_loss:(?P<val_loss>\S+) val_bpb:(?P<val_bpb>\S+)(?P<rest>.*)$")
_ARTIFACT = re.compile(r"^artifact:(?P<path>.*) compressed_bytes:(?P<compressed>\d+) code_bytes:(?P<code>\d+) total_bytes:(?P<total>\d+)\s*$")
_TOTAL = re.compile(r"^Total submission size int6\+lzma: (?P<bytes>\d+) bytes")
_AUDIT = re.compile(r"^ngram_audit positions:(?P<positions>\d+) max_abs_err:(?P<err>\S+)")
_EVAL = re.compile(r"^eval:(?P<label>\S+) seconds:(?P<seconds>[0-9.]+)")
_DONE = re.compile(r"^training_done steps:(?P<steps>\d+) (?:wall_)?seconds:(?P<seconds>[0-9.]+)"
                   r"(?:.* peak_memory_allocated_mib:(?P<peak>\d+))?")
_WARMUP = re.compile(r"^compile_warmup(?: done)? steps:\d+ seconds:(?P<seconds>[0-9.]+)")
_PEAK = re.compile(r"^peak memory allocated: (?P<mib>\d+) MiB")
_EXPORT = re.compile(r"^export: int6_matrices:\d+ int5_matrices:(?P<int5>\d+)")


def _kv(rest: str) -> dict:
    """`key:value` words of a line."""
    return dict(w.split(":", 1) for w in rest.split() if ":" in w)


def _number(text: str, unit: str = "") -> float:
    if unit and text.endswith(unit):
        text = text[:-len(unit)]
    return float(text)


def parse_log(path: str | Path) -> RunLog:
    """Parse logs/<RUN_ID>.txt. If it holds several runs, everything but n_runs comes from the last."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise Refusal(f"{path}: cannot read the log ({e.strerror or e})") from None
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if _HEADER.match(line)]
    if not starts:
        raise Refusal(f"{path}: not a train_gpt.py log (no 'run_id:... torch:... device:... world_size:...' line)")
    header = _HEADER.match(lines[starts[-1]]).groupdict()
    header["world_size"] = int(header["world_size"])
    for key in ("code_bytes", "source_bytes"):  # source_bytes: logs since the packed train_gpt.py (2026-12)
        header[key] = int(header[key]) if header[key] is not None else None
    log = RunLog(path=path, sha256=hashlib.sha256(raw).hexdigest(), n_runs=len(starts), header=header, settings={},
                 warnings=[], errors=[], over_limit_text="ARTIFACT OVER LIMIT" in text, val_tokens=None, train=[], val=[],
                 finals={}, artifact=None, total_bytes=None, audit=None, eval_phases=[], training_done=None,
                 compile_warmup_seconds=None, stopped_early=False, peak_memory_mib=None, int5_matrices=None)
    for number, line in enumerate(lines[starts[-1] + 1:], start=starts[-1] + 2):
        try:
            _parse_line(log, line)
        except (ValueError, KeyError, IndexError):
            raise Refusal(f"{path}:{number}: cannot read this line: {line[:120]!r}") from None
    return log


def _parse_line(log: RunLog, line: str) -> None:
    """Fold one log line into `log` (a line that fits no pattern is ignored)."""
    if m := _SETTING.match(line):
        log.settings[m["name"]] = m["value"]
    elif line.startswith("WARNING: "):
        log.warnings.append(line[len("WARNING: "):])
    elif line.startswith("ERROR:"):
        log.errors.append(line[len("ERROR:"):].strip())
    elif line.startswith("val_tokens:"):
        log.val_tokens = int(line.split()[0].split(":", 1)[1])
    elif m := _TRAIN.match(line):
        kv = _kv(m["rest"])
        log.train.append(dict(step=int(m["step"]), iterations=int(m["iterations"]), train_loss=float(m["loss"]),
                              elapsed_s=_number(kv["elapsed"], "s") if "elapsed" in kv else None,
                              step_avg_ms=_number(kv["step_avg"], "ms") if "step_avg" in kv else None))
    elif m := _VAL.match(line):
        log.val.append(dict(step=int(m["step"]), val_loss=float(m["val_loss"]), val_bpb=float(m["val_bpb"])))
    elif m := _FINAL.match(line):
        log.finals[m["name"]] = dict(val_loss=float(m["val_loss"]), val_bpb=float(m["val_bpb"]), rest=m["rest"].strip())
    elif m := _ARTIFACT.match(line):
        log.artifact = dict(path=m["path"], compressed_bytes=int(m["compressed"]), code_bytes=int(m["code"]),
                            total_bytes=int(m["total"]))
    elif m := _TOTAL.match(line):
        log.total_bytes = int(m["bytes"])
    elif m := _AUDIT.match(line):
        try:
            err = float(m["err"])
        except ValueError:
            err = math.nan
        log.audit = dict(positions=int(m["positions"]), max_abs_err=err)
    elif m := _EVAL.match(line):
        log.eval_phases.append((m["label"], float(m["seconds"])))
    elif m := _DONE.match(line):
        log.training_done = dict(steps=int(m["steps"]), seconds=float(m["seconds"]), peak_mib=m["peak"] and int(m["peak"]))
    elif line.startswith("code_sha256:"):
        log.code_sha256 = line.split()[0].split(":", 1)[1]
    elif m := _WARMUP.match(line):
        log.compile_warmup_seconds = float(m["seconds"])
    elif line.startswith("stopping_early:"):
        log.stopped_early = True
    elif m := _PEAK.match(line):
        log.peak_memory_mib = int(m["mib"])
    elif m := _EXPORT.match(line):
        log.int5_matrices = int(m["int5"])


# ----------------------------------------------------------------------------- checks

def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("true", "1")


def mixer_on(log: RunLog) -> bool:
    final = log.finals.get("final_ngram_ttt")
    return _is_true(log.settings.get("NGRAM_ENABLED")) or bool(final and "ngram:1" in final["rest"])


def check_training(log: RunLog) -> None:
    """Refuse a log that is not one complete, valid training."""
    p = log.path
    if log.n_runs > 1:
        raise Refusal(f"{p}: holds {log.n_runs} runs (run_id: lines); a RUN_ID was reused and train_gpt.py appends "
                      "to logs/<RUN_ID>.txt - pass one log per training")
    if _is_true(log.settings.get("EVAL_ONLY")):
        raise Refusal(f"{p}: EVAL_ONLY=True - it evaluated an existing artifact, it is not a training")
    over = [b for b in (log.total_bytes, log.artifact and log.artifact["total_bytes"]) if b is not None and b > SIZE_LIMIT_BYTES]
    if over or log.over_limit_text:
        size = f"{max(over):,} bytes" if over else "ARTIFACT OVER LIMIT in the log"
        raise Refusal(f"{p}: artifact over the cap ({size} > {SIZE_LIMIT_BYTES:,})")
    if log.errors:
        raise Refusal(f"{p}: the run ended with an error: ERROR: {log.errors[0]}")
    for what, present in (("final_ngram_ttt", "final_ngram_ttt" in log.finals), ("training_done", log.training_done),
                          ("artifact:", log.artifact), ("Total submission size", log.total_bytes is not None),
                          ("step:k/N training", log.train), ("SEED hyperparameter", "SEED" in log.settings),
                          ("val_tokens", log.val_tokens is not None)):
        if not present:
            raise Refusal(f"{p}: the run did not finish (no {what} line): truncated, still running or killed")
    if mixer_on(log):
        if log.audit is None:
            raise Refusal(f"{p}: n-gram mixer on but no 'ngram_audit ... max_abs_err:' line - the score is unaudited")
        err = log.audit["max_abs_err"]
        if not err <= AUDIT_TOLERANCE:  # also catches nan
            raise Refusal(f"{p}: n-gram audit failed: max_abs_err:{err:.3e} > {AUDIT_TOLERANCE:g}")
    if log.total_bytes != log.artifact["total_bytes"]:
        raise Refusal(f"{p}: inconsistent sizes: Total submission size {log.total_bytes} but artifact total_bytes "
                      f"{log.artifact['total_bytes']}")
    if log.training_done["steps"] != log.train[-1]["step"]:
        raise Refusal(f"{p}: inconsistent step counts: training_done steps:{log.training_done['steps']} but the last "
                      f"training line is step:{log.train[-1]['step']}")
    for name, final in log.finals.items():
        if not (math.isfinite(final["val_bpb"]) and math.isfinite(final["val_loss"])):
            raise Refusal(f"{p}: {name} val_bpb:{final['val_bpb']} is not a finite number")


# Settings that only steer training: an EVAL_ONLY run of a training's artifact may leave them at
# their defaults. Everything else (model shape, eval, mixer, TTT, SEED, DATA_PATH: the val shards
# are read from it) must match.
TRAINING_ONLY = {"TRAIN_BATCH_TOKENS", "TRAIN_SEQ_LEN", "ITERATIONS", "MAX_WALLCLOCK_SECONDS", "WARMUP_STEPS",
                 "WARMDOWN_ITERS", "TRAIN_LOG_EVERY", "VAL_LOSS_EVERY", "MATRIX_LR", "SCALAR_LR", "TIED_EMBED_LR",
                 "TIED_EMBED_INIT_STD", "ADAM_WD", "GRAD_CLIP_NORM", "MUON_MOMENTUM", "MUON_MOMENTUM_WARMUP_START",
                 "MUON_MOMENTUM_WARMUP_STEPS", "MUON_BACKEND_STEPS", "MUON_WD", "EMA_DECAY", "LATE_QAT_THRESHOLD",
                 "COMPLEMENT_ALPHA", "RUN_ID", "EVAL_ONLY", "ARTIFACT_PATH", "EVAL_DUMP_NLL"}
PAIR_MAY_DIFFER = TRAINING_ONLY | {"world_size"}  # the eval job may also run on another GPU count


def _scored(log: RunLog) -> bool:
    return log.eval_log is not None or "final_ngram_ttt" in log.finals


def pair_split_runs(logs: list[RunLog], unpaired_ok: bool = False) -> list[RunLog]:
    """Join each EVAL_ONLY log to the training whose artifact it scored (training and eval run as
    two jobs). The artifact is recognized by its total bytes and the code (sha256, else bytes); the
    pair must agree on every setting outside TRAINING_ONLY and on val_tokens. The joined record keeps
    the training's header, settings and steps, and takes every eval result from the eval log.
    With unpaired_ok (ablations), an EVAL_ONLY log that matches no unscored training stays a log of its own."""
    evals = [log for log in logs if _is_true(log.settings.get("EVAL_ONLY"))]
    trainings = [log for log in logs if log not in evals]
    unpaired = []
    for ev in evals:
        if ev.n_runs > 1:
            raise Refusal(f"{ev.path}: holds {ev.n_runs} runs (run_id: lines); pass one log per eval")
        if ev.total_bytes is None or "final_ngram_ttt" not in ev.finals:
            raise Refusal(f"{ev.path}: EVAL_ONLY run that did not finish (no final_ngram_ttt/Total submission size line)")
        matches = [t for t in trainings if t.artifact and t.artifact["total_bytes"] == ev.total_bytes
                   and (t.code_sha256 == ev.code_sha256 if t.code_sha256 and ev.code_sha256
                        else t.header["code_bytes"] is not None and t.header["code_bytes"] == ev.header["code_bytes"])]
        if unpaired_ok:  # only an unscored training with the same settings takes it; an eval of a
            # finished run's artifact with other settings (NGRAM_ENABLED=0, say) stays a log of its own
            matches = [t for t in matches if not _scored(t) and not setting_differences([t, ev], PAIR_MAY_DIFFER)]
            if not matches:
                unpaired.append(ev)
                continue
        if len(matches) != 1:
            what = "no training log given" if not matches else f"{len(matches)} training logs ({', '.join(str(t.path) for t in matches)})"
            raise Refusal(f"{ev.path}: EVAL_ONLY=True and its artifact (total_bytes {ev.total_bytes}) matches {what}; "
                          "an EVAL_ONLY log counts only together with the log of the training that wrote its artifact")
        train = matches[0]
        if _scored(train):
            raise Refusal(f"{train.path}: scored twice (by itself or by {ev.path} and another EVAL_ONLY log); pass one score per training")
        diffs = setting_differences([train, ev], PAIR_MAY_DIFFER)
        if diffs:
            raise Refusal(f"{ev.path}: evaluated {train.path}'s artifact with other settings: "
                          + ", ".join(f"{n}={a} vs {b}" for n, (a, b) in diffs.items()))
        peaks = [m for m in (train.training_done and train.training_done["peak_mib"], train.peak_memory_mib, ev.peak_memory_mib) if m]
        train.finals = {**{k: v for k, v in train.finals.items() if k == "pre_quant"},
                        **{k: v for k, v in ev.finals.items() if k != "pre_quant"}}
        train.audit, train.total_bytes, train.eval_log = ev.audit, ev.total_bytes, ev
        # the training job's own phases (periodic, pre_quant); every later one is the eval job's
        train.eval_phases = [p for p in train.eval_phases if p[0] in ("periodic", "pre_quant")] + ev.eval_phases
        train.errors, train.warnings = train.errors + ev.errors, train.warnings + ev.warnings
        train.peak_memory_mib = max(peaks, default=None)
    return trainings + unpaired


def setting_differences(logs: list[RunLog], ignored: set[str]) -> dict[str, list]:
    """{name: [value in each log]} for each setting (and compared run fact) that is not the same in all logs."""
    def facts(log):
        d = {k: v for k, v in log.settings.items() if k not in ignored}
        d.update({k: log.header.get(k) if k != "val_tokens" else log.val_tokens for k in COMPARED_HEADER if k not in ignored})
        return d
    all_facts = [facts(log) for log in logs]
    names = list(dict.fromkeys(n for f in all_facts for n in f))  # in log order
    return {n: [f.get(n) for f in all_facts] for n in names if len({repr(f.get(n)) for f in all_facts}) > 1}


def check_distinct(logs: list[RunLog], allow_different: bool, ignored: set[str]) -> dict[str, list]:
    seen_sha, seen_seed = {}, {}
    for log in logs:
        if log.sha256 in seen_sha:
            raise Refusal(f"{log.path}: the same log as {seen_sha[log.sha256]} (identical sha256)")
        seen_sha[log.sha256] = log.path
        seed = log.settings["SEED"]
        if seed in seen_seed:
            raise Refusal(f"{log.path}: SEED={seed} again (also in {seen_seed[seed]}) - not distinct trainings")
        seen_seed[seed] = log.path
    diffs = setting_differences(logs, ignored)
    if diffs and not allow_different:
        described = "; ".join(f"{n}=" + " vs ".join(f"{v!s} ({log.path.name})" for v, log in zip(vals, logs))
                              for n, vals in list(diffs.items())[:3])
        more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise Refusal(f"settings differ between logs: {described}{more}; only "
                      f"{', '.join(sorted(ignored))} may differ (--allow-different-settings to accept)")
    return diffs


def checked_baseline(args, ours: list[RunLog]) -> list[RunLog]:
    """The --baseline-log runs, checked as ours are (finished, valid, distinct trainings of one
    configuration, EVAL_ONLY logs joined), at least two, none of them ours, scored on our val set."""
    if not args.baseline_log:
        return []
    baseline = pair_split_runs([parse_log(p) for p in args.baseline_log])
    for log in baseline:
        check_training(log)
    check_distinct(baseline, False, set(ALWAYS_DIFFERENT) | set(args.ignore_setting))
    if len(baseline) < 2:
        raise Refusal("--baseline-log needs the logs of at least 2 seeds (the test uses their sample std)")
    shared = {log.sha256 for log in baseline} & {log.sha256 for log in ours}
    if shared:
        raise Refusal(f"a log is given both as ours and as the baseline's ({len(shared)} of them)")
    if baseline[0].val_tokens != ours[0].val_tokens:
        raise Refusal(f"the baseline was scored on {baseline[0].val_tokens} val tokens and ours on {ours[0].val_tokens}: "
                      "not the same val set")
    return baseline


def baseline_changes(ours: RunLog, baseline: RunLog, args) -> dict:
    """{setting: the baseline's value} where it differs from our first seed's."""
    ignored = set(ALWAYS_DIFFERENT) | set(args.ignore_setting)
    return {n: vals[1] for n, vals in setting_differences([ours, baseline], ignored).items()}


def check_code(logs: list[RunLog], code: bytes, name: str, allow_mismatch: bool = False) -> dict:
    """The submitted program `code` (the file named `name`) against every run that counted it (a training
    and its EVAL_ONLY log): the header's code_sha256 (a run hashes what it counts: since 2026-12 the packed
    train_gpt.py, before that the plain source) and code_bytes (else the artifact line's). Returns the
    json's code fields; a mismatch is a Refusal, or with allow_mismatch is listed in code_differs_from_logs."""
    sha, size, problems = hashlib.sha256(code).hexdigest(), len(code), []
    for run in (r for log in logs for r in (log, log.eval_log) if r):
        counted = run.header.get("code_bytes") or (run.artifact and run.artifact["code_bytes"])
        if run.code_sha256 is None and counted is None:
            problems.append(f"{run.path}: no code_sha256 or code_bytes to check {name} against")
        elif run.code_sha256 is not None and run.code_sha256 != sha:
            problems.append(f"{run.path} ran other code: its code_sha256 is {run.code_sha256[:16]}… but {name} "
                            f"({size:,} bytes) has {sha[:16]}…")
        elif counted is not None and counted != size:
            problems.append(f"{run.path} counted code_bytes:{counted:,} but {name} has {size:,} bytes")
    if problems and not allow_mismatch:
        raise Refusal(problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    return dict(code_file=name, code_sha256=sha, code_bytes=size, **({"code_differs_from_logs": problems} if problems else {}))


# ----------------------------------------------------------------------------- the json

def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _r(x: float | None, digits: int = 8) -> float | None:
    """Round a derived statistic to the logs' own precision (8 decimals); raw log values are never rounded."""
    return None if x is None else round(x, digits)


def eval_seconds(log: RunLog) -> dict:
    """{label: seconds} of each eval:<label> phase; a repeated label (periodic) is summed."""
    out: dict[str, float] = {}
    for label, seconds in log.eval_phases:
        out[label] = round(out.get(label, 0.0) + seconds, 1)
    return out


def seed_result(log: RunLog) -> dict:
    final, last = log.finals["final_ngram_ttt"], log.train[-1]
    flags = _kv(final["rest"].strip("()"))
    result = dict(
        seed=int(log.settings["SEED"]) if log.settings["SEED"].lstrip("-").isdigit() else log.settings["SEED"],
        run_id=log.header["run_id"],
        log=str(log.path), log_sha256=log.sha256,
        **(dict(eval_log=str(log.eval_log.path), eval_log_sha256=log.eval_log.sha256, eval_gpus=log.eval_log.header["world_size"],
                eval_gpu=log.eval_log.header["device"], eval_torch=log.eval_log.header["torch"]) if log.eval_log else {}),
        val_bpb=final["val_bpb"], val_loss=final["val_loss"],
        eval_stack=dict(ngram=flags.get("ngram") == "1", ttt=flags.get("ttt") == "1"),
    )
    for name in FINAL_NAMES[:-1]:
        if name in log.finals:
            result[f"{name}_val_bpb"] = log.finals[name]["val_bpb"]
    if "final_int6_sliding_window" in log.finals:
        stride = _kv(log.finals["final_int6_sliding_window"]["rest"]).get("stride")
        result["sliding_window_stride"] = int(stride) if stride and stride.isdigit() else stride
    if log.audit is not None:
        result["ngram_audit"] = dict(log.audit)
    result.update(
        bytes_total=log.total_bytes, bytes_compressed=log.artifact["compressed_bytes"], bytes_code=log.artifact["code_bytes"],
        **({"bytes_source": log.header["source_bytes"]} if log.header.get("source_bytes") is not None else {}),
        int5_matrices=log.int5_matrices,
        steps=log.training_done["steps"], iterations=last["iterations"], stopped_early_wallclock=log.stopped_early,
        step_avg_ms=last["step_avg_ms"],
        train_wall_seconds=log.training_done["seconds"], train_elapsed_seconds=last["elapsed_s"],
        compile_warmup_seconds=log.compile_warmup_seconds,
        eval_seconds=eval_seconds(log),
        gpus=log.header["world_size"], gpu=log.header["device"], torch=log.header["torch"],
        attention=log.header["attention"], peak_memory_mib=log.peak_memory_mib,
    )
    return result


def build_submission(logs: list[RunLog], args, diffs: dict, code: dict | None = None, baseline: list[RunLog] = ()) -> dict:
    """The json. `code`: check_code's fields of the submitted program (--code), placed after bytes_code;
    `baseline`: the --baseline-log runs (checked_baseline), for the significance test."""
    seeds = [seed_result(log) for log in logs]
    bpb = [s["val_bpb"] for s in seeds]
    mean, std = _mean_std(bpb)
    first = logs[0]
    summary = {}
    for key in ("val_bpb", "final_int6_sliding_window_val_bpb", "final_int6_roundtrip_val_bpb", "ngram_only_val_bpb",
                "ttt_only_val_bpb", "pre_quant_val_bpb"):
        values = [s[key] for s in seeds if key in s]
        if len(values) == len(seeds):
            m, sd = _mean_std(values)
            summary[key] = dict(mean=_r(m), std=_r(sd), min=min(values), max=max(values))
    hardware = sorted({f"{s['gpus']}x {s['gpu']}" for s in seeds})
    sub = dict(
        name=args.name, blurb=args.blurb, author=args.author, github_id=args.github_id,
        date=args.date, track=TRACK,
        val_loss=_r(statistics.fmean(s["val_loss"] for s in seeds)),
        val_bpb=_r(mean), val_bpb_std=_r(std), n_seeds=len(seeds),
        bytes_total=max(s["bytes_total"] for s in seeds),
        bytes_code=max(s["bytes_code"] for s in seeds),
        **(code or {}),
        metric="val_bpb of final_ngram_ttt (the full legal eval stack; flags in eval_stack), mean over seeds; "
               "val_bpb_std is the sample std (ddof=1)",
        summary=summary,
        hardware=hardware[0] if len(hardware) == 1 else hardware,
        torch=sorted({s["torch"] for s in seeds}) if len({s["torch"] for s in seeds}) > 1 else seeds[0]["torch"],
        dataset=dict(data_path=first.settings.get("DATA_PATH"), tokenizer_path=first.settings.get("TOKENIZER_PATH"),
                     val_tokens=first.val_tokens,
                     official_tokenizer=not any("not the official sp1024" in w for w in first.warnings)),
        seeds=seeds,
        settings={k: v for k, v in first.settings.items() if k not in ALWAYS_DIFFERENT},
        generated_by=dict(tool="tools/make_submission.py", size_limit_bytes=SIZE_LIMIT_BYTES,
                          audit_tolerance=AUDIT_TOLERANCE),
    )
    if diffs:
        sub["settings_differ"] = {n: dict(zip((str(log.path) for log in logs), vals)) for n, vals in diffs.items()}
    if baseline:
        base_bpb = [log.finals["final_ngram_ttt"]["val_bpb"] for log in baseline]
        sig = welch_one_sided(bpb, statistics.fmean(base_bpb), statistics.stdev(base_bpb), len(base_bpb), args.delta)
        sig["baseline_changes"] = baseline_changes(logs[0], baseline[0], args)
        sig["baseline_seeds"] = [seed_result(log) for log in baseline]
    elif args.baseline_mean is not None:
        n_assumed = args.baseline_n is None
        sig = welch_one_sided(bpb, args.baseline_mean, args.baseline_std, len(bpb) if n_assumed else args.baseline_n,
                              args.delta)
        sig["baseline_n_assumed"] = n_assumed
    if baseline or args.baseline_mean is not None:
        ratios = [s["val_bpb"] / s["val_loss"] for s in seeds]  # the same val set: equal up to print rounding
        sig["bpb_per_nat"] = statistics.fmean(ratios)
        sig["delta_nats"] = args.delta / sig["bpb_per_nat"]
        sub["significance"] = sig
    return sub


# ----------------------------------------------------------------------------- the results table

def _bpb(log: RunLog, name: str) -> float | None:
    return log.finals[name]["val_bpb"] if name in log.finals else None


def _gains(log: RunLog) -> tuple[float | None, float | None]:
    """(TTT gain, mixer gain) from the final lines: sliding - ttt_only, and the mixer's pass without
    minus with it (ttt_only, or sliding when TTT was off, minus final_ngram_ttt)."""
    sliding, ttt, final = _bpb(log, "final_int6_sliding_window"), _bpb(log, "ttt_only"), _bpb(log, "final_ngram_ttt")
    ttt_gain = sliding - ttt if sliding is not None and ttt is not None else None
    before_mixer = ttt if ttt is not None else sliding
    return ttt_gain, (before_mixer - final if mixer_on(log) and before_mixer is not None else None)


def _f(x: float | None, digits: int = 5, sign: bool = False) -> str:
    return "–" if x is None else f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def check_ablation(log: RunLog) -> None:
    """An ablation is a finished training, or an EVAL_ONLY run that finished with an audited score."""
    if not _is_true(log.settings.get("EVAL_ONLY")):
        return check_training(log)
    if log.errors or "final_ngram_ttt" not in log.finals:
        raise Refusal(f"{log.path}: the eval did not finish: " + (f"ERROR: {log.errors[0]}" if log.errors else "no final_ngram_ttt line"))
    if mixer_on(log) and not (log.audit is not None and log.audit["max_abs_err"] <= AUDIT_TOLERANCE):
        raise Refusal(f"{log.path}: n-gram mixer on but the audit is missing or failed")


def _paths(log: RunLog) -> str:
    return f"`{log.path}`" + (f" + `{log.eval_log.path}`" if log.eval_log else "")


def results_table(seeds: list[RunLog], ablations: list[RunLog], baseline: list[RunLog] = (), significance: dict | None = None) -> str:
    """Markdown: one row per seed with mean +- std, the baseline's mean +- std (--baseline-log) and the
    test against it, then the ablation: from the first seed's own log the scores without the mixer
    (ttt_only) and without TTT (ngram_only) when it has them, then what each ablation log changed
    against the seed log of its SEED (else the first) and its score."""
    out = ["| seed | val_bpb (full stack) | sliding, model alone | TTT alone | TTT gain | mixer gain | bytes | steps | step_avg | log |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for log in seeds:
        ttt_gain, mixer_gain = _gains(log)
        out.append(f"| {log.settings['SEED']} | {_f(_bpb(log, 'final_ngram_ttt'))} | {_f(_bpb(log, 'final_int6_sliding_window'))} | "
                   f"{_f(_bpb(log, 'ttt_only'))} | {_f(ttt_gain, sign=True)} | {_f(mixer_gain, sign=True)} | {log.total_bytes:,} | "
                   f"{log.training_done['steps']} | {log.train[-1]['step_avg_ms']:.1f} ms | {_paths(log)} |")
    if len(seeds) > 1:
        stats = [_mean_std([_bpb(log, name) for log in seeds]) for name in ("final_ngram_ttt", "final_int6_sliding_window")]
        out.append(f"| mean ± std | {stats[0][0]:.5f} ± {stats[0][1]:.5f} | {stats[1][0]:.5f} ± {stats[1][1]:.5f} | | | | "
                   f"max {max(log.total_bytes for log in seeds):,} | | | |")
    if baseline:
        stats = [_mean_std([_bpb(log, name) for log in baseline]) for name in ("final_ngram_ttt", "final_int6_sliding_window")]
        changes = significance["baseline_changes"]
        if "RECIPE" in changes and len(changes) > 1:  # a preset changes many settings: the json lists them
            more = len(changes) - 1
            changes = f"`RECIPE={changes['RECIPE']}` and {more} more setting{'s' if more > 1 else ''} (`baseline_changes` in the json)"
        else:
            changes = ", ".join(f"`{n}={v}`" for n, v in changes.items()) or "(no setting differs)"
        out.append(f"| baseline: {changes}; seeds {', '.join(str(log.settings['SEED']) for log in baseline)} | "
                   f"{stats[0][0]:.5f} ± {stats[0][1]:.5f} | {stats[1][0]:.5f} ± {stats[1][1]:.5f} | | | | "
                   f"max {max(log.total_bytes for log in baseline):,} | | | {', '.join(_paths(log) for log in baseline)} |")
        t = significance["t"]
        out += ["", f"Mean minus the baseline's: {-significance['improvement_bpb']:+.5f} BPB (full stack); one-sided Welch test "
                    f"of an improvement by more than {significance['delta']} BPB: t = {'inf' if t is None else f'{t:.2f}'}, "
                    f"p = {significance['p_value']:.3g}."]
    first, rows = seeds[0], []
    final = _bpb(first, "final_ngram_ttt")
    if mixer_on(first) and _bpb(first, "ttt_only") is not None:
        rows.append(("NGRAM_ENABLED=0 (same run: `ttt_only`)", _bpb(first, "ttt_only"), final, first))
    if _bpb(first, "ngram_only") is not None and _bpb(first, "ttt_only") is not None:
        rows.append(("TTT_ENABLED=0 (same run: `ngram_only`)", _bpb(first, "ngram_only"), final, first))
    by_seed = {log.settings["SEED"]: log for log in seeds}
    for log in ablations:
        base = by_seed.get(log.settings.get("SEED"), seeds[0])
        eval_only = _is_true(log.settings.get("EVAL_ONLY"))  # scored an artifact: its training settings are unknown
        diffs = setting_differences([base, log], TRAINING_ONLY if eval_only else {"RUN_ID", "ARTIFACT_PATH", "EVAL_DUMP_NLL"})
        change = (", ".join(f"{n}={vals[1]}" for n, vals in diffs.items()) or "(no setting differs)") + (" (EVAL_ONLY)" if eval_only else "")
        rows.append((change, _bpb(log, "final_ngram_ttt"), _bpb(base, "final_ngram_ttt"), log))
    if rows:
        out += ["", "| change from the default | val_bpb (full stack) | vs default | log |", "| --- | --- | --- | --- |"]
        out += [f"| {change} | {_f(bpb)} | {_f(bpb - base, sign=True)} | {_paths(log)} |" for change, bpb, base, log in rows]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- the plot

def plot_logs(logs: list[RunLog], out: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        raise Refusal("--plot needs matplotlib (pip install matplotlib); nothing else requires it") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (ax_ls, ax_lt), (ax_vs, ax_vt) = axes
    markers = {"pre_quant": ("D", "pre_quant (EMA, before int6)"), "final_int6_roundtrip": ("o", "int6 roundtrip"), "final_int6_sliding_window": ("s", "sliding (neural only)"),
               "final_ngram_ttt": ("*", "full stack (final_ngram_ttt)")}
    labels = [log.label for log in logs]
    labels = [f"{lab} [{log.path.name}]" if labels.count(lab) > 1 else lab for lab, log in zip(labels, logs)]
    for i, (log, label) in enumerate(zip(logs, labels)):
        color = f"C{i % 10}"
        steps = [r["step"] for r in log.train]
        seconds = [r["elapsed_s"] for r in log.train]
        ax_ls.plot(steps, [r["train_loss"] for r in log.train], color=color, label=label)
        ax_lt.plot(seconds, [r["train_loss"] for r in log.train], color=color, label=label)

        def seconds_at(step):  # training clock at a step, interpolated between logged training lines
            pts = [(0, 0.0)] + [(s, t) for s, t in zip(steps, seconds) if t is not None]
            for (s0, t0), (s1, t1) in zip(pts, pts[1:]):
                if s0 <= step <= s1:
                    return t0 + (t1 - t0) * (step - s0) / max(s1 - s0, 1)
            return pts[-1][1]
        vs = [(v["step"], seconds_at(v["step"]), v["val_bpb"]) for v in log.val]
        last_step = log.training_done["steps"] if log.training_done else (steps[-1] if steps else 0)
        last_t = seconds_at(last_step)
        for ax, k in ((ax_vs, 0), (ax_vt, 1)):
            if vs:
                ax.plot([p[k] for p in vs], [p[2] for p in vs], color=color, marker=".", label=label)
            labelled = bool(vs)
            for name, (marker, _) in markers.items():
                if name in log.finals:
                    ax.plot([(last_step, last_t)[k]], [log.finals[name]["val_bpb"]], color=color, marker=marker,
                            markersize=9, linestyle="none", label=None if labelled else label)
                    labelled = True
    for ax, xlabel, ylabel, title in ((ax_ls, "step", "train_loss (nats/token)", "train loss vs step"),
                                      (ax_lt, "training seconds (elapsed:)", "train_loss (nats/token)", "train loss vs time"),
                                      (ax_vs, "step", "val_bpb", "val_bpb vs step"),
                                      (ax_vt, "training seconds (elapsed:)", "val_bpb", "val_bpb vs time")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax_ls.legend(fontsize=8)
    extra = [Line2D([], [], color="gray", marker=".", label="periodic val")] + \
            [Line2D([], [], color="gray", marker=m, linestyle="none", markersize=9, label=f"{lab} (after training)")
             for m, lab in markers.values()]
    ax_vs.legend(handles=extra, fontsize=8)
    handles, labels = ax_vt.get_legend_handles_labels()
    if handles:
        ax_vt.legend(fontsize=8)
    fig.suptitle(f"train_gpt.py: {len(logs)} run(s)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/make_submission.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write submission.json (track 10min_16mb) from train_gpt.py logs, one per seed. Every number "
                    "comes from the logs; each log's path and sha256 are recorded. val_bpb is the mean over seeds "
                    "of 'final_ngram_ttt val_bpb' (the full legal stack), val_bpb_std the sample std (ddof=1).",
        epilog=REFUSALS + "\n\n" + SIGNIFICANCE_HELP)
    parser.add_argument("--output", "-o", type=Path, default=Path("submission.json"), help="default: submission.json")
    add_submission_options(parser)
    parser.add_argument("--code", type=Path, metavar="PATH",
                        help="the train_gpt.py submitted (the packed one): record its code_sha256 and code_bytes; "
                             "refused unless every log's code_sha256 and code_bytes are this file's")
    table = parser.add_argument_group("results table (Markdown, for the README)")
    table.add_argument("--table", type=Path, metavar="OUT.md", help="seed rows with mean +- std, then the ablation")
    table.add_argument("--ablation", type=Path, action="append", default=[], metavar="LOG",
                       help="an ablation log (a training, or an EVAL_ONLY eval) for --table; repeatable")
    plot = parser.add_argument_group("plot (needs matplotlib)")
    plot.add_argument("--plot", type=Path, metavar="OUT.png",
                      help="2x2 PNG: train_loss and val_bpb vs step and vs training seconds, one line per log")
    plot.add_argument("--plot-only", action="store_true",
                      help="only draw --plot: no checks, no json (for ablations that differ in settings)")
    return parser


def add_submission_options(parser: argparse.ArgumentParser) -> None:
    """The logs and the options of the json and its checks (also tools/pack_submission.py's)."""
    parser.add_argument("logs", nargs="+", type=Path, help="logs/<RUN_ID>.txt of the runs (one per seed)")
    parser.add_argument("--name", default="", help="submission name (placeholder: empty)")
    parser.add_argument("--blurb", default="", help="one-paragraph description (placeholder: empty)")
    parser.add_argument("--author", default="", help="author name (placeholder: empty)")
    parser.add_argument("--github-id", default="", help="GitHub user id (placeholder: empty)")
    parser.add_argument("--date", default=datetime.date.today().isoformat(), help="ISO date (default: today)")
    parser.add_argument("--allow-different-settings", action="store_true",
                        help="accept logs whose settings differ beyond SEED and RUN_ID (recorded in settings_differ)")
    parser.add_argument("--ignore-setting", action="append", default=[], metavar="NAME",
                        help="also let setting NAME differ (e.g. ARTIFACT_PATH); repeatable")
    sig = parser.add_argument_group("significance (one-sided Welch t-test, in val_bpb units; see below)")
    sig.add_argument("--baseline-log", type=Path, action="append", default=[], metavar="LOG",
                     help="a log of the baseline's seeds (a training, or its EVAL_ONLY log); repeatable: X, S and N "
                          "come from them")
    sig.add_argument("--baseline-mean", type=float, help="baseline mean val_bpb X")
    sig.add_argument("--baseline-std", type=float, help="baseline sample std S (needed with --baseline-mean)")
    sig.add_argument("--baseline-n", type=int, help="baseline number of runs N (default: our number of seeds)")
    sig.add_argument("--delta", type=float, default=0.005,
                     help="required improvement D, in val_bpb units (default 0.005; NOT converted from nats)")


def check_option_pairs(parser: argparse.ArgumentParser, args) -> None:
    if (args.baseline_mean is None) != (args.baseline_std is None):
        parser.error("--baseline-mean and --baseline-std go together")
    if args.baseline_log and (args.baseline_mean is not None or args.baseline_n is not None):
        parser.error("--baseline-log takes the baseline's mean, std and count from its logs: "
                     "not with --baseline-mean, --baseline-std or --baseline-n")


def checked_logs(args) -> tuple[list[RunLog], dict]:
    """Parse args.logs, join each EVAL_ONLY log to its training, refuse anything that is not distinct, complete
    trainings of one configuration (Refusal). Returns the seed logs and the settings that differ."""
    logs = pair_split_runs([parse_log(p) for p in args.logs])
    for log in logs:
        check_training(log)
    ignored = set(ALWAYS_DIFFERENT) | set(args.ignore_setting)
    diffs = check_distinct(logs, args.allow_different_settings, ignored)
    for key in ("device", "torch"):
        values = {r.header[key] for log in logs for r in (log, log.eval_log) if r}
        if len(values) > 1:
            print(f"make_submission: warning: the logs ran on different {key}: {sorted(values)}", file=sys.stderr)
    return logs, diffs


def checked_ablations(paths: list[Path]) -> list[RunLog]:
    ablations = pair_split_runs([parse_log(p) for p in paths], unpaired_ok=True)
    for log in ablations:
        check_ablation(log)
    return ablations


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plot_only and args.plot is None:
        parser.error("--plot-only needs --plot OUT.png")
    if args.ablation and args.table is None:
        parser.error("--ablation goes with --table OUT.md")
    check_option_pairs(parser, args)
    try:
        logs = [parse_log(p) for p in args.logs]
        if args.plot_only:
            try:  # a training and the EVAL_ONLY log of its artifact make one line
                logs = pair_split_runs(logs, unpaired_ok=True)
            except Refusal:
                logs = [parse_log(p) for p in args.logs]
            for log in logs:
                if log.n_runs > 1:
                    print(f"make_submission: warning: {log.path} holds {log.n_runs} runs; plotting the last",
                          file=sys.stderr)
            plot_logs(logs, args.plot)
            print(f"wrote {args.plot} ({len(logs)} logs)")
            return 0
        logs, diffs = checked_logs(args)
        code = None
        if args.code is not None:
            try:
                code = check_code(logs, args.code.read_bytes(), str(args.code))
            except OSError as e:
                raise Refusal(f"{args.code}: cannot read --code ({e.strerror or e})") from None
        baseline = checked_baseline(args, logs)
        submission = build_submission(logs, args, diffs, code, baseline)
        ablations = checked_ablations(args.ablation)
        if args.table is not None:
            args.table.parent.mkdir(parents=True, exist_ok=True)
            args.table.write_text(results_table(logs, ablations, baseline, submission.get("significance")))
        if args.plot is not None:
            plot_logs(logs, args.plot)
    except Refusal as e:
        print(f"make_submission: refused: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(submission, indent=2) + "\n")
    std = submission["val_bpb_std"]
    line = f"wrote {args.output}: val_bpb {submission['val_bpb']:.8f}" + (f" +- {std:.8f}" if std is not None else "") + \
           f" over {len(logs)} seed(s), bytes_total {submission['bytes_total']:,}"
    if "significance" in submission:
        s = submission["significance"]
        line += f", improvement_bpb {s['improvement_bpb']:.6f}, p={s['p_value']:.3g} (delta {s['delta']})"
    print(line + (f", plot {args.plot}" if args.plot else "") + (f", table {args.table}" if args.table else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
