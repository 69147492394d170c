"""tools/cuda_timing.mean_ms, the GPU tools' timer, on CPU with stand-in CUDA events: warm-up calls are
not timed, the timed calls sit between the two events, and the result is their time over the count."""
import sys

import torch

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import cuda_timing  # noqa: E402


class Clock:
    """A fake GPU: each call of the timed function takes 2.5 ms; events read the clock when recorded."""

    def __init__(self):
        self.now, self.log = 0.0, []

    def work(self):
        self.now += 2.5
        self.log.append("call")

    def event(self, enable_timing):
        clock = self

        class Event:
            def record(self):
                self.at = clock.now
                clock.log.append("record")

            def synchronize(self):
                clock.log.append("event sync")

            def elapsed_time(self, end):
                return end.at - self.at
        assert enable_timing
        return Event()


def test_mean_ms_times_only_the_calls_after_the_warm_up(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(torch.cuda, "Event", clock.event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: clock.log.append("sync"))
    assert cuda_timing.mean_ms(clock.work, calls=4, warmup=3) == 2.5
    assert clock.log == ["call"] * 3 + ["sync", "record"] + ["call"] * 4 + ["record", "event sync"]


def test_mean_ms_divides_by_the_calls(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(torch.cuda, "Event", clock.event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    calls = iter([1.0, 3.0, 5.0, 100.0])  # the first is the warm-up
    work = lambda: setattr(clock, "now", clock.now + next(calls))
    assert cuda_timing.mean_ms(work, calls=3, warmup=1) == 36.0


def test_every_gpu_tool_times_with_mean_ms():
    """No tool keeps a CUDA-event timer of its own; bench.py's copy bandwidth uses mean_ms."""
    own = [p.name for p in (REPO_ROOT / "tools").glob("*.py") if p.name != "cuda_timing.py" and "cuda.Event(" in p.read_text()]
    assert own == []
    users = {p.name for p in (REPO_ROOT / "tools").glob("*.py") if "from cuda_timing import mean_ms" in p.read_text()}
    assert "bench.py" in users
