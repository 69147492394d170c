"""Session 18, call 2: the MLP kernel's three modes in main (.ab/main_s17.py: keeps u) and in three ways of keeping
u's sign instead: .ab/bits_s18.py (call 1: packed bits, each unit's byte read per unit), .ab/packed_s18.py (packed
bits, each row's bytes read once and unpacked in registers), .ab/int8_s18.py (one byte per unit). ms per call at
one layer and micro-step of the default config (CUDA events), sides interleaved over 2 rounds; each variant's outputs
against bits_s18's (the model function call 1's curves measured). Last line: the fastest variant (forward + backward)."""
import sys, types
from pathlib import Path
import torch
sys.path.insert(0, "tools")
from cuda_timing import mean_ms


def load(name, path):
    """The file as module `name`, its custom ops in a namespace of that name (all files define train_gpt::...)."""
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    exec(compile(Path(path).read_text().replace('"train_gpt::', f'"{name}::'), path, "exec"), mod.__dict__)
    return mod


names = ["main_s17", "bits_s18", "packed_s18", "int8_s18"]
mods = {n: load(n, f".ab/{n}.py") for n in names}
torch.manual_seed(0)
D, H, M = 512, 1536, 48 * 2048
x = torch.randn(M, D, device="cuda", dtype=torch.bfloat16)
wf = (torch.randn(H, D, device="cuda") / D ** 0.5).to(torch.bfloat16)
wpt = (torch.randn(H, D, device="cuda") / H ** 0.5).to(torch.bfloat16)
g = torch.randn(M, D, device="cuda", dtype=torch.bfloat16)
print(f"device:{torch.cuda.get_device_name()} torch:{torch.__version__}")
calls, outs = {}, {}
for n, m in mods.items():
    if n == "main_s17":
        kept = torch.empty(M, H, device="cuda", dtype=torch.bfloat16)
        h = m._act_gemm(x, wf, 0.5, 1, kept)
        fwd, bwd = (lambda m=m, kept=kept: m._act_gemm(x, wf, 0.5, 1, kept)), (lambda m=m, kept=kept: m._act_gemm(g, wpt, 0.5, 2, kept))
    else:
        kept = m.negative_bits(M, H, x)
        h = m._act_gemm(x, wf, 0.5, 1, bits=kept)
        fwd, bwd = (lambda m=m, kept=kept: m._act_gemm(x, wf, 0.5, 1, bits=kept)), (lambda m=m, kept=kept, h=h: m._act_gemm(g, wpt, 0.5, 2, h, kept))
    calls[n] = {"fwd": fwd, "bwd": bwd, "eval": lambda m=m: m._act_gemm(x[:32 * 2048], wf, 0.5, 0)}
    outs[n] = (h, bwd())
    print(f"{n}: kept {tuple(kept.shape)} {kept.dtype}, {kept.numel() * kept.element_size() / 2**20:.1f} MiB per call")
for n in names[2:]:
    print(f"{n} vs bits_s18: h identical {torch.equal(outs[n][0], outs['bits_s18'][0])}, backward identical {torch.equal(outs[n][1], outs['bits_s18'][1])}")
times = {n: {mode: [] for mode in ("fwd", "bwd", "eval")} for n in names}
for rnd in range(2):
    for n in (names if rnd == 0 else names[::-1]):
        for mode, fn in calls[n].items():
            times[n][mode].append(mean_ms(fn, calls=50))
print(f"{'program':<11} {'fwd ms':>8} {'bwd ms':>8} {'eval ms':>8} {'fwd+bwd':>8} {'vs main':>8}")
base = sum(sum(times["main_s17"][k]) / 2 for k in ("fwd", "bwd"))
best = None
for n in names:
    t = {k: sum(v) / len(v) for k, v in times[n].items()}
    both = t["fwd"] + t["bwd"]
    print(f"{n:<11} {t['fwd']:8.4f} {t['bwd']:8.4f} {t['eval']:8.4f} {both:8.4f} {base / both:8.3f}")
    if n != "main_s17" and (best is None or both < best[1]):
        best = (n, both)
print(f"fastest_variant {best[0]} {base / best[1]:.3f}")
