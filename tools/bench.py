"""Training and eval speed of train_gpt.py, measured on the program's own code paths.

  python tools/bench.py train [--steps 50] [--peak-tflops 989] [--measured-tflops 790] [--program PATH]
  python tools/bench.py train --steps 12 --profile 3 [--bandwidth] [--gaps]   (where the step's device time goes)
  python tools/bench.py compare --against REF_OR_FILE [--steps 30] [--rounds 2] [--program PATH] [--program-env K=V]
  torchrun --standalone --nproc_per_node=4 tools/bench.py train
  python tools/bench.py eval --artifact final_model.int6.ptz [--phases roundtrip,sliding,ngram,ttt] [--repeat 2]
  python tools/bench.py eval --untrained [--phases ...] [--program PATH] [--profile [--bandwidth]]   (timing without an artifact)
  python tools/bench.py curves BEFORE_LOG AFTER_LOG [--ranges 1-10,11-50,51-100,101-200,201-300]

Settings come from the usual env vars (train_gpt.Hyperparameters). `train` then overrides, on the
args object, ITERATIONS=steps, WARMDOWN_ITERS=0, MAX_WALLCLOCK_SECONDS=0, VAL_LOSS_EVERY=0 and
TRAIN_LOG_EVERY=steps, and calls train_gpt.train(): its WARMUP_STEPS compile warm-up is not in
the step timings. `eval` loads the artifact and calls train_gpt.evaluate() per phase as run() does
(the ttt phase follows TTT_MODE: TTT_MODE=lora times the document-level LoRA pass).
`compare` times two versions of the program one after the other on the same GPU (`train` for
each, in its own process, alternating for --rounds) and prints their ratio and how far their
train losses are apart; --against takes a git ref (its train_gpt.py) or a file.
`curves` reads two training logs (train_gpt.py or bench.py train) and compares their train loss
step by step, per range of steps, naming every setting the two runs did not share: the check that
a faster path trains the same model function.
The log goes to logs/bench/<RUN_ID>.txt (train_gpt.make_logger); the table is its last lines.
See tools/README.md."""
from __future__ import annotations

import argparse, bisect, contextlib, dataclasses, importlib.util, os, re, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

from cuda_timing import mean_ms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train_gpt as tg  # noqa: E402

FULL_VAL_TARGETS = 62_021_632  # scored targets of the full FineWeb val set at seq_len 2048
PHASES = ("roundtrip", "sliding", "ngram", "ttt")  # run in this order: TTT changes the model, so last
STEP_LINE = re.compile(r"^step:(\d+)/(\d+) .* step_avg:([\d.]+)ms tokens_per_s:([\d.]+)M ")
WARMUP_LINE = re.compile(r"^compile_warmup done steps:\d+ seconds:([\d.]+)")


def flops_per_token(model: tg.GPT, args) -> tuple[int, int, int]:
    """Training FLOPs per token = 6*N_matmul + 6*L*T*d.
    N_matmul: weights of every CastedLinear plus the tied embedding as LM head (2 FLOPs per weight
    forward, 4 backward). Attention: per layer and token, QK^T and AV cost 2*T*d each forward, 12*T*d
    with backward; causal masking halves it: 6*L*T*d. Not counted: embedding lookups, norms, rotary,
    softmax, elementwise ops and Muon's Newton-Schulz iterations."""
    n_matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, tg.CastedLinear)) + model.tok_emb.weight.numel()
    attention = 6 * args.num_layers * args.train_seq_len * args.model_dim
    return 6 * n_matmul + attention, n_matmul, attention


def header(args, run, log, log_path):
    """The program's own run header (settings, code hash), then the table's first rows."""
    device = run.device
    tg.log_header(args, run, log_path.stem, tg.code_size())
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    attention = "flash_attn_3" if tg.flash_attn_func is not None and device.type == "cuda" else "sdpa"
    rows = [("device", f"{gpu} x{run.world}"), ("torch", torch.__version__), ("attention", attention)]
    return rows, device.type == "cuda"


def table(log, title: str, rows):
    """Rows (name, value[, note]) as aligned columns; (text,) as is; () as a blank line."""
    log(f"==== bench {title} ====")
    for row in rows:
        log(row[0] if len(row) == 1 else "" if not row else f"{row[0]:<20}  {row[1]!s:<16}  {row[2] if len(row) > 2 else ''}".rstrip())


def new_profiler(cuda: bool, schedule=None):
    """torch.profiler over CPU ops and, on CUDA, the GPU's kernels (read by profile_rows)."""
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    return torch.profiler.profile(activities=activities, schedule=schedule)


