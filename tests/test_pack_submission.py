"""The packed train_gpt.py and tools/pack_submission.py (CPU).

Packing: the packed form of a small program runs like it; the string literal's escapes give back
every byte. The key test: a tiny run of train_gpt.py and one of its packed form log the same numbers
and count (code_bytes) and hash (code_sha256) the same packed file. Then the records folder that
pack_submission.py writes from such logs, and its refusals."""
import hashlib
import json
import lzma
import random
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import conftest
import train_gpt
from conftest import REPO_ROOT, TINY_ENV, TRAIN_GPT, run_trainer

sys.path.insert(0, str(REPO_ROOT / "tools"))
import make_submission as ms  # noqa: E402
import pack_submission as ps  # noqa: E402

TOOL = REPO_ROOT / "tools" / "pack_submission.py"


def python(path: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(path)], cwd=cwd, capture_output=True)


# ----------------------------------------------------------------------------- packing

SMALL_PROGRAM = '''\
import inspect, sys, traceback
"""A program that looks at itself: its source lines (linecache), a traceback, non-ASCII text."""
TEXT = "größe \\u00e9 \\N{GREEK SMALL LETTER ALPHA} \\t tab \\\\ backslash \\" quote \\r\\n"


def twice(x):
    return 2 * x  # the line a traceback shows


def fails():
    return 1 / 0


print(__name__, twice(21), repr(TEXT), "größe", sorted(k for k in globals() if k.isupper() and k != "UNPACKED_SOURCE"))
print(inspect.getsource(twice), end="")
try:
    fails()
except ZeroDivisionError as e:
    print([frame.line for frame in traceback.extract_tb(e.__traceback__)])
print(globals().get("UNPACKED_SOURCE") in (None, open(__file__.replace("packed.py", "source.py")).read()))
sys.exit(3)
'''


def test_packed_program_runs_like_its_source(tmp_path):
    source = SMALL_PROGRAM.encode()
    (tmp_path / "source.py").write_bytes(source)
    (tmp_path / "packed.py").write_bytes(train_gpt.pack_source(source))
    plain, packed = python(tmp_path / "source.py", tmp_path), python(tmp_path / "packed.py", tmp_path)
    assert plain.returncode == packed.returncode == 3, packed.stderr.decode()
    assert plain.stdout == packed.stdout and plain.stderr == packed.stderr == b""
    assert b"return 2 * x  # the line a traceback shows" in packed.stdout and b"return 1 / 0" in packed.stdout
    assert "größe".encode() in packed.stdout


def test_packed_program_keeps_its_source_lines_with_unicode_line_breaks(tmp_path):
    """Python's compiler breaks lines only at \\n and \\r, and so must the lines the packed file hands to
    linecache (inspect.getsource, Triton's kernels, tracebacks)."""
    source = ('import inspect\n# form feed [\x0c], NEL [\x85], line separator [\u2028]\n'
              'def twice(x):\n    return 2 * x\nprint(inspect.getsource(twice), end="")\n').encode()
    (tmp_path / "source.py").write_bytes(source)
    (tmp_path / "packed.py").write_bytes(train_gpt.pack_source(source))
    plain, packed = python(tmp_path / "source.py", tmp_path), python(tmp_path / "packed.py", tmp_path)
    assert plain.stdout == b"def twice(x):\n    return 2 * x\n"
    assert packed.stdout == plain.stdout


def escaped_literal(payload: bytes, monkeypatch) -> bytes:
    """The string literal pack_source writes for compressed bytes `payload` (lzma.compress made to return it)."""
    fake = types.SimpleNamespace(compress=lambda *a, **k: payload, FORMAT_RAW=lzma.FORMAT_RAW,
                                 FILTER_LZMA2=lzma.FILTER_LZMA2, PRESET_EXTREME=lzma.PRESET_EXTREME)
    monkeypatch.setattr(train_gpt, "lzma", fake)
    packed = train_gpt.pack_source(b"")
    monkeypatch.undo()
    start = packed.index(b"lzma.decompress(") + len(b"lzma.decompress(")
    return packed[start:packed.index(b'.encode("latin-1")', start)]


