"""Shared paths, configs and helpers for the train_gpt.py tests (CPU only).

Three ways the tests drive the trainer:
  * in-process: `run_main(env)` calls train_gpt.main() with a clean environment (fast; errors),
  * subprocess: `run_trainer(env, cwd)` runs `python train_gpt.py` (end to end),
  * subprocess with `nproc=2`: `python -m torch.distributed.run --nproc_per_node=2` (gloo).
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
import random
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():  # the Triton kernels in train_gpt.py run on CPU through Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_GPT = REPO_ROOT / "train_gpt.py"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
OFFICIAL_TOKENIZER = SHARED_DATA / "tokenizers" / "fineweb_1024_bpe.model"
PROXY_DATA = SHARED_DATA / "datasets" / "proxy_sp1024"
SAMPLE_DATA = REPO_ROOT / "data" / "sample"
OFFICIAL_SHA256 = "4f5e8adb109c66b4886963bc75a7befd73bda36d27fd7102df8e9e66503b0e2a"

sys.path.insert(0, str(REPO_ROOT))
import train_gpt  # noqa: E402

# Tiny model settings (~0.3M params with vocab 1024); every architecture switch stays on.
# #803's recipe: the modern recipe's parts are switched on by the tests that check them
TINY_MODEL = dict(RECIPE="pr803", NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="2", VE_LAYERS="1",
                  XSA_LAST_N="1", BIGRAM_VOCAB_SIZE="256", TRAIN_SEQ_LEN="64")
# A tiny run. MAX_WALLCLOCK_SECONDS=0 turns off the wallclock-based LR warmdown, whose value depends
# on measured step times: with it on, two runs of the same config would not train identically.
TINY_ENV = dict(TINY_MODEL, TRAIN_BATCH_TOKENS="4096", ITERATIONS="6", WARMUP_STEPS="1", WARMDOWN_ITERS="2",
                MAX_WALLCLOCK_SECONDS="0", VAL_MAX_TOKENS="8192", EVAL_STRIDE="32", EVAL_SEQ_LEN="64")

# Environment variables that must not leak from the outer environment into a run.
_DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")

@pytest.fixture(scope="module")
def one_thread():
    """Tiny models and small tensors gain nothing from threads, and 2 threads on 2 busy cores can be
    many times slower. A module uses it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_args(**overrides) -> train_gpt.Hyperparameters:
    """Hyperparameters of the tiny model, parsed exactly like the env vars of a run."""
    return train_gpt.Hyperparameters(environ={**TINY_MODEL, **{k: str(v) for k, v in overrides.items()}})