def bench_train(cli, args, run, log, log_path):
    device, world = run.device, run.world
    args.iterations, args.warmdown_iters, args.max_wallclock_seconds = cli.steps, 0, 0.0
    args.val_loss_every, args.train_log_every = 0, cli.steps
    rows, cuda = header(args, run, log, log_path)
    log(f"bench_overrides ITERATIONS={cli.steps} WARMDOWN_ITERS=0 MAX_WALLCLOCK_SECONDS=0 VAL_LOSS_EVERY=0 "
        f"TRAIN_LOG_EVERY={cli.steps} (set after Hyperparameters(); the hyperparameter lines above show them)")
    if cuda and args.warmup_steps == 0:
        log("WARNING: WARMUP_STEPS=0: torch.compile time falls inside the timed steps")
    torch.manual_seed(args.seed)
    model = tg.GPT(args).to(device)
    fpt, n_matmul, attention = flops_per_token(model, args)
    log(f"model_params:{sum(p.numel() for p in model.parameters())} matmul_params:{n_matmul}")
    lines = []
    profiler = None
    if cli.profile:  # every step logs, so each step line can advance the profiler's schedule
        args.train_log_every = 1
        profiler = new_profiler(cuda, torch.profiler.schedule(wait=max(0, cli.steps - cli.profile - 1), warmup=1, active=cli.profile))
        profiler.start()

    def capture(msg):
        lines.append(msg)
        log(msg)
        if profiler and STEP_LINE.match(msg):
            profiler.step()

    tg.synchronize(device)
    t0 = time.perf_counter()
    steps = tg.train(args, model, dataclasses.replace(run, log=capture))
    tg.synchronize(device)
    wall = time.perf_counter() - t0
    last = [m for m in map(STEP_LINE.match, lines) if m and int(m[1]) == steps]
    if steps != cli.steps or not last:
        raise tg.UserError(f"train() stopped at step {steps} of {cli.steps} or logged no final step line")
    step_ms, tokens_per_s = float(last[-1][3]), float(last[-1][4]) * 1e6
    steady = steady_ms({int(m[1]): float(m[3]) for m in map(STEP_LINE.match, lines) if m})
    warmup = [float(m[1]) for m in map(WARMUP_LINE.match, lines) if m]
    timed_wall = wall - (warmup[-1] if warmup else 0.0)
    per_gpu = tokens_per_s / world
    grad_accum = args.grad_accum_steps or max(1, 8 // world)
    rows += [
        ("world_size", world),
        ("steps", steps, f"timed (WARMUP_STEPS={args.warmup_steps} compile warm-up steps before them, not timed)"),
        ("batch_tokens", args.train_batch_tokens, f"per step, all GPUs (seq_len {args.train_seq_len}, grad_accum {grad_accum})"),
        ("ms_per_step", f"{step_ms:.1f}", "step_avg of the log's final step line"),
    ] + ([("ms_per_step_steady", f"{steady:.1f}", f"steps {STEADY_FROM + 1}-{steps}, from the step lines (steady_ms)")] if steady else []) + [
        ("ms_per_step_wall", f"{1000 * timed_wall / steps:.1f}",
         "own timer: train() minus the warm-up line's seconds; includes setup outside the step loop"),
        ("setup_overhead_s", f"{timed_wall - steps * step_ms / 1000:.2f}", "= wall - steps * ms_per_step"),
        ("tokens_per_s", f"{tokens_per_s:.0f}", "whole job, from the log's tokens_per_s"),
        ("tokens_per_s_per_gpu", f"{per_gpu:.0f}", f"tokens_per_s / {world}"),
        ("flops_per_token", f"{fpt:.6e}",
         f"6*N_matmul + 6*L*T*d = 6*{n_matmul} + 6*{args.num_layers}*{args.train_seq_len}*{args.model_dim}"),
        ("tflops_per_gpu", f"{fpt * per_gpu / 1e12:.4g}", "flops_per_token * tokens_per_s_per_gpu"),
        ("mfu_vendor_peak", f"{100 * fpt * per_gpu / (cli.peak_tflops * 1e12):.4g}%", f"of {cli.peak_tflops:g} TFLOP/s per GPU (--peak-tflops)"),
        ("mfu_measured_peak", f"{100 * fpt * per_gpu / (cli.measured_tflops * 1e12):.4g}%",
         f"of {cli.measured_tflops:g} TFLOP/s per GPU (--measured-tflops: bf16 8192^3 matmul)"),
    ]
    if cuda:
        rows.append(("peak_memory_mib", torch.cuda.max_memory_allocated(device) // 2**20, "torch.cuda.max_memory_allocated, rank 0"))
    if profiler:
        profiler.stop()
        profiled = profiled_steps(profiler.events())
        if not profiled:
            raise tg.UserError(f"the profile holds no {MUON_STEP} range: no training step was launched while it recorded")
        rows += [()] + profile_rows(profiler, profiled, cuda)
        if cli.bandwidth and cuda:
            rows += [()] + bandwidth_report(profiler, profiled, device)
        if cli.gaps and cuda:
            rows += [()] + gap_report(profiler, profiled)
    table(log, "train", rows)


# First match wins. Triton first: inductor names a kernel after the ops it fuses, so the kernel that
# writes attention's inputs says "scaled_dot_product_cudnn_attention". Attention before matmul:
# cuDNN's names say wgmma.
KERNEL_KINDS = [("compiled (triton)", re.compile(r"^triton", re.I)),
                ("attention", re.compile(r"cudnn|flash|fmha|attention|sdpa", re.I)),
                ("matmul", re.compile(r"gemm|nvjet|cutlass|xmma|cublas", re.I)),
                ("communication", re.compile(r"nccl", re.I)),
                ("memcpy/memset", re.compile(r"memcpy|memset", re.I))]


MUON_STEP = "Optimizer.step#Muon.step"  # torch.optim's range around each optimizer step: one per training step
ANNOTATION = re.compile(r"^ProfilerStep|#")  # ranges (the step, Optimizer.step#Muon.step) that span kernels, not kernels
# inductor_meta of a generated Triton kernel, one line of its source; kernel_num_gb is there when
# torch._inductor.config.benchmark_kernel is on.
KERNEL_GB = re.compile(r"'kernel_name': '(\w+)'[^\n]*?'kernel_num_gb': ([0-9.e+-]+)")


def profiled_steps(events) -> int:
    """Training steps launched while the profiler recorded: the host's Optimizer.step#Muon.step ranges
    (a CUDA profile also holds a copy of each range on the GPU's timeline)."""
    return sum(e.name == MUON_STEP and e.device_type == torch.autograd.DeviceType.CPU for e in events)


def kernel_kind(name: str) -> str:
    return next((k for k, pattern in KERNEL_KINDS if pattern.search(name)), "other")


def profile_rows(profiler, steps: int, cuda: bool) -> list:
    """Device time per step by kind of kernel, then by calls per step, then the 30 costliest kernels (CPU ops on CPU)."""
    events = [e for e in profiler.key_averages() if (e.device_type == torch.autograd.DeviceType.CUDA) == cuda
              and not ANNOTATION.search(e.key)]

    def own_ms(e):
        return (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1000 / steps
    # Calls per step tell where a kernel runs: layers x micro-steps (88x for RECIPE=pr803 at its batch), once
    # per micro-step (8x), or once per step (1x: the optimizers, EMA, clipping).
    kinds: dict[str, float] = {}
    by_calls: dict[int, dict[str, float]] = {}
    for e in events:
        kind = kernel_kind(e.key)
        kinds[kind] = kinds.get(kind, 0.0) + own_ms(e)
        bucket = by_calls.setdefault(max(1, e.count // steps), {})
        bucket[kind.split()[0]] = bucket.get(kind.split()[0], 0.0) + own_ms(e)
    total = sum(kinds.values())
    rows = [(f"profile: {'device kernel' if cuda else 'cpu op'} time per step, over {steps} profiled steps",)]
    rows += [(f"profile_{kind.split()[0]}", f"{ms:.1f} ms", f"{100 * ms / total:.1f}%") for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1])]
    rows.append(("profile_total", f"{total:.1f} ms", "sum of the kinds (kernels of overlapping streams add up)"))
    rows.append(("time by calls per step:",))
    rows += [(f"  {sum(b.values()):8.2f}  {calls:5d}x  " + ", ".join(f"{k} {ms:.2f}" for k, ms in sorted(b.items(), key=lambda kv: -kv[1])),)
             for calls, b in sorted(by_calls.items(), key=lambda cb: -sum(cb[1].values()))]
    rows.append(("top kernels, ms per step:",))
    rows += [(f"  {own_ms(e):8.2f}  {e.count // steps:5d}x  {e.key[:200]}",) for e in sorted(events, key=own_ms, reverse=True)[:30]]
    return rows


def gap_intervals(spans: list[tuple[float, float, str]]) -> list[tuple[float, float, str, str]]:
    """(start, end, name before, name after) of each stretch in which none of the spans (start us,
    end us, name) runs: the device's kernels, copies and sets, streams merged into one busy line."""
    gaps, end, before = [], None, ""
    for start, stop, name in sorted(spans):
        if end is not None and start > end:
            gaps.append((end, start, before, name))
        if end is None or stop > end:
            end, before = stop, name
    return gaps


def gap_rows(gaps: list[tuple[float, float, str, str]], steps: int, top: int = 15) -> list:
    """Where the GPU runs no kernel (gap_intervals): the time between the end of everything before and
    the next start, per step, in total and grouped by the names on either side (the costliest groups first)."""
    groups: dict[tuple[str, str], list] = {}
    for start, stop, before, after in gaps:
        group = groups.setdefault((before, after), [0.0, 0])
        group[0] += stop - start
        group[1] += 1
    total = sum(g[0] for g in groups.values())
    rows = [("gaps: no kernel running on the GPU (streams merged), between the first and last kernel of the profiled steps",),
            ("gap_ms_per_step", f"{total / 1000 / steps:.2f} ms", f"{sum(g[1] for g in groups.values()) / steps:.1f} gaps per step"),
            ("gaps by the kernels before and after, ms per step (ms, gaps per step, before -> after):",)]
    rows += [(f"  {us / 1000 / steps:8.3f}  {n / steps:6.1f}x  {a[:70]} -> {b[:70]}",)
             for (a, b), (us, n) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:top]]
    return rows


def host_rows(gaps: list[tuple[float, float, str, str]], host_spans: list[tuple[float, float, str]], steps: int,
              min_us: float = 20.0, top: int = 20) -> list:
    """What the host ran while the GPU waited: over the gaps of at least min_us (shorter ones are the
    pause between back-to-back kernels), the time each host op (torch op, CUDA runtime call or
    annotated range) overlaps them, per step. Nested ops each count, so the shares add up to more
    than 100%."""
    long = sorted((start, stop) for start, stop, *_ in gaps if stop - start >= min_us)
    starts = [start for start, _ in long]
    overlap: dict[str, float] = {}
    for start, stop, name in host_spans:
        i = max(bisect.bisect_right(starts, start) - 1, 0)
        while i < len(long) and long[i][0] < stop:
            shared = min(stop, long[i][1]) - max(start, long[i][0])
            if shared > 0:
                overlap[name] = overlap.get(name, 0.0) + shared
            i += 1
    total = sum(stop - start for start, stop in long)
    rows = [(f"host during the gaps of at least {min_us:g} us (ms per step, share of those gaps, host op; nested ops each count):",),
            ("long_gap_ms_per_step", f"{total / 1000 / steps:.2f} ms", f"{len(long) / steps:.1f} gaps per step")]
    rows += [(f"  {us / 1000 / steps:8.3f}  {100 * us / total:5.1f}%  {name[:120]}",)
             for name, us in sorted(overlap.items(), key=lambda kv: -kv[1])[:top]]
    return rows


def gap_report(profiler, steps: int) -> list:
    """gap_rows and host_rows for a finished CUDA profile (ranges such as ProfilerStep# that span
    kernels left out of the device's; the step range left out of the host's)."""
    events = profiler.events()
    device = [(e.time_range.start, e.time_range.end, e.name) for e in events
              if e.device_type == torch.autograd.DeviceType.CUDA and not ANNOTATION.search(e.name)]
    host = [(e.time_range.start, e.time_range.end, e.name) for e in events
            if e.device_type == torch.autograd.DeviceType.CPU and not e.name.startswith("ProfilerStep")]
    gaps = gap_intervals(device)
    return gap_rows(gaps, steps) + [()] + host_rows(gaps, host, steps)


def kernel_gigabytes(folder: Path) -> dict[str, set[float]]:
    """Inductor's estimate of the bytes each generated Triton kernel reads and writes per call, by
    kernel name, from the sources in its cache folder (a name can stand for several kernels)."""
    found: dict[str, set[float]] = {}
    for path in folder.rglob("*.py"):
        for m in KERNEL_GB.finditer(path.read_text(errors="ignore")):
            found.setdefault(m[1], set()).add(round(float(m[2]), 9))
    return found


def copy_gb_per_s(device) -> float:
    """Device-to-device copy of 1 GiB, read + write counted: the bandwidth an elementwise kernel can reach."""
    x = torch.empty(2**28, device=device)
    y = torch.empty_like(x)
    return 2 * x.nbytes / 1e9 / (mean_ms(lambda: y.copy_(x), calls=20, warmup=1) / 1000)


def bandwidth_rows(kernels: list[tuple[str, float, int]], gigabytes: dict[str, set[float]], copy_gbps: float) -> list:
    """Compiled kernels (name, ms per step, calls per step) against their bytes: how far each is from
    running at copy bandwidth, and what their bytes would take at it (the floor without fewer bytes)."""
    known = [(name, ms, calls, calls * next(iter(gigabytes[name]))) for name, ms, calls in kernels
             if len(gigabytes.get(name, ())) == 1]
    unknown = [(name, ms) for name, ms, _ in kernels if len(gigabytes.get(name, ())) != 1]
    gb, ms = sum(k[3] for k in known), sum(k[1] for k in known)
    floor_ms = 1000 * gb / copy_gbps
    rows = [("bandwidth: compiled kernels' bytes (inductor's estimate, kernel_num_gb) against their profiled time",),
            ("copy_bandwidth", f"{copy_gbps:.0f} GB/s", "device-to-device copy of 1 GiB, read + write counted"),
            ("compiled_gb_per_step", f"{gb:.2f} GB", f"{len(known)} kernels, {ms:.1f} ms per step"),
            ("compiled_gb_per_s", f"{1000 * gb / ms if ms else 0:.0f} GB/s", f"{100 * floor_ms / ms if ms else 0:.1f}% of copy_bandwidth"),
            ("compiled_floor", f"{floor_ms:.1f} ms", "those bytes at copy_bandwidth"),
            ("no_byte_estimate", f"{sum(m for _, m in unknown):.1f} ms", f"{len(unknown)} kernels (none found, or one name with several estimates)"),
            ("kernels by time over their floor, ms per step (over, time, GB/s, calls, name):",)]
    over = sorted(known, key=lambda k: k[1] - 1000 * k[3] / copy_gbps, reverse=True)[:20]
    rows += [(f"  {ms - 1000 * g / copy_gbps:7.2f}  {ms:7.2f}  {1000 * g / ms:5.0f}  {calls:4d}x  {name[:160]}",) for name, ms, calls, g in over]
    return rows


def bandwidth_report(profiler, steps: int, device) -> list:
    """bandwidth_rows for a finished CUDA profile of a run compiled with benchmark_kernel on."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    kernels = [(e.key, e.self_device_time_total / 1000 / steps, e.count // steps) for e in profiler.key_averages()
               if e.device_type == torch.autograd.DeviceType.CUDA and e.key.startswith("triton")]
    return bandwidth_rows(kernels, kernel_gigabytes(Path(cache_dir())), copy_gb_per_s(device))


def run_phase(phase: str, model, args, run, val) -> dict:
    """The evaluate() call of train_and_score() for this phase (ttt under TTT_MODE=lora: lora_evaluate())."""
    if phase == "roundtrip":
        return tg.evaluate(model, args, run, val, args.eval_seq_len, phase)
    if phase == "sliding":
        return tg.evaluate(model, args, run, val, args.eval_stride, phase)
    if phase == "ngram":
        return tg.evaluate(model, args, run, val, args.eval_stride, phase, use_mixer=True)
    if args.ttt_mode == "lora":
        return tg.lora_evaluate(model, args, run, val, phase, use_mixer=args.ngram_enabled)
    return tg.evaluate(model, args, run, val, args.eval_stride, phase, use_mixer=args.ngram_enabled, ttt=True,
                       temperature=args.ttt_temperature)


def bench_eval(cli, args, run, log, log_path):
    device, world = run.device, run.world
    rows, cuda = header(args, run, log, log_path)
    phases = [p for p in PHASES if p in cli.phases]
    repeat = cli.repeat or (2 if cuda else 1)
    sp = tg.load_tokenizer(args, log)
    val = tg.ValSet(tg.load_val_tokens(args).to(device), tuple(t.to(device) for t in tg.byte_tables(sp)), sp.bos_id())
    n_targets = len(val.tokens) - 1
    log(f"val_tokens:{n_targets} (scored targets)")
    torch.manual_seed(args.seed)
    model = tg.GPT(args).to(device)
    if cli.untrained:  # eval's cost does not depend on the weights: time it without training first
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        artifact = "untrained (initial weights of SEED; the scores are meaningless, the timings are not)"
        log(f"artifact:none untrained weights phases:{','.join(phases)} repeat:{repeat}")
    else:
        if not (cli.artifact or args.artifact_path):
            raise tg.UserError("bench.py eval needs an artifact: --artifact PATH (or ARTIFACT_PATH), or --untrained")
        artifact = Path(cli.artifact or args.artifact_path)
        tg.load_artifact(artifact, model)
        log(f"artifact:{artifact} bytes:{artifact.stat().st_size} phases:{','.join(phases)} repeat:{repeat}")
    rows += [("world_size", world), ("artifact", str(artifact)), ("val_targets", n_targets, "VAL_MAX_TOKENS caps them"), ()]
    rows.append((f"{'phase':<10} {'repeat':<6} {'seconds':>9} {'eval_s':>9} {'targets':>10} {'tok/s/gpu':>10} {'full_8gpu_s':>11}",))
    profiles = []
    for phase in phases:
        for r in range(1, repeat + 1):
            if phase == "ttt" and cli.untrained:  # the starting weights again (same module object, so compiled graphs are reused)
                model.load_state_dict(initial)
            elif phase == "ttt":
                tg.load_artifact(artifact, model)
            lines = []
            phase_run = dataclasses.replace(run, log=lambda msg: (lines.append(msg), log(msg)))
            profiler = new_profiler(cuda) if cli.profile and r == repeat else None
            tg.synchronize(device)
            t0 = time.perf_counter()
            with profiler or contextlib.nullcontext():
                result = run_phase(phase, model, args, phase_run, val)
                tg.synchronize(device)
            seconds = time.perf_counter() - t0
            if profiler:
                profiles.append((phase, seconds, profiler))
            done = [m for m in (re.match(rf"^eval:{phase} seconds:\S+ targets:(\d+) ", s) for s in lines) if m]
            targets = int(done[-1][1])
            per_gpu = targets / seconds / world
            full = FULL_VAL_TARGETS / (per_gpu * 8)
            scores = " ".join(f"{k}:{v:.6f}" for k, v in result.items() if k in ("val_bpb", "mixed_bpb"))
            log(f"bench_eval phase:{phase} repeat:{r}/{repeat} seconds:{seconds:.3f} eval_seconds:{result['seconds']:.3f} "
                f"targets:{targets} tokens_per_s_per_gpu:{per_gpu:.1f} full_val_8gpu_seconds:{full:.1f} {scores}")
            rows.append((f"{phase:<10} {f'{r}/{repeat}' + ('*' if r == repeat else ''):<6} {seconds:9.3f} {result['seconds']:9.3f} "
                         f"{targets:10d} {per_gpu:10.1f} {full:11.1f}",))
    for phase, seconds, profiler in profiles:  # the pass is one "step": its device time against its wall time
        rows += [(), (f"profile of phase {phase} (its last call, {seconds * 1000:.1f} ms wall, profiler on):",)] + profile_rows(profiler, 1, cuda)
        if cli.bandwidth and cuda:  # "per step" below: per call of the phase
            rows += bandwidth_report(profiler, 1, device)
    if cuda:
        rows += [(), ("peak_memory_mib", torch.cuda.max_memory_allocated(device) // 2**20, "torch.cuda.max_memory_allocated, rank 0")]
    rows += [(), ("* reported: the last repeat (the first call of each phase includes torch.compile on GPU)",),
             ("seconds: own timer (synchronized) around evaluate(); eval_s: evaluate()'s own; tok/s/gpu = targets / seconds / world",),
             (f"full_8gpu_s = {FULL_VAL_TARGETS} / (tok/s/gpu * 8): assumes the per-GPU speed holds on 8 GPUs and on the whole val set",)]
    table(log, "eval", rows)


def bench_mixer(cli, args, run, log, log_path):
    """The mixer on a token stream as long as the full val set: its up-front counting once, then the
    per-chunk work of one of 8 ranks (target column + audit rows) on --chunks chunks, extrapolated."""
    device = run.device
    rows, cuda = header(args, run, log, log_path)
    files = sorted(Path(args.data_path).glob("fineweb_train_*.bin")) + sorted(Path(args.data_path).glob("fineweb_val_*.bin"))
    parts, have = [], 0
    for f in files:
        if have >= cli.tokens:
            break
        parts.append(torch.from_numpy(tg.read_shard(f)[:cli.tokens - have].astype(np.int64)))
        have += len(parts[-1])
    tokens = torch.cat(parts).long().to(device)
    chunk_tokens = args.ttt_chunk_tokens
    n_chunks = -(-(len(tokens) - 1) // chunk_tokens)
    log(f"bench_mixer tokens:{len(tokens)} from {len(parts)} shard(s) of {args.data_path} chunks:{n_chunks}")
    tg.synchronize(device)
    t0 = time.perf_counter()
    mixer = tg.NgramMixer(args, tokens)  # as evaluate(): every earlier target counts
    tg.synchronize(device)
    count_seconds = time.perf_counter() - t0
    g = torch.Generator(device=device).manual_seed(0)
    share = -(-chunk_tokens // 8)
    audit = max(1, args.ngram_audit_positions // 8)
    vocab = torch.arange(args.vocab_size, device=device)
    picked = torch.linspace(1, n_chunks - 1, min(cli.chunks, n_chunks - 1)).long().tolist()
    mixer_seconds = 0.0
    for c in picked:
        positions = torch.arange(c * chunk_tokens + 1, min(c * chunk_tokens + share, len(tokens) - 1) + 1, device=device)
        logits = torch.randn(len(positions), args.vocab_size, device=device, dtype=torch.float64, generator=g) * 3
        p = torch.softmax(logits, 1)
        entropy = -(p * p.log()).sum(1)
        target = tokens[positions, None]
        tg.synchronize(device)
        t0 = time.perf_counter()
        mixed, q, bins = mixer.probabilities(p.gather(1, target), entropy, positions, target)
        mixer.alpha_losses += mixer.alpha_loss_table(p.gather(1, target).squeeze(1), q.squeeze(1), bins)
        rows_at = torch.linspace(0, len(positions) - 1, audit, device=device).long()
        full = mixer.probabilities(p[rows_at], entropy[rows_at], positions[rows_at], vocab.expand(audit, -1))[0]
        err = float((full.sum(1) - 1).abs().max())  # also waits for the device
        mixer_seconds += time.perf_counter() - t0
    per_chunk = mixer_seconds / len(picked)
    full_seconds = count_seconds + per_chunk * n_chunks
    log(f"bench_mixer count_seconds:{count_seconds:.2f} per_chunk_seconds:{per_chunk:.5f} chunks_timed:{len(picked)} "
        f"full_pass_seconds_per_gpu:{full_seconds:.1f} audit_max_abs_err:{err:.3e}")
    rows += [("tokens", len(tokens), f"{n_chunks} chunks of {chunk_tokens}"),
             ("count_seconds", f"{count_seconds:.2f}", "NgramMixer(...): all n-gram ids and earlier-target counts, once per pass"),
             ("per_chunk_ms", f"{1000 * per_chunk:.2f}", f"one rank of 8: {share} target columns + {audit} full audit rows"),
             ("pass_seconds", f"{full_seconds:.1f}", "count_seconds + per_chunk * chunks: the mixer's share of one eval pass per GPU")]
    if cuda:
        rows.append(("peak_memory_mib", torch.cuda.max_memory_allocated(device) // 2**20, "torch.cuda.max_memory_allocated"))
    table(log, "mixer", rows)


def load_program(path: Path):
    """Import another train_gpt.py (an older version, say) in place of the repo's."""
    spec = importlib.util.spec_from_file_location("train_gpt", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_gpt"] = module
    spec.loader.exec_module(module)
    return module


def program_source(against: str, folder: Path) -> Path:
    """A file as is, else the train_gpt.py of git ref `against`, written into folder."""
    if Path(against).is_file():
        return Path(against).resolve()
    shown = subprocess.run(["git", "-C", str(REPO), "show", f"{against}:train_gpt.py"], capture_output=True)
    if shown.returncode:
        raise tg.UserError(f"--against {against}: neither a file nor a git ref with a train_gpt.py "
                           f"({shown.stderr.decode().strip()})")
    path = folder / against.replace("/", "_") / "train_gpt.py"
    path.parent.mkdir(parents=True)
    path.write_bytes(shown.stdout)
    return path


TABLE_ROW = re.compile(r"^(ms_per_step|ms_per_step_steady|tokens_per_s_per_gpu|peak_memory_mib)\s{2,}(\S+)", re.M)
LOSS_LINE = re.compile(r"^step:(\d+)/\d+ train_loss:(\S+) ", re.M)


def last_run(text: str) -> str:
    """A log appended by reruns: its last run, from its run_id: header line on."""
    parts = text.split("\nrun_id:")
    return parts[0] if len(parts) == 1 else "run_id:" + parts[-1]


def train_losses(text: str) -> dict[int, float]:
    return {int(k): float(v) for k, v in LOSS_LINE.findall(text)}


STEADY_FROM = 10  # train() logs every step up to 10, then every TRAIN_LOG_EVERY-th and the last


def steady_ms(step_avg: dict[int, float]) -> float | None:
    """ms per step from step 10's line to the last one's: the difference of their elapsed (step x
    step_avg) over the steps between. It leaves out the first 10 steps, and an offset in when every
    line reads the clock cancels: train_gpt.py before 08811ef read it before the step's GPU work had
    ended, so its last line's step_avg left out the GPU's tail of the last step (1.1% of c06bc29's
    20-step runs on an H200)."""
    last = max(step_avg, default=0)
    if last <= STEADY_FROM or STEADY_FROM not in step_avg:
        return None
    return (last * step_avg[last] - STEADY_FROM * step_avg[STEADY_FROM]) / (last - STEADY_FROM)


def compare(cli, log, run_id: str):
    """Alternate `train` runs of two programs in subprocesses; log each run, then the ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        programs = {"against": program_source(cli.against, Path(tmp)), "program": Path(cli.program or REPO / "train_gpt.py").resolve()}
        extra_env = dict(kv.split("=", 1) for kv in cli.program_env)
        log(f"compare against:{cli.against} = {programs['against']} program:{programs['program']} steps:{cli.steps} rounds:{cli.rounds}"
            + "".join(f" program_env:{k}={v}" for k, v in extra_env.items()))
        runs = {name: [] for name in programs}
        for r in range(1, cli.rounds + 1):
            for name in ("against", "program") if r % 2 else ("program", "against"):  # ABBA: drift hits both
                path = programs[name]
                child_id = f"{run_id}_{name}_r{r}"
                cmd = [sys.executable, str(Path(__file__).resolve()), "train", "--steps", str(cli.steps), "--program", str(path)]
                t0 = time.perf_counter()
                env = dict(os.environ, RUN_ID=child_id, **(extra_env if name == "program" else {}))
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                child_log = Path("logs/bench") / f"{child_id}.txt"
                text = last_run(child_log.read_text()) if child_log.is_file() else ""
                child = dict(TABLE_ROW.findall(text.split("==== bench train ====")[-1]))
                if proc.returncode or "ms_per_step" not in child:
                    raise tg.UserError(f"the {name} run ({path}) failed, rc={proc.returncode}: {(proc.stderr or proc.stdout).strip()[-400:]}")
                runs[name].append(dict(child, losses=train_losses(text)))
                log(f"compare round:{r}/{cli.rounds} {name} ms_per_step:{child['ms_per_step']} seconds:{time.perf_counter() - t0:.1f} log:{child_log}")
    ms = {name: statistics.median(float(x["ms_per_step"]) for x in runs[name]) for name in runs}
    a, b = runs["against"][0]["losses"], runs["program"][0]["losses"]
    shared = sorted(set(a) & set(b))
    worst = max((abs(a[k] - b[k]) for k in shared), default=float("nan"))
    rows = [("against", cli.against), ("program", str(programs["program"]), " ".join(cli.program_env)), ("steps", cli.steps, "timed steps per run"),
            ("rounds", cli.rounds, "against then program, program then against, ... (median reported)"), ()]
    for name in runs:
        peak = runs[name][-1].get("peak_memory_mib")
        rows.append((f"{name}_ms_per_step", f"{ms[name]:.1f}", " ".join(x["ms_per_step"] for x in runs[name]) + (f"; peak {peak} MiB" if peak else "")))
    rows.append(("speedup", f"{ms['against'] / ms['program']:.3f}x", "against ms / program ms (> 1: program is faster)"))
    if all("ms_per_step_steady" in x for side in runs.values() for x in side):
        steady = {name: statistics.median(float(x["ms_per_step_steady"]) for x in runs[name]) for name in runs}
        rows += [(f"{name}_ms_per_step_steady", f"{steady[name]:.1f}", " ".join(x["ms_per_step_steady"] for x in runs[name])) for name in runs]
        rows.append(("speedup_steady", f"{steady['against'] / steady['program']:.3f}x", f"steps {STEADY_FROM + 1}-{cli.steps} (steady_ms)"))
    rows.append(("max_train_loss_diff", f"{worst:.2e}", f"over the {len(shared)} logged steps {shared[:3]}...{shared[-1:]} of round 1"
                 if shared else "no shared logged steps"))
    table(log, "compare", rows)


SETTING_LINE = re.compile(r"^hyperparameter (\w+)=(.*)$", re.M)
HEADER_LINE = re.compile(r"^run_id:\S+ torch:(\S+) device:(.+?) world_size:(\d+) .*?\ncode_sha256:(\w+)(?: started_utc:(\S+))?", re.M)
TRAIN_TOKENS_LINE = re.compile(r"^train_shards:\d+ train_tokens:(\d+)$", re.M)
RUN_ONLY = {"RUN_ID", "ARTIFACT_PATH", "TRAIN_LOG_EVERY", "DATA_PATH", "TOKENIZER_PATH"}  # name a run, not its training


def curves(cli, log):
    """Per-step train-loss difference (after - before) of two training logs, by range of steps."""
    runs = {}
    for name, path in (("before", cli.before), ("after", cli.after)):
        try:
            text = last_run(Path(path).read_text(errors="replace"))
        except OSError as e:
            raise tg.UserError(f"{path}: {e.strerror}") from e
        losses = train_losses(text)
        header = HEADER_LINE.search(text)
        if not losses or not header:
            raise tg.UserError(f"{path}: no run header or no 'step:N/M train_loss:X' lines: not a training log")
        settings = dict(SETTING_LINE.findall(text), **{"train_tokens (data)": t for t in TRAIN_TOKENS_LINE.findall(text)[-1:]})
        runs[name] = dict(losses=losses, settings=settings, header=header.groups())
    a, b = runs["before"]["losses"], runs["after"]["losses"]
    shared = sorted(set(a) & set(b))
    if not shared:
        raise tg.UserError("the two logs share no logged step")
    differ = sorted(k for k in (set(runs["before"]["settings"]) | set(runs["after"]["settings"])) - RUN_ONLY
                    if runs["before"]["settings"].get(k) != runs["after"]["settings"].get(k))
    rows = []
    for name in runs:
        torch_version, device, world, sha, _ = runs[name]["header"]
        rows.append((name, getattr(cli, name), f"code {sha[:10]}, world_size {world}, {device}, torch {torch_version}"))
    rows += [("shared_steps", len(shared), f"{shared[0]}..{shared[-1]}"),
             ("settings_differ", ", ".join(f"{k}={runs['before']['settings'].get(k)}->{runs['after']['settings'].get(k)}"
                                           for k in differ) or "none", "besides " + ", ".join(sorted(RUN_ONLY)))]
    if runs["before"]["header"] == runs["after"]["header"] and runs["before"]["header"][4]:
        rows.append(("warning", "both logs are the same run", "same code, GPU and start time: the differences below are 0 by construction"))
    rows.append(())
    for lo, hi in cli.ranges:
        d = [b[k] - a[k] for k in shared if lo <= k <= hi]
        rows.append((f"steps_{lo}-{hi}", f"max|d| {max(map(abs, d)):.4f}",
                     f"mean d {sum(d) / len(d):+.4f}, mean |d| {sum(map(abs, d)) / len(d):.4f} over {len(d)} steps (d = after - before)")
                    if d else (f"steps_{lo}-{hi}", "none", "no step both logs logged"))
    samples = sorted({shared[0], shared[-1]} | {k for k in shared if k % 50 == 0})
    rows += [(), ("step  before  after",)] + [(f"{k:>4}  {a[k]:.4f}  {b[k]:.4f}",) for k in samples]
    table(log, "curves", rows)


def step_ranges(text: str) -> list[tuple[int, int]]:
    ranges = [tuple(int(x) for x in part.split("-")) for part in text.split(",")]
    if any(len(r) != 2 or r[0] > r[1] or r[0] < 1 for r in ranges):
        raise argparse.ArgumentTypeError(f"{text!r}: want LO-HI[,LO-HI...] with 1 <= LO <= HI")
    return ranges


def parse_cli(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="time training steps")
    train.add_argument("--steps", type=int, default=50, help="timed steps (ITERATIONS); default 50")
    train.add_argument("--peak-tflops", type=float, default=989.0, help="vendor peak bf16 dense TFLOP/s per GPU (H100 SXM: 989)")
    train.add_argument("--profile", type=int, default=0, metavar="K", help="also profile the last K steps (torch.profiler): device time by kind of kernel")
    train.add_argument("--bandwidth", action="store_true", help="with --profile, on CUDA: each compiled kernel's bytes against its time, and the floor at copy bandwidth")
    train.add_argument("--gaps", action="store_true", help="with --profile, on CUDA: the time the GPU runs no kernel, by the kernels on either side")
    train.add_argument("--measured-tflops", type=float, default=790.0, help="achievable bf16 TFLOP/s per GPU (8192^3 matmul: ~790)")
    train.add_argument("--program", help="time this train_gpt.py instead of the repo's (e.g. an older version)")
    cmp = sub.add_parser("compare", help="A/B: train steps of two train_gpt.py versions, one after the other")
    cmp.add_argument("--against", required=True, help="git ref (its train_gpt.py) or a file: the baseline")
    cmp.add_argument("--program", help="the version under test (default: the repo's train_gpt.py as it is now)")
    cmp.add_argument("--steps", type=int, default=30, help="timed steps per run; default 30")
    cmp.add_argument("--rounds", type=int, default=2, help="runs of each, alternating; default 2")
    cmp.add_argument("--program-env", action="append", default=[], metavar="NAME=VALUE",
                     help="env var set for the version under test only (e.g. an inductor switch); repeatable")
    cur = sub.add_parser("curves", help="train loss of two training logs, step by step (same model function?)")
    cur.add_argument("before", help="training log of the baseline")
    cur.add_argument("after", help="training log of the version under test")
    cur.add_argument("--ranges", type=step_ranges, default=step_ranges("1-10,11-50,51-100,101-200,201-300"),
                     help="step ranges LO-HI,... to summarize (default 1-10,11-50,51-100,101-200,201-300)")
    ev = sub.add_parser("eval", help="time eval phases on an artifact")
    ev.add_argument("--artifact", help="artifact path (default: ARTIFACT_PATH)")
    ev.add_argument("--untrained", action="store_true", help="no artifact: the model's initial weights (timing only; scores meaningless)")
    ev.add_argument("--program", help="time this train_gpt.py's eval instead of the repo's (e.g. a variant)")
    ev.add_argument("--phases", default=",".join(PHASES), type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
                    help="comma-separated subset of " + ",".join(PHASES) + " (always run in that order)")
    ev.add_argument("--repeat", type=int, default=0, help="calls per phase, the last reported (default: 2 on CUDA, 1 on CPU)")
    ev.add_argument("--profile", action="store_true", help="profile each phase's last call (torch.profiler): device time by kind of kernel, against the call's wall time")
    ev.add_argument("--bandwidth", action="store_true", help="with --profile, on CUDA: each compiled kernel's bytes against its time, and the floor at copy bandwidth")
    mix = sub.add_parser("mixer", help="time the n-gram mixer on a stream as long as the full val set")
    mix.add_argument("--tokens", type=int, default=FULL_VAL_TARGETS + 1, help="stream length (train shards first, then val)")
    mix.add_argument("--chunks", type=int, default=50, help="chunks whose per-rank work is timed")
    cli = parser.parse_args(argv)
    if cli.command == "eval" and (not cli.phases or set(cli.phases) - set(PHASES)):
        parser.error(f"--phases must be a comma-separated subset of {','.join(PHASES)}")
    if cli.command == "eval" and cli.untrained and cli.artifact:
        parser.error("--untrained times the model's initial weights: give it no --artifact")
    if cli.command == "eval" and cli.repeat < 0:
        parser.error("--repeat must be >= 1 (0: 2 on CUDA, 1 on CPU)")
    if cli.command in ("train", "eval") and cli.bandwidth and not cli.profile:
        parser.error("--bandwidth reads the profile: give it --profile")
    if cli.command == "train" and cli.gaps and not cli.profile:
        parser.error("--gaps reads the profile: give it --profile")
    if cli.command == "train" and (cli.steps <= 0 or cli.peak_tflops <= 0 or cli.measured_tflops <= 0):
        parser.error("--steps, --peak-tflops and --measured-tflops must be > 0")
    if cli.command == "compare" and (cli.steps <= 0 or cli.rounds <= 0):
        parser.error("--steps and --rounds must be > 0")
    if cli.command == "compare" and any(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", kv) for kv in cli.program_env):
        parser.error("--program-env takes NAME=VALUE")
    if getattr(cli, "program", None) and not Path(cli.program).is_file():
        parser.error(f"--program {cli.program}: no such file")
    return cli


def main(argv=None):
    global tg
    cli = parse_cli(argv)
    if cli.command == "compare" and "RANK" in os.environ:
        sys.exit("bench.py compare runs its own processes, one GPU at a time: start it with python, not torchrun")
    if cli.command in ("compare", "curves"):  # no GPU, no process group: compare starts processes, curves reads logs
        run_id = os.environ.get("RUN_ID") or time.strftime(f"bench_{cli.command}_%Y%m%d_%H%M%S")
        log, _ = tg.make_logger(run_id, 0, "logs/bench")
        try:
            return compare(cli, log, run_id) if cli.command == "compare" else curves(cli, log)
        except tg.UserError as e:
            log(f"ERROR: {e}")
            sys.exit(2)
    if cli.command in ("train", "eval") and cli.program:
        tg = load_program(Path(cli.program))
    if cli.command in ("train", "eval") and cli.bandwidth:  # before any compile: the generated kernels then carry their byte estimate
        torch._inductor.config.benchmark_kernel = True
    job = dict(train=bench_train, eval=bench_eval, mixer=bench_mixer)[cli.command]
    tg.launch(lambda args, run, log_path: job(cli, args, run, run.log, log_path), f"bench_{cli.command}_%Y%m%d_%H%M%S", "logs/bench")


if __name__ == "__main__":
    main()