def test_escapes_give_back_every_byte(tmp_path, monkeypatch):
    rng = random.Random(0)
    payload = (bytes(range(256)) + bytes(range(255, -1, -1)) + b'\\"\\\r\n\\x00\0\0"""\n\r\\' + rng.randbytes(100_000)
               + b"\\")  # ends with a backslash: the one before the closing quote must be escaped
    literal = escaped_literal(payload, monkeypatch)
    assert literal.startswith(b'"') and literal.endswith(b'"')
    assert not set(literal[1:-1]) & {0, ord("\n"), ord("\r")}
    program = tmp_path / "literal.py"
    program.write_bytes(train_gpt.PACK_HEADER + b"import sys;sys.stdout.buffer.write(" + literal + b'.encode("latin-1"))\n')
    result = python(program, tmp_path)  # the file as Python reads a program (its latin-1 coding line)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == payload


def test_the_readme_command_unpacks_train_gpt(tmp_path):
    source = TRAIN_GPT.read_bytes()
    (tmp_path / "train_gpt.py").write_bytes(train_gpt.pack_source(source))
    command = ps.UNPACK_COMMAND.replace("python", f'"{sys.executable}"', 1)
    subprocess.run(command, shell=True, cwd=tmp_path, check=True)
    assert (tmp_path / "train_gpt_source.py").read_bytes() == source
    assert ps.unpack(train_gpt.pack_source(source)) == source


# ----------------------------------------------------------------------------- a tiny run, source and packed

@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data, tiny_tokenizer) -> dict:
    """Tiny runs of one config (the tiny_data_env fixture's): SEED=1 from the source and, with the same
    RUN_ID in another folder, from its packed form; SEED=2 from the packed form. The source is a copy of
    train_gpt.py taken now (`source_file`), so that an edit of train_gpt.py meanwhile changes no run."""
    root = tmp_path_factory.mktemp("pack_runs")
    source, packed = root / "source" / "train_gpt.py", root / "packed" / "train_gpt.py"
    source.parent.mkdir()
    packed.parent.mkdir()
    shutil.copyfile(TRAIN_GPT, source)
    packed.write_bytes(train_gpt.pack_source(source.read_bytes()))
    env = dict(TINY_ENV, DATA_PATH=str(tiny_data), TOKENIZER_PATH=str(tiny_tokenizer), VOCAB_SIZE="64")
    out = dict(source_file=source, source_bytes=source.read_bytes(), packed_file=packed)
    with pytest.MonkeyPatch.context() as mp:  # run_trainer runs `python <conftest.TRAIN_GPT>`
        mp.setattr(conftest, "TRAIN_GPT", source)
        out["source"] = run_trainer(dict(env, RUN_ID="tiny", SEED="1"), root / "run_source")
        mp.setattr(conftest, "TRAIN_GPT", packed)
        out["packed"] = run_trainer(dict(env, RUN_ID="tiny", SEED="1"), root / "run_packed")
        out["packed_seed2"] = run_trainer(dict(env, RUN_ID="tiny_seed2", SEED="2"), root / "run_packed")
    for name in ("source", "packed", "packed_seed2"):
        assert out[name].returncode == 0, out[name].output[-3000:]
    return out


TIMING = re.compile(r"\b(\w*seconds\w*|elapsed|eta|step_avg|tokens_per_s\w*|started_utc|peak_memory\w*):\S+")


def comparable(log: str) -> list[str]:
    """The lines from model_params on, without timings, peak memory and the artifact's path."""
    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("model_params:"))
    return [re.sub(r"^(artifact|raw_weights):\S+", r"\1:<path>", TIMING.sub(r"\1:<t>", line))
            for line in lines[start:] if not line.startswith("peak memory")]