def randomize_(model: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    """Fill every parameter with seeded noise. The noise of a parameter depends only on its name
    and shape, so two models that share a parameter name get the same values for it. Needed
    because several paths (output projections, bigram table, VRL scales) start at exactly 0."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if p.ndim <= 1 and "scale" in name else 0.0))
    return model


def save_artifact(model, path: Path, code_bytes: int = 0, log=None):
    """train_gpt.save_artifact with a silent logger by default."""
    return train_gpt.save_artifact(model, path, code_bytes, log or (lambda msg: None))


# ----------------------------------------------------------------------------- shards

def write_shard(path: Path, tokens, *, magic: int = 20240520, version: int = 1, count: int | None = None) -> Path:
    """Write a challenge-format shard: 256 int32 header words, then uint16 tokens."""
    tokens = np.asarray(tokens, dtype="<u2")
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens) if count is None else count
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.tobytes() + tokens.tobytes())
    return path


def read_shard_tokens(path: Path) -> np.ndarray:
    header = np.fromfile(path, dtype="<i4", count=256)
    return np.fromfile(path, dtype="<u2", count=int(header[2]), offset=1024)


_WORDS = "the cat sat on mat dog ran far and a big red sun".split()


def _sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    # A little grammar so that the next token is predictable: a model can learn it in a few steps.
    return [" ".join(f"{rng.choice(['the', 'a'])} {rng.choice(['big', 'red'])} {rng.choice(['cat', 'dog', 'sun'])} "
                     f"{rng.choice(['sat', 'ran'])} {rng.choice(['on', 'far'])}" for _ in range(rng.randint(1, 4)))
            for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """A 64-piece SentencePiece BPE model (bos=1 like the official one), trained in well under a second."""
    import sentencepiece as spm
    rng = random.Random(0)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(12)) for _ in range(2000)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=64, model_type="bpe",
                                   minloglevel=2, pad_id=0, bos_id=1, eos_id=2, unk_id=3)
    path = tmp_path_factory.mktemp("tok") / "tiny_64.model"
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_tokenizer) -> Path:
    """A DATA_PATH with one train and one val shard of `[BOS] + encode(doc)` documents (vocab 64)."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(tiny_tokenizer))
    root = tmp_path_factory.mktemp("tiny_data")
    for split, n_docs, seed in (("train", 6000, 1), ("val", 1500, 2)):
        tokens = [t for doc in _sentences(n_docs, seed) for t in [sp.bos_id()] + sp.encode(doc)]
        write_shard(root / f"fineweb_{split}_000000.bin", tokens)
    return root


@pytest.fixture
def tiny_env() -> dict[str, str]:
    return dict(TINY_ENV)


@pytest.fixture
def tiny_data_env(tiny_env, tiny_data, tiny_tokenizer) -> dict[str, str]:
    """A complete tiny run on self-made data: needs nothing from shared/."""
    return dict(tiny_env, DATA_PATH=str(tiny_data), TOKENIZER_PATH=str(tiny_tokenizer), VOCAB_SIZE="64")


# ----------------------------------------------------------------------------- running the trainer

@dataclasses.dataclass
class RunResult:
    returncode: int | str  # in-process: SystemExit.code, which may be the "ERROR: ..." string
    log: str          # logs/<RUN_ID>.txt ("" if it was never written)
    output: str       # stdout + stderr (subprocess) or "" (in-process)
    log_path: Path

    def __iter__(self):  # `returncode, log = run_trainer(...)`
        return iter((self.returncode, self.log))


def _clean_environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in train_gpt.SETTINGS and k not in _DIST_VARS}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_trainer(env: dict[str, str], cwd: Path, nproc: int = 1) -> RunResult:
    """Run train_gpt.py as a subprocess (or under torch.distributed.run with nproc > 1)."""
    env = dict(env)
    env.setdefault("RUN_ID", "test_run")
    full_env = {**_clean_environ(), **env}
    if nproc == 1:
        cmd = [sys.executable, str(TRAIN_GPT)]
    else:
        full_env["OMP_NUM_THREADS"] = "1"  # 2 processes on 2 cores
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(TRAIN_GPT)]
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True)
    log_path = cwd / "logs" / f"{env['RUN_ID']}.txt"
    return RunResult(proc.returncode, log_path.read_text() if log_path.is_file() else "", proc.stdout + proc.stderr, log_path)


@pytest.fixture
def run_main(monkeypatch, tmp_path):
    """Call train_gpt.main() in this process with exactly `env` as settings, in tmp_path.
    Returns RunResult with the exit code (0 when main returns normally)."""

    def _run(env: dict[str, str], cwd: Path | None = None) -> RunResult:
        cwd = cwd or tmp_path
        for name in list(os.environ):
            if name in train_gpt.SETTINGS or name in _DIST_VARS:
                monkeypatch.delenv(name)
        env = dict(env)
        env.setdefault("RUN_ID", "inproc")
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        cwd.mkdir(parents=True, exist_ok=True)
        monkeypatch.chdir(cwd)
        code = 0
        try:
            train_gpt.main()
        except SystemExit as e:
            code = e.code
        log_path = cwd / "logs" / f"{env['RUN_ID']}.txt"
        return RunResult(code, log_path.read_text() if log_path.is_file() else "", "", log_path)

    return _run


JOB_SCRIPT = """import sys, torch
sys.path[:0] = [{repo!r}, {tests!r}]
import train_gpt
from conftest import randomize_

def job(args, run, log_path):
{body}

train_gpt.launch(job)
"""


