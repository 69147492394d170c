"""How far inductor's byte estimate (kernel_num_gb, read by `bench.py --bandwidth`) overstates a
compiled step: it counts every argument a kernel mutates in place twice (read + write), also when the
kernel only writes it. This reads inductor's generated wrapper modules (the `.py` files with a
`def call(` in its cache folder, or a .tar.xz of them), finds each Triton kernel's in-place arguments
that the kernel never loads, sizes each from the kernel's own loop bounds and pointer type, and
multiplies by the kernel's launches per step.

  python tools/inplace_overcount.py logs/bench/inductor_code_s9_h200.tar.xz [--micro-steps 8]

A module that launches kernels more than --min-launches times is taken to be a forward or backward
graph (it runs once per micro-step); smaller ones (optimizer graphs) once per step."""
from __future__ import annotations

import argparse, collections, re, tarfile
from pathlib import Path

ELEMENT_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "fp64": 8, "i64": 8, "i32": 4, "i16": 2, "i8": 1, "u8": 1, "i1": 1}
KERNEL = re.compile(r"(triton_\w+) = async_compile\.triton\('\w+', '''(.*?)''', device_str", re.S)
LAUNCH = re.compile(r"\n\s+(triton_\w+)\.run\(")


def modules(source: Path) -> list[str]:
    if source.is_dir():
        return [p.read_text(errors="ignore") for p in sorted(source.rglob("*.py"))]
    with tarfile.open(source) as tar:
        return [tar.extractfile(m).read().decode(errors="ignore") for m in tar.getmembers() if m.isfile() and m.name.endswith(".py")]


def written_only_bytes(kernel_source: str) -> int:
    """Bytes of the in-place arguments one launch stores to but never loads."""
    signature = dict(re.findall(r"'(in_out_ptr\d+)': '\*(\w+)'", kernel_source))
    body = kernel_source.split("@triton.jit", 1)[1]
    x = re.search(r"xnumel = (\d+)", body)
    r = re.search(r"r0_numel = (\d+)", body)
    total = 0
    for pointer, dtype in signature.items():
        if re.search(rf"tl\.load\({pointer}\b", body):
            continue
        store = re.search(rf"tl\.store\({pointer} \+ \(([^)]*)\)", body)
        per_row = store is not None and "r0_" in store[1]  # one value per (row, reduction index), else one per row
        total += (int(x[1]) if x else 1) * (int(r[1]) if r and per_row else 1) * ELEMENT_BYTES[dtype]
    return total


def overcount(texts: list[str], micro_steps: int, min_launches: int) -> list[tuple[str, int, int]]:
    """(kernel, launches per step, written-only bytes per launch) of every kernel with such bytes."""
    rows = []
    for text in texts:
        launches = collections.Counter(LAUNCH.findall(text))
        per_step = micro_steps if sum(launches.values()) > min_launches else 1
        for name, source in KERNEL.findall(text):
            nbytes = written_only_bytes(source)
            if nbytes and launches[name]:
                rows.append((name, launches[name] * per_step, nbytes))
    return sorted(rows, key=lambda r: -r[1] * r[2])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="inductor's cache folder, or a .tar.xz of its wrapper modules")
    parser.add_argument("--micro-steps", type=int, default=8, help="forward/backward graph runs per step (grad accumulation); default 8")
    parser.add_argument("--min-launches", type=int, default=100, help="launches above which a module is a per-micro-step graph; default 100")
    cli = parser.parse_args(argv)
    rows = overcount(modules(cli.source), cli.micro_steps, cli.min_launches)
    print("written_only_gb_per_step  launches_per_step  mb_per_launch  kernel")
    for name, launches, nbytes in rows:
        print(f"{launches * nbytes / 1e9:24.3f}  {launches:17d}  {nbytes / 1e6:13.1f}  {name}")
    print(f"overcount_gb_per_step {sum(n * b for _, n, b in rows) / 1e9:.2f} over {len(rows)} kernels")


if __name__ == "__main__":
    main()
