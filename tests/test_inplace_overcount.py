"""tools/inplace_overcount.py: which in-place kernel arguments are only written, their size from the
kernel's own bounds, launches per step from the wrapper, and the committed log reproduced from the
committed generated code."""
import io
import sys
import tarfile
from contextlib import redirect_stdout

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import inplace_overcount as tool  # noqa: E402

KERNEL = """{name} = async_compile.triton('{name}', '''
@triton_heuristics.persistent_reduction(
    triton_meta={{'signature': {{'in_out_ptr0': '*{dtype}', 'in_ptr0': '*bf16', 'xnumel': 'i32', 'r0_numel': 'i32', 'XBLOCK': 'constexpr'}}}},
)
@triton.jit
def {name}(in_out_ptr0, in_ptr0, xnumel, r0_numel, XBLOCK : tl.constexpr):
    xnumel = {x}
    r0_numel = 64
    r0_3 = r0_index
    {load}
    tmp1 = tl.load(in_ptr0 + (r0_3 + 64*x4), None)
    tl.store(in_out_ptr0 + ({index}), tmp1, None)
''', device_str='cuda')
"""


def kernel(name, dtype="bf16", x=1000, loads_in_out=False, per_row=False):
    load = "tmp0 = tl.load(in_out_ptr0 + (r0_3 + 64*x4), None)" if loads_in_out else "pass"
    return KERNEL.format(name=name, dtype=dtype, x=x, load=load, index="x4" if per_row else "r0_3 + 64*x4")


def test_written_only_arguments_are_sized_from_the_kernel():
    src = lambda k: k.split("''', device_str")[0].split("'''", 1)[1]  # noqa: E731
    assert tool.written_only_bytes(src(kernel("triton_a", "bf16", 1000))) == 1000 * 64 * 2
    assert tool.written_only_bytes(src(kernel("triton_b", "fp32", 1000, per_row=True))) == 1000 * 4
    assert tool.written_only_bytes(src(kernel("triton_c", "bf16", 1000, loads_in_out=True))) == 0  # read and written: counted right


def test_launches_per_step_follow_the_module(tmp_path):
    graph = kernel("triton_fwd", x=100) + kernel("triton_rw", loads_in_out=True) + "def call(args):\n" + "    triton_fwd.run(buf0)\n" * 101
    optimizer = kernel("triton_opt", "fp32", x=10, per_row=True) + "def call(args):\n    triton_opt.run(buf0)\n"
    for name, text in (("graph.py", graph), ("opt.py", optimizer)):
        (tmp_path / name).write_text(text)
    rows = tool.overcount(tool.modules(tmp_path), micro_steps=8, min_launches=100)
    assert rows == [("triton_fwd", 101 * 8, 100 * 64 * 2), ("triton_opt", 1, 10 * 4)]
    with tarfile.open(tmp_path / "code.tar.xz", "w:xz") as tar:
        tar.add(tmp_path / "graph.py", "code/graph.py")
        tar.add(tmp_path / "opt.py", "code/opt.py")
    assert tool.overcount(tool.modules(tmp_path / "code.tar.xz"), 8, 100) == rows


def test_the_committed_log_is_the_tool_on_the_committed_code():
    out = io.StringIO()
    with redirect_stdout(out):
        tool.main([str(REPO_ROOT / "logs/bench/inductor_code_s9_h200.tar.xz")])
    assert out.getvalue() == (REPO_ROOT / "logs/bench/inplace_overcount_s9_h200.txt").read_text()