def saved_by_1_and_2_processes(body: str, env: dict[str, str], tmp_path: Path, saved: str) -> list:
    """Run a train_gpt.launch() job whose `body` (indented; it has args and run, and saves the file
    `saved` on rank 0) as 1 process and as 2 gloo processes; returns what each run saved."""
    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT.format(repo=str(REPO_ROOT), tests=str(REPO_ROOT / "tests"), body=body))
    found = []
    for n in (1, 2):
        cwd = tmp_path / f"world{n}"
        cwd.mkdir()
        launcher = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
        done = subprocess.run(launcher + [str(script)], cwd=cwd, env={**_clean_environ(), **env, "OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        found.append(torch.load(cwd / saved))
    return found


# ----------------------------------------------------------------------------- log parsing

FINAL_LINE_PATTERNS = {
    "pre_quant": r"^pre_quant val_loss:(?P<val_loss>\S+) val_bpb:(?P<val_bpb>\S+)",
    "artifact": r"^artifact:(?P<artifact>\S+) compressed_bytes:(?P<compressed_bytes>\d+) code_bytes:(?P<code_bytes>\d+) total_bytes:(?P<total_bytes>\d+)$",
    "final_int6_roundtrip": r"^final_int6_roundtrip val_loss:(?P<val_loss>\S+) val_bpb:(?P<val_bpb>\S+)$",
    "final_int6_sliding_window": r"^final_int6_sliding_window val_loss:(?P<val_loss>\S+) val_bpb:(?P<val_bpb>\S+) stride:(?P<stride>\d+)$",
    "total": r"^Total submission size int6\+lzma: (?P<bytes>\d+) bytes$",
    "peak_memory": r"^peak memory allocated: (?P<mib>\d+) MiB",
    # the eval stack (n-gram mixer and test-time training)
    "ngram_only": r"^ngram_only val_loss:(?P<val_loss>\S+) val_bpb:(?P<val_bpb>\S+) \(sliding window \+ n-gram mixer, no TTT\)$",
    "ttt_only": r"^ttt_only val_loss:(?P<val_loss>\S+) val_bpb:(?P<val_bpb>\S+) \(TTT_MODE=(?P<mode>\w+) at temperature (?P<temperature>\S+), no mixer, same pass\)$",
    "final_ngram_ttt": r"^final_ngram_ttt val_loss:(?P<val_loss>\S+) val_bpb:(?P<val_bpb>\S+) \(ngram:(?P<ngram>[01]) ttt:(?P<ttt>[01])\)$",
    "ngram_audit": r"^ngram_audit positions:(?P<positions>\d+) max_abs_err:(?P<max_abs_err>\S+)$",
    "gains": r"^gains_bpb (?P<gains>.*) \(ttt_gain: sliding minus ttt_only; ngram_gain: the last pass without minus with the mixer\)$",
    "nll_dump": r"^eval:(?P<label>\S+) per-token NLL written to (?P<path>.+)$",
}


def log_line(log: str, kind: str) -> dict[str, str] | None:
    """The named groups of the last line matching FINAL_LINE_PATTERNS[kind], or None."""
    matches = list(re.finditer(FINAL_LINE_PATTERNS[kind], log, re.M))
    return matches[-1].groupdict() if matches else None


def train_losses(log: str) -> dict[int, float]:
    """{step: train_loss} from `step:k/N train_loss:x ...` lines."""
    return {int(m["step"]): float(m["loss"])
            for m in re.finditer(r"^step:(?P<step>\d+)/\d+ train_loss:(?P<loss>\S+) lr_mul:\S+ elapsed:\S+ step_avg:\S+ "
                                 r"tokens_per_s:\S+ eta:\S+$", log, re.M)}


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ERROR: ")]


def gains(log: str) -> dict[str, float]:
    """{name: value} from the `gains_bpb total_gain:x ttt_gain:y ngram_gain:z (...)` line."""
    line = log_line(log, "gains")
    return {k: float(v) for k, v in (item.split(":") for item in line["gains"].split())} if line else {}


def cpu_run(log=None) -> train_gpt.Run:
    """One CPU process, as launch() describes it to the training and eval functions."""
    return train_gpt.Run(torch.device("cpu"), 0, 1, log or (lambda msg: None))


def val_set(val_tokens: torch.Tensor, tables, bos_id: int = 1) -> train_gpt.ValSet:
    return train_gpt.ValSet(val_tokens, tuple(tables), bos_id)


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


# ----------------------------------------------------------------------------- shared end-to-end run

@dataclasses.dataclass
class E2ERun:
    env: dict[str, str]
    cwd: Path
    result: RunResult
    code: train_gpt.CodeSize

    @property
    def artifact(self) -> Path:
        return self.cwd / "final_model_e2e.int6.ptz"

    @property
    def raw_weights(self) -> Path:
        return self.cwd / "final_model_e2e.pt"


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory):
    """One tiny training run on the sample data shipped in data/sample (the official tokenizer), as
    a subprocess; reused by several tests."""
    cwd = tmp_path_factory.mktemp("e2e")
    env = dict(TINY_ENV, DATA_PATH=str(SAMPLE_DATA), TOKENIZER_PATH=str(SAMPLE_DATA / "fineweb_1024_bpe.model"), RUN_ID="e2e")
    code = train_gpt.code_size()  # what the run will count (read just before it starts)
    return E2ERun(env, cwd, run_trainer(env, cwd), code)


LN2 = math.log(2)