def header(log: str) -> dict:
    m = re.search(r"^run_id:\S+ .* code_bytes:(\d+) source_bytes:(\d+)\ncode_sha256:(\S+) ", log, re.M)
    return dict(code_bytes=int(m[1]), source_bytes=int(m[2]), code_sha256=m[3])


def test_source_and_packed_runs_log_the_same_numbers(runs):
    source, packed = runs["source"].log, runs["packed"].log
    lines = comparable(source)
    assert lines == comparable(packed)
    assert any(line.startswith("step:6/6 train_loss:") for line in lines) and any(
        line.startswith("final_ngram_ttt val_loss:") for line in lines)  # the comparison covers the whole run
    assert ms.parse_log(runs["source"].log_path).settings == ms.parse_log(runs["packed"].log_path).settings
    packed_file = runs["packed_file"].read_bytes()
    for log in (source, packed):
        assert header(log) == dict(code_bytes=len(packed_file), source_bytes=len(runs["source_bytes"]),
                                   code_sha256=hashlib.sha256(packed_file).hexdigest())
        assert re.search(rf"^artifact:\S+ compressed_bytes:\d+ code_bytes:{len(packed_file)} ", log, re.M)
    assert len(packed_file) < len(runs["source_bytes"]) / 2


# ----------------------------------------------------------------------------- pack_submission.py

def pack(argv, capsys, program: Path | None = None) -> tuple[int, str, str]:
    """pack_submission.py with `argv`; the program packed is --program, else `program` (the runs' source)."""
    code = ps.main([str(a) for a in argv] + ([] if "--program" in argv else ["--program", str(program)]))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_records_folder(runs, tmp_path, capsys):
    logs = [runs["source"].log_path, runs["packed_seed2"].log_path]  # a source run and a packed run: one code
    out = tmp_path / "records" / "2026-12-07_Tiny"
    out.mkdir(parents=True)  # an empty folder is fine
    code, stdout, stderr = pack(["--output", out, *logs, "--name", "Tiny", "--blurb", "Two tiny seeds.", "--date", "2026-12-07",
                                 "--baseline-mean", 9.0, "--baseline-std", 0.01], capsys, runs["source_file"])
    assert code == 0, stderr
    assert stdout.startswith(f"wrote {out}: ") and stderr == ""
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "submission.json", "train_gpt.py", "train_seed1.log",
                                                     "train_seed2.log"]
    packed = (out / "train_gpt.py").read_bytes()
    assert packed == train_gpt.pack_source(runs["source_bytes"]) == runs["packed_file"].read_bytes()
    for path, name in zip(logs, ("train_seed1.log", "train_seed2.log")):
        assert (out / name).read_bytes() == path.read_bytes()

    sub = json.loads((out / "submission.json").read_text())
    sha = hashlib.sha256(packed).hexdigest()
    assert (sub["code_file"], sub["code_sha256"], sub["code_bytes"]) == ("train_gpt.py", sha, len(packed))
    assert sub["bytes_code"] == len(packed) and "code_differs_from_logs" not in sub
    assert all(header(p.read_text())["code_sha256"] == sha for p in logs)
    assert (sub["name"], sub["blurb"], sub["date"]) == ("Tiny", "Two tiny seeds.", "2026-12-07")
    assert [(s["seed"], s["log"], s["log_sha256"], s["bytes_source"]) for s in sub["seeds"]] == [
        (seed, name, hashlib.sha256(p.read_bytes()).hexdigest(), len(runs["source_bytes"]))
        for seed, name, p in zip((1, 2), ("train_seed1.log", "train_seed2.log"), logs)]
    # the same json as make_submission.py writes from the copies, --code the packed file
    code = ms.main([str(out / "train_seed1.log"), str(out / "train_seed2.log"), "-o", str(tmp_path / "ms.json"), "--name",
                    "Tiny", "--blurb", "Two tiny seeds.", "--date", "2026-12-07", "--baseline-mean", "9.0", "--baseline-std",
                    "0.01", "--code", str(out / "train_gpt.py")])
    assert code == 0, capsys.readouterr().err
    by_ms = json.loads((tmp_path / "ms.json").read_text())
    for s in by_ms["seeds"]:
        s["log"] = Path(s["log"]).name
    assert by_ms == dict(sub, code_file=str(out / "train_gpt.py"))
    assert sub["significance"]["baseline_mean"] == 9.0

    readme = (out / "README.md").read_text()
    assert readme.startswith("# Tiny\n\nTwo tiny seeds.\n")
    parsed = [ms.parse_log(out / n) for n in ("train_seed1.log", "train_seed2.log")]
    for log in parsed:
        log.path = Path(log.path.name)
    assert ms.results_table(parsed, []) in readme
    assert "SEED=<seed> torchrun --standalone --nproc_per_node=1 train_gpt.py" in readme
    for setting in ("ITERATIONS=6", "MODEL_DIM=64", "EVAL_STRIDE=32", "VE_LAYERS=1", "VOCAB_SIZE=64"):
        assert setting in readme, setting
    assert f"code_sha256:{sha}" in readme and f"{len(packed):,} bytes" in readme
    assert ps.UNPACK_COMMAND in readme and hashlib.sha256(runs["source_bytes"]).hexdigest() in readme
    assert ps.build_parser().parse_args(["-o", "x", "log.txt"]).program == TRAIN_GPT  # the default program


