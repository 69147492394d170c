"""Session 18: the MLP kernel's three modes, main (.ab/main_s17.py: keeps u) against the branch (.ab/bits_s18.py:
keeps u's sign bits), ms per call at one layer and micro-step of the default config (CUDA events, tools/cuda_timing),
A B B A, and how far the branch's outputs are from main's."""
import sys, types
from pathlib import Path
import torch, torch.nn.functional as F
sys.path.insert(0, "tools")
from cuda_timing import mean_ms


def load(name, path):
    """The file as module `name`, its custom ops in a namespace of that name (both files define train_gpt::...)."""
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    exec(compile(Path(path).read_text().replace('"train_gpt::', f'"{name}::'), path, "exec"), mod.__dict__)
    return mod


main, bits = load("main_s17", ".ab/main_s17.py"), load("bits_s18", ".ab/bits_s18.py")
torch.manual_seed(0)
D, H, M = 512, 1536, 48 * 2048
x = torch.randn(M, D, device="cuda", dtype=torch.bfloat16)
wf = (torch.randn(H, D, device="cuda") / D ** 0.5).to(torch.bfloat16)
wpt = (torch.randn(H, D, device="cuda") / H ** 0.5).to(torch.bfloat16)
g = torch.randn(M, D, device="cuda", dtype=torch.bfloat16)
print(f"device:{torch.cuda.get_device_name()} torch:{torch.__version__}")
u = torch.empty(M, H, device="cuda", dtype=torch.bfloat16)
h_main = main._act_gemm(x, wf, 0.5, 1, u)
b = bits.negative_bits(M, H, x)
h_bits = bits._act_gemm(x, wf, 0.5, 1, bits=b)
calls = {
    "fwd": (lambda: main._act_gemm(x, wf, 0.5, 1, u), lambda: bits._act_gemm(x, wf, 0.5, 1, bits=b)),
    "bwd": (lambda: main._act_gemm(g, wpt, 0.5, 2, u), lambda: bits._act_gemm(g, wpt, 0.5, 2, h_bits, b)),
    "eval": (lambda: main._act_gemm(x[:32 * 2048], wf, 0.5, 0), lambda: bits._act_gemm(x[:32 * 2048], wf, 0.5, 0)),
}
unpacked = (b[:, :, None].int() >> torch.arange(8, device="cuda")).bitwise_and(1).bool().flatten(1)
print(f"fwd h identical: {torch.equal(h_main, h_bits)}  sign bits == (u < 0): {torch.equal(unpacked, u < 0)}")
ref, new = calls["bwd"][0]().float(), calls["bwd"][1]().float()
print(f"bwd: max|diff| {(new - ref).abs().max().item():.3e}  rel. norm {((new - ref).norm() / ref.norm()).item():.3e}  "
      f"elements differing {(new != ref).float().mean().item():.4f}")
print(f"{'mode':<5} {'main ms':>9} {'bits ms':>9} {'ratio':>7}")
for mode, (a_call, b_call) in calls.items():
    times = {"main": [], "bits": []}
    for side in ("main", "bits", "bits", "main"):
        times[side].append(mean_ms(a_call if side == "main" else b_call))
    ta, tb = (sum(v) / len(v) for v in (times["main"], times["bits"]))
    print(f"{mode:<5} {ta:9.4f} {tb:9.4f} {ta / tb:7.3f}")
