"""The GPU tools' one timer: mean milliseconds per call of a function, by CUDA events.

    from cuda_timing import mean_ms
    ms = mean_ms(lambda: x @ w.t(), calls=30, warmup=5)

`warmup` calls first (compiles, autotuning, caches), then a synchronize so that they are not timed,
then `calls` calls between two events on the current stream; the GPU time between the events over
`calls`. The function's work must be queued on the current stream (as torch ops and Triton launches are).
"""
import torch


def mean_ms(fn, calls: int = 30, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / calls