def killed_after_artifact(text: str) -> str:
    return text[:text.index("\n", text.index("\nartifact:") + 1) + 1]


def eval_only_log(text: str) -> str:
    """The log an EVAL_ONLY=1 job on the training's artifact writes (same code and settings), made from the
    training's full log: its header and settings, then the lines after its artifact: line."""
    lines = text.splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if line.startswith("artifact:"))
    head = "".join(line for line in lines[:cut] if not line.startswith(("step:", "training_done", "pre_quant", "eval:",
                                                                        "compile_warmup", "raw_weights", "export", "world_size:",
                                                                        "train_shards", "late_qat")))
    head = head.replace("run_id:tiny_seed2 ", "run_id:tiny_seed2_eval ").replace(
        "hyperparameter EVAL_ONLY=False", "hyperparameter EVAL_ONLY=True").replace(
        "hyperparameter RUN_ID=tiny_seed2", "hyperparameter RUN_ID=tiny_seed2_eval")
    return head + "".join(lines[cut + 1:])


def test_training_and_eval_jobs_are_joined(runs, tmp_path, capsys):
    full = runs["packed_seed2"].log_path.read_text()
    train, ev = tmp_path / "tiny_seed2.txt", tmp_path / "tiny_seed2_eval.txt"
    train.write_text(killed_after_artifact(full))
    ev.write_text(eval_only_log(full))
    out = tmp_path / "folder"
    code, _, err = pack(["-o", out, runs["source"].log_path, ev, train], capsys, runs["source_file"])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "eval_seed2.log", "submission.json", "train_gpt.py",
                                                     "train_seed1.log", "train_seed2.log"]
    seed = json.loads((out / "submission.json").read_text())["seeds"][1]
    assert (seed["log"], seed["eval_log"]) == ("train_seed2.log", "eval_seed2.log")
    assert seed["val_bpb"] == float(re.search(r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+)", full, re.M)[1])
    readme = (out / "README.md").read_text()
    assert "`train_seed2.log` + `eval_seed2.log`" in readme and "EVAL_ONLY=1" in readme


def test_the_baseline_logs_go_into_the_folder(runs, tmp_path, capsys):
    """--baseline-log: the baseline's logs are copied beside ours (baseline_train_seed*.log), the json and
    the README's table name the copies."""
    logs = [runs["source"].log_path, runs["packed_seed2"].log_path]
    baseline = []
    for path in logs:  # another configuration of the same code: a changed setting and a worse score
        text = path.read_text()
        final = float(re.search(r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+)", text, re.M)[1])
        text = re.sub(r"^hyperparameter MATRIX_LR=\S+$", "hyperparameter MATRIX_LR=0.5", text, flags=re.M)
        text = re.sub(r"^(final_ngram_ttt val_loss:\S+ val_bpb:)\S+", rf"\g<1>{final + 0.1:.8f}", text, flags=re.M)
        baseline.append(tmp_path / f"base_{path.name}")
        baseline[-1].write_text(text)
    out = tmp_path / "folder"
    code, stdout, err = pack(["-o", out, *logs, "--baseline-log", baseline[0], "--baseline-log", baseline[1]], capsys, runs["source_file"])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "baseline_train_seed1.log", "baseline_train_seed2.log",
                                                     "submission.json", "train_gpt.py", "train_seed1.log", "train_seed2.log"]
    assert [(out / f"baseline_train_seed{k}.log").read_bytes() for k in (1, 2)] == [p.read_bytes() for p in baseline]
    sig = json.loads((out / "submission.json").read_text())["significance"]
    assert sig["baseline_changes"] == {"MATRIX_LR": "0.5"} and sig["improvement_bpb"] == pytest.approx(0.1, abs=1e-7)
    assert [s["log"] for s in sig["baseline_seeds"]] == ["baseline_train_seed1.log", "baseline_train_seed2.log"]
    readme = (out / "README.md").read_text()
    assert "| baseline: `MATRIX_LR=0.5`; seeds 1, 2 |" in readme and "`baseline_train_seed2.log`" in readme


def test_refused_when_the_logs_ran_other_code(runs, tmp_path, capsys):
    other = tmp_path / "other_train_gpt.py"
    other.write_bytes(runs["source_bytes"] + b"\n# one more line\n")
    out = tmp_path / "folder"
    code, stdout, stderr = pack(["-o", out, runs["source"].log_path, "--program", other], capsys)
    assert code == 2 and stdout == "" and not out.exists()
    assert stderr.count("\n") == 1 and stderr.startswith("pack_submission: refused: ") and "ran other code" in stderr
    # accepted on request, and said so in the json and the README
    code, _, stderr = pack(["-o", out, runs["source"].log_path, "--program", other, "--allow-code-mismatch"], capsys)
    assert code == 0 and "ran other code" in stderr
    assert (out / "train_gpt.py").read_bytes() == train_gpt.pack_source(other.read_bytes())
    assert json.loads((out / "submission.json").read_text())["code_differs_from_logs"]
    assert "**Warning:** the logs ran other code" in (out / "README.md").read_text()


def test_a_packed_program_is_taken_as_it_is(runs, tmp_path, capsys):
    out = tmp_path / "folder"
    code, _, err = pack(["-o", out, runs["packed"].log_path, "--program", runs["packed_file"]], capsys)
    assert code == 0, err
    assert (out / "train_gpt.py").read_bytes() == runs["packed_file"].read_bytes()


def test_refused_into_a_folder_that_is_not_empty(runs, tmp_path):
    out = tmp_path / "folder"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    proc = subprocess.run([sys.executable, str(TOOL), "--output", str(out), str(runs["source"].log_path), "--program",
                           str(runs["source_file"])],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"pack_submission: refused: {out} exists and is not an empty folder; pass a new DIR"]
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_make_submission_refusals_apply(runs, tmp_path, capsys):
    out = tmp_path / "folder"
    code, _, err = pack(["-o", out, runs["source"].log_path, runs["packed"].log_path], capsys, runs["source_file"])  # SEED=1 twice
    assert code == 2 and "SEED=1 again" in err and not out.exists()
    cut = tmp_path / "cut.txt"
    cut.write_text(killed_after_artifact(runs["packed_seed2"].log_path.read_text()))
    code, _, err = pack(["-o", out, cut], capsys, runs["source_file"])
    assert code == 2 and "did not finish" in err and not out.exists()
