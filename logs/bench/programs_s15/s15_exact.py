"""Session 15: the MLP kernel of .ab/epi_s15.py against .ab/head_s15.py's, bit for bit, at the training and eval shapes."""
import importlib.util, torch, torch.nn.functional as F
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path); m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
old, new = load("head_s15", ".ab/head_s15.py"), load("epi_s15", ".ab/epi_s15.py")
torch.manual_seed(0)
for M in (48 * 2048, 32 * 2048, 1000):
    x = torch.randn(M, 512, device="cuda", dtype=torch.bfloat16)
    wf = (torch.randn(1536, 512, device="cuda") / 512 ** 0.5).to(torch.bfloat16)
    wpt = (torch.randn(1536, 512, device="cuda") / 1536 ** 0.5).to(torch.bfloat16)
    u = F.linear(x, wf)
    for mode in (0, 1, 2):
        b = wpt if mode == 2 else wf
        uo, un = (torch.empty_like(u), torch.empty_like(u)) if mode == 1 else (u, u) if mode == 2 else (None, None)
        o, n = old._act_gemm(x, b, 0.5, mode, uo), new._act_gemm(x, b, 0.5, mode, un)
        same = torch.equal(o, n) and (mode != 1 or torch.equal(uo, un))
        print(f"M={M} mode={mode} bit-identical={same} max|diff|={(o.float() - n.float()).abs().max().item():.3e}")
