"""Tests for data/docs_to_shards.py and data/cached_challenge_fineweb.py (CPU, offline)."""

from __future__ import annotations

import hashlib
import json
import lzma
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "data"))

import cached_challenge_fineweb as ccf  # noqa: E402
import docs_to_shards as d2s  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
TOKENIZER = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
PROXY_DOCS = SHARED / "docs" / "proxy_train_extra.jsonl.xz"

DOCS = [
    "Hello world.",
    "Parameter golf: the smallest model that still predicts FineWeb well.",
    "",
    "Ünïcödé, emoji 🙂 and CJK 漢字 go through byte fallback.",
    "Two lines\nin one document.",
    "  leading and trailing spaces  ",
] + [f"Document number {i} says {'la ' * (i % 7)}and ends." for i in range(40)]


def read_shard(path: Path) -> np.ndarray:
    header = np.fromfile(path, dtype="<i4", count=256)
    assert header[0] == 20240520 and header[1] == 1 and not header[3:].any()
    assert path.stat().st_size == 1024 + 2 * int(header[2])
    return np.fromfile(path, dtype="<u2", offset=1024)


def read_split(out_dir: Path, split: str) -> list[np.ndarray]:
    return [read_shard(p) for p in sorted(out_dir.glob(f"fineweb_{split}_*.bin"))]


def write_jsonl(path: Path, texts: list[str], opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text, "id": len(text)}) + "\n")
    return path


# ----------------------------------------------------------------------------- docs_to_shards


@pytest.fixture(scope="module")
def sp():
    if not TOKENIZER.is_file():
        pytest.skip(f"official tokenizer not found at {TOKENIZER}")
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(TOKENIZER))


def expected_stream(sp, texts: list[str]) -> np.ndarray:
    return np.array([t for text in texts for t in [1] + sp.encode(text)], dtype=np.uint16)


def run(tmp_path: Path, input_path: Path, name: str = "out", **kwargs) -> tuple[d2s.Summary, Path]:
    out = tmp_path / name
    return d2s.docs_to_shards(input_path, TOKENIZER, out, **kwargs), out


def test_stream_is_bos_plus_encode(sp, tmp_path):
    summary, out = run(tmp_path, write_jsonl(tmp_path / "docs.jsonl", DOCS))
    assert [p.name for p in summary.shards] == ["fineweb_train_000000.bin"]
    assert read_split(out, "val") == []
    (tokens,) = read_split(out, "train")
    assert np.array_equal(tokens, expected_stream(sp, DOCS))
    assert summary.train_docs == len(DOCS) and summary.train_tokens == len(tokens)
    assert summary.text_bytes == sum(len(t.encode()) for t in DOCS)
    assert "docs:46 " in summary.line() and "shards:1 " in summary.line()


def test_xz_input_gives_identical_shards(sp, tmp_path):
    _, plain = run(tmp_path, write_jsonl(tmp_path / "docs.jsonl", DOCS), "plain")
    _, xz = run(tmp_path, write_jsonl(tmp_path / "docs.jsonl.xz", DOCS, lzma.open), "xz")
    assert (plain / "fineweb_train_000000.bin").read_bytes() == (xz / "fineweb_train_000000.bin").read_bytes()


def test_small_shards_cut_the_same_stream(sp, tmp_path):
    summary, out = run(tmp_path, write_jsonl(tmp_path / "docs.jsonl", DOCS), shard_tokens=50)
    shards = read_split(out, "train")
    assert len(shards) == len(summary.shards) > 3
    assert all(len(s) == 50 for s in shards[:-1]) and 0 < len(shards[-1]) <= 50
    assert np.array_equal(np.concatenate(shards), expected_stream(sp, DOCS))


def test_worker_count_does_not_change_output(sp, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    _, one = run(tmp_path, docs, "one", workers=1, shard_tokens=97, val_docs=5, chunk_docs=3)
    _, two = run(tmp_path, docs, "two", workers=2, shard_tokens=97, val_docs=5, chunk_docs=3)
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and len(names) > 3
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def test_first_val_docs_go_to_val(sp, tmp_path):
    summary, out = run(tmp_path, write_jsonl(tmp_path / "docs.jsonl", DOCS), val_docs=5, chunk_docs=2)
    assert (summary.val_docs, summary.train_docs) == (5, len(DOCS) - 5)
    assert np.array_equal(np.concatenate(read_split(out, "val")), expected_stream(sp, DOCS[:5]))
    assert np.array_equal(np.concatenate(read_split(out, "train")), expected_stream(sp, DOCS[5:]))


def test_max_docs_and_text_field(sp, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"body": t}) + "\n\n" for t in DOCS), encoding="utf-8")
    summary, out = run(tmp_path, path, max_docs=4, text_field="body")
    assert summary.train_docs == 4
    assert np.array_equal(read_split(out, "train")[0], expected_stream(sp, DOCS[:4]))


def test_raw_newline_inside_a_json_string_continues_the_object(sp, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "first"}\n{"text": "broken\nacross lines"}\n{"text": "last"}\n', encoding="utf-8")
    _, out = run(tmp_path, path)
    assert np.array_equal(read_split(out, "train")[0], expected_stream(sp, ["first", "broken\nacross lines", "last"]))


CUT = "the file looks cut off; re-download or regenerate it"


def leftovers(root: Path, *keep: str) -> list[str]:
    """Everything under root (hidden staging folders included) but the named inputs."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name not in keep)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "ok"}\n{"text": oops}\n', "invalid JSON: Expecting value: line 2 column 10; fix or remove"),
        ('{"text": "ok"}\n{"text": "a"} x\n{"text": "b"}\n', "invalid JSON: Extra data: line 2 column 15; fix or remove"),
        ('{"text": "ok"}\n{"text": "a"\n{"text": "b"}\n', "invalid JSON: Expecting ',' delimiter: line 2 column 13; fix or remove"),
        ('{"text": "ok"}\n{"text": "bro\nken" x}\n', "invalid JSON: Expecting ',' delimiter: line 3 column 6; fix or remove"),
        ('{"text": "ok"}\n{"title": "no text"}\n', "line 2: no string field 'text'"),
        ('{"text": 5}\n', "line 1: no string field 'text'"),
        ('["text"]\n', "line 1: no string field 'text'"),
        ("\n\n", "no documents in"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(sp, tmp_path, content, message):
    path = tmp_path / "docs.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(d2s.DocsError, match=message) as info:
        run(tmp_path, path, chunk_docs=1)
    assert "\n" not in str(info.value) and "cut off" not in str(info.value)
    assert leftovers(tmp_path, "docs.jsonl") == []


TRUNCATED_JSON = [  # (text after one good line, line, column, json's message) of a file cut mid-document
    ('{"text": "unterminated', 2, 10, "Unterminated string starting at"),
    ('{"text": "two raw\nnewlines\nthen cut', 2, 10, "Unterminated string starting at"),
    ('{"text": "escape cut\\', 2, 10, "Unterminated string starting at"),
    ('{"te', 2, 2, "Unterminated string starting at"),
    ('{"text"', 2, 8, "Expecting ':' delimiter"),
    ('{"text": ', 2, 9, "Expecting value"),  # the position right after the last character
    ('{"text": "done"', 2, 16, "Expecting ',' delimiter"),
    ('{"text": "done"\n\n', 2, 16, "Expecting ',' delimiter"),
]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.xz"])
@pytest.mark.parametrize("tail, line, column, msg", TRUNCATED_JSON)
def test_json_cut_mid_document_says_where_and_what_to_do(sp, tmp_path, suffix, tail, line, column, msg):
    path = tmp_path / f"docs{suffix}"
    with (lzma.open if suffix.endswith(".xz") else open)(path, "wt", encoding="utf-8") as f:
        f.write('{"text": "a whole first document"}\n' + tail)
    with pytest.raises(d2s.DocsError) as info:
        run(tmp_path, path, chunk_docs=1, shard_tokens=3)  # the first document fills shards before the error
    assert str(info.value) == (
        f"{path}: invalid JSON: {msg}: line {line} column {column}; it ends inside this document: {CUT}"
    )
    assert leftovers(tmp_path, path.name) == []


def truncated_xz(tmp_path: Path, n_docs: int = 3000) -> tuple[Path, int]:
    """A .jsonl.xz cut to half its bytes, and how many whole lines come out before the cut."""
    data = lzma.compress(b"".join(json.dumps({"text": f"doc {i} " * 20}).encode() + b"\n" for i in range(n_docs)))
    path = tmp_path / "docs.jsonl.xz"
    path.write_bytes(data[: len(data) // 2])
    lines = 0
    with pytest.raises(EOFError), lzma.open(path, "rt", encoding="utf-8") as f:
        for _ in f:
            lines += 1
    return path, lines


def test_truncated_xz_says_where_and_what_to_do(sp, tmp_path):
    path, lines = truncated_xz(tmp_path)
    assert 100 < lines < 3000
    with pytest.raises(d2s.DocsError) as info:
        run(tmp_path, path, shard_tokens=1000)
    assert str(info.value) == (
        f"{path}: the xz data ends early, after line {lines} "
        f"(Compressed file ended before the end-of-stream marker was reached); {CUT}"
    )
    assert leftovers(tmp_path, path.name) == []


def test_damaged_xz_and_cut_utf8(sp, tmp_path):
    data = bytearray(lzma.compress(b"".join(json.dumps({"text": f"doc {i} " * 20}).encode() + b"\n" for i in range(3000))))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "docs.jsonl.xz"
    path.write_bytes(bytes(data))
    with pytest.raises(d2s.DocsError, match=r"docs.jsonl.xz: damaged xz data after line \d+ \(.*\); re-download or regenerate it$"):
        run(tmp_path, path)
    plain = tmp_path / "docs.jsonl"
    plain.write_bytes('{"text": "ok"}\n{"text": "caf\u00e9'.encode()[:-1])
    with pytest.raises(d2s.DocsError, match=rf"docs.jsonl: not UTF-8 after line 1 \(unexpected end of data\); {CUT}$"):
        run(tmp_path, plain)
    assert leftovers(tmp_path, path.name, plain.name) == []


def test_cli_cut_input_is_one_line_exit_2_and_leaves_nothing(sp, tmp_path):
    good = [json.dumps({"text": f"document {i}"}) for i in range(300)]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(good) + '\n{"text": "cut here', encoding="utf-8")
    xz, lines = truncated_xz(tmp_path)
    for path, expected in [
        (cut, f"error: {cut}: invalid JSON: Unterminated string starting at: line 301 column 10; it ends inside this document: {CUT}"),
        (xz, f"error: {xz}: the xz data ends early, after line {lines} "
             f"(Compressed file ended before the end-of-stream marker was reached); {CUT}"),
    ]:
        out = tmp_path / "new" / "sub" / "shards"
        cmd = [sys.executable, str(REPO / "data" / "docs_to_shards.py"), "--input", str(path), "--tokenizer",
               str(TOKENIZER), "--output-dir", str(out), "--shard-tokens", "100", "--workers", "2"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr == expected + "\n"
        assert leftovers(tmp_path, cut.name, xz.name) == []  # not even tmp_path/new


def test_failure_keeps_an_existing_folder_exactly_as_it_was(sp, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    _, out = run(tmp_path, docs, shard_tokens=100, val_docs=3)
    (out / "notes.txt").write_text("the user's own file")
    (out / "sub").mkdir()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert len(before) > 3
    cut = tmp_path / "cut.jsonl"
    cut.write_text(docs.read_text() + '{"text": "cut', encoding="utf-8")
    with pytest.raises(d2s.DocsError, match="looks cut off"):
        run(tmp_path, cut, shard_tokens=50, overwrite=True, chunk_docs=2)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert (out / "sub").is_dir() and leftovers(tmp_path, docs.name, cut.name, "sub", *before) == ["out"]


def test_interrupt_leaves_nothing_and_success_keeps_user_files(sp, tmp_path, monkeypatch):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    real, calls = d2s.encode_chunk, []

    def interrupted(texts):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(texts)

    monkeypatch.setattr(d2s, "encode_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        d2s.docs_to_shards(docs, TOKENIZER, tmp_path / "a" / "b", shard_tokens=20, chunk_docs=4)
    assert len(calls) == 3 and leftovers(tmp_path, docs.name) == []
    monkeypatch.setattr(d2s, "encode_chunk", real)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("kept")
    summary = d2s.docs_to_shards(docs, TOKENIZER, out)
    assert sorted(p.name for p in out.iterdir()) == ["fineweb_train_000000.bin", "notes.txt"]
    assert summary.shards == [out / "fineweb_train_000000.bin"] and (out / "notes.txt").read_text() == "kept"
    assert leftovers(tmp_path, docs.name, "notes.txt", "fineweb_train_000000.bin") == ["mine"]
    with pytest.raises(d2s.DocsError, match="is a file, not a folder"):
        d2s.docs_to_shards(docs, TOKENIZER, out / "notes.txt")


def test_missing_input_and_tokenizer(sp, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    with pytest.raises(d2s.DocsError, match="input not found"):
        run(tmp_path, tmp_path / "missing.jsonl")
    with pytest.raises(d2s.DocsError, match="tokenizer not found"):
        d2s.docs_to_shards(docs, tmp_path / "missing.model", tmp_path / "out")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(d2s.DocsError, match="cannot load tokenizer"):
        d2s.docs_to_shards(docs, tmp_path / "junk.model", tmp_path / "out")


def test_existing_shards_need_overwrite(sp, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    run(tmp_path, docs, shard_tokens=100)
    out = tmp_path / "out"
    assert len(list(out.glob("fineweb_train_*.bin"))) > 2
    with pytest.raises(d2s.DocsError, match="--overwrite"):
        run(tmp_path, docs)
    summary, _ = run(tmp_path, docs, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["fineweb_train_000000.bin"] == [p.name for p in summary.shards]


def test_cli(sp, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl.xz", DOCS, lzma.open)
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        str(REPO / "data" / "docs_to_shards.py"),
        "--input",
        str(docs),
        "--tokenizer",
        str(TOKENIZER),
        "--output-dir",
        str(out),
        "--val-docs",
        "2",
        "--workers",
        "2",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"docs:{len(DOCS)} train_docs:{len(DOCS) - 2} val_docs:2 " in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["fineweb_train_000000.bin", "fineweb_val_000000.bin"]
    assert np.array_equal(read_split(out, "val")[0], expected_stream(sp, DOCS[:2]))

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": "b"\n', encoding="utf-8")
    cmd[cmd.index(str(docs))] = str(bad)
    done = subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == (
        f"error: {bad}: invalid JSON: Expecting ',' delimiter: line 2 column 13; it ends inside this document: {CUT}\n"
    )
    assert sorted(p.name for p in out.iterdir()) == ["fineweb_train_000000.bin", "fineweb_val_000000.bin"]
    assert np.array_equal(read_split(out, "val")[0], expected_stream(sp, DOCS[:2]))


def test_real_proxy_docs_slice(sp, tmp_path):
    if not PROXY_DOCS.is_file():
        pytest.skip(f"shared proxy documents not found at {PROXY_DOCS}")
    summary, out = run(tmp_path, PROXY_DOCS, max_docs=200, workers=2, val_docs=20)
    with lzma.open(PROXY_DOCS, "rt", encoding="utf-8") as f:
        texts = [json.loads(next(f))["text"] for _ in range(200)]
    assert (summary.val_docs, summary.train_docs) == (20, 180)
    assert np.array_equal(read_split(out, "val")[0], expected_stream(sp, texts[:20]))
    assert np.array_equal(read_split(out, "train")[0], expected_stream(sp, texts[20:]))
    assert 2.0 < summary.text_bytes / (summary.train_tokens + summary.val_tokens) < 3.0


# ----------------------------------------------------------------------------- data/sample

SAMPLE = REPO / "data" / "sample"
DATA_README = REPO / "data" / "README.md"
OFFICIAL_TOKENIZER_SHA256 = "4f5e8adb109c66b4886963bc75a7befd73bda36d27fd7102df8e9e66503b0e2a"
SAMPLE_FILES = ["fineweb_1024_bpe.model", "fineweb_train_000000.bin", "fineweb_val_000000.bin"]


def sample_table() -> dict[str, dict]:
    """data/README.md's table of the sample: file -> bytes, tokens, documents, sha256."""
    rows = re.findall(
        r"^\| `([\w.]+)` \| ([\d,]+) \|\s*([\d,]*)\s*\|\s*([\d,]*)\s*\| `([0-9a-f]{64})` \|$",
        DATA_README.read_text(encoding="utf-8"),
        re.M,
    )
    number = lambda text: int(text.replace(",", "")) if text else None  # noqa: E731
    return {r[0]: dict(bytes=number(r[1]), tokens=number(r[2]), docs=number(r[3]), sha256=r[4]) for r in rows}


def sample_command() -> list[str]:
    """The command data/README.md documents for making the sample, as argv."""
    blocks = re.findall(r"```bash\n(.*?)```", DATA_README.read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if "--output-dir data/sample" in b]
    return shlex.split(block.replace("\\\n", " "))


def sample_documents(split: str) -> list[tuple[int, ...]]:
    (tokens,) = read_split(SAMPLE, split)
    assert tokens[0] == 1
    starts = np.flatnonzero(tokens == 1).tolist() + [len(tokens)]
    return [tuple(tokens[a + 1 : b].tolist()) for a, b in zip(starts, starts[1:])]


def test_sample_files_are_those_data_readme_states():
    table = sample_table()
    assert sorted(table) == sorted(p.name for p in SAMPLE.iterdir()) == SAMPLE_FILES
    for name, row in table.items():
        data = (SAMPLE / name).read_bytes()
        assert len(data) == row["bytes"] and hashlib.sha256(data).hexdigest() == row["sha256"], name
    assert table["fineweb_1024_bpe.model"]["sha256"] == OFFICIAL_TOKENIZER_SHA256
    total = sum(row["bytes"] for row in table.values())
    assert total <= 600_000 and f"{total:,} bytes in all" in DATA_README.read_text(encoding="utf-8")


def test_sample_shards_hold_whole_documents_and_val_is_disjoint_from_train():
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(SAMPLE / "fineweb_1024_bpe.model"))
    table, docs = sample_table(), {}
    for split in ("train", "val"):
        row = table[f"fineweb_{split}_000000.bin"]
        (tokens,) = read_split(SAMPLE, split)  # checks the header and the file size
        docs[split] = sample_documents(split)
        assert len(tokens) == row["tokens"] and len(docs[split]) == row["docs"]
        assert int(tokens.max()) < sp.vocab_size()
        for doc in docs[split]:  # each is [BOS] + encode(text) of a real text
            assert sp.encode(sp.decode(list(doc))) == list(doc)
    assert 90_000 <= table["fineweb_train_000000.bin"]["tokens"] <= 110_000
    assert 16_000 <= table["fineweb_val_000000.bin"]["tokens"] <= 20_000
    assert not set(docs["val"]) & set(docs["train"])
    argv = sample_command()
    assert argv[argv.index("--val-docs") + 1] == str(len(docs["val"]))
    assert argv[argv.index("--max-docs") + 1] == str(len(docs["val"]) + len(docs["train"]))


def test_sample_is_not_ignored_by_git():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [f"data/sample/{name}" for name in SAMPLE_FILES]
    done = subprocess.run(["git", "check-ignore", "--no-index", "-v", *paths], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == "", done.stdout  # 1: none of them is ignored
    for path in ["data/datasets/x/fineweb_train_000000.bin", "data/tokenizers/fineweb_1024_bpe.model"]:
        assert subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPO).returncode == 0, path


def test_sample_regenerates_byte_identical(tmp_path):
    """The documented command, run on the shared proxy documents, gives the committed files."""
    argv = sample_command()
    assert argv[:2] == ["python", "data/docs_to_shards.py"]
    source = (REPO / argv[argv.index("--input") + 1]).resolve()
    if not source.is_file():
        pytest.skip(f"proxy documents not found at {source}")
    out = tmp_path / "sample"
    argv[0], argv[argv.index("--output-dir") + 1] = sys.executable, str(out)
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "docs:263 train_docs:223 val_docs:40 " in done.stdout
    assert sorted(p.name for p in out.iterdir()) == SAMPLE_FILES[1:]
    for path in out.iterdir():
        assert path.read_bytes() == (SAMPLE / path.name).read_bytes(), path.name


# ----------------------------------------------------------------------------- cached_challenge_fineweb

DATASET = "datasets/datasets/fineweb10B_sp1024"
TOKENIZER_REMOTE = "datasets/tokenizers/fineweb_1024_bpe.model"


def write_fake_shard(path: Path, num_tokens: int, seed: int) -> None:
    header = np.zeros(256, dtype="<i4")
    header[:3] = 20240520, 1, num_tokens
    tokens = np.random.default_rng(seed).integers(0, 1024, num_tokens, dtype=np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.tobytes() + tokens.astype("<u2").tobytes())


class FakeHub:
    """A local copy of the dataset repo's layout, fetched the way the real fetch does."""

    def __init__(self, root: Path, train_shards: int = 5):
        self.root, self.calls = root, []
        self.corrupt: dict[str, int] = {}  # remote path -> how many more downloads come out truncated
        self.error: Exception | None = None
        manifest = {
            "datasets": [
                {
                    "name": "fineweb10B_sp1024",
                    "tokenizer_name": "sp_bpe_1024",
                    "stats": {"files_train": train_shards, "files_val": 1},
                }
            ],
            "tokenizers": [{"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model"}],
        }
        (root / "datasets").mkdir(parents=True)
        (root / "datasets" / "manifest.json").write_text(json.dumps(manifest))
        write_fake_shard(root / DATASET / "fineweb_val_000000.bin", 3000, seed=0)
        for i in range(train_shards):
            write_fake_shard(root / DATASET / f"fineweb_train_{i:06d}.bin", 5000 + i, seed=i + 1)
        (root / TOKENIZER_REMOTE).parent.mkdir(parents=True)
        (root / TOKENIZER_REMOTE).write_bytes(b"fake sentencepiece model")

    def __call__(self, remote_path: str, staging_dir: Path) -> Path:
        self.calls.append(remote_path)
        if self.error is not None:
            raise self.error
        dest = staging_dir / remote_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / remote_path, dest)
        if self.corrupt.get(remote_path, 0) > 0:
            self.corrupt[remote_path] -= 1
            with dest.open("r+b") as f:
                f.truncate(dest.stat().st_size - 7)
        return dest


@pytest.fixture
def hub(tmp_path) -> FakeHub:
    return FakeHub(tmp_path / "hub")


def download(hub: FakeHub, data_dir: Path, train_shards: int, logs: list[str] | None = None) -> list[Path]:
    return ccf.download(train_shards, data_dir=data_dir, fetch=hub, log=(logs if logs is not None else []).append)


def local_files(data_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file())


def test_download_layout(hub, tmp_path):
    data, logs = tmp_path / "data", []
    paths = download(hub, data, 2, logs)
    assert local_files(data) == [
        "datasets/fineweb10B_sp1024/fineweb_train_000000.bin",
        "datasets/fineweb10B_sp1024/fineweb_train_000001.bin",
        "datasets/fineweb10B_sp1024/fineweb_val_000000.bin",
        "manifest.json",
        "tokenizers/fineweb_1024_bpe.model",
    ]
    assert len(hub.calls) == 5 and len(paths) == 4
    for path in paths:
        remote = TOKENIZER_REMOTE if path.suffix == ".model" else f"{DATASET}/{path.name}"
        assert path.read_bytes() == (hub.root / remote).read_bytes()
    assert logs[0].startswith("[1/4] fineweb_val_000000.bin ") and "ETA" in logs[0]
    assert logs[-1].startswith("done: 4 files")


def test_second_run_skips_everything_and_more_shards_fetch_only_new(hub, tmp_path):
    data = tmp_path / "data"
    download(hub, data, 2)
    hub.calls.clear()
    logs = []
    download(hub, data, 2, logs)
    assert hub.calls == []
    assert all("present, skipped" in line for line in logs[:-1])
    download(hub, data, 4)
    assert hub.calls == [f"{DATASET}/fineweb_train_000002.bin", f"{DATASET}/fineweb_train_000003.bin"]


@pytest.mark.parametrize("damage", ["truncate", "bad_magic", "too_short"])
def test_damaged_local_file_is_fetched_again(hub, tmp_path, damage):
    data = tmp_path / "data"
    download(hub, data, 2)
    shard = data / "datasets/fineweb10B_sp1024/fineweb_train_000001.bin"
    good = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(good[:-2])
    elif damage == "bad_magic":
        shard.write_bytes(b"\0\0\0\0" + good[4:])
    else:
        shard.write_bytes(good[:100])
    assert ccf.file_problem(shard) is not None
    hub.calls.clear()
    download(hub, data, 2)
    assert hub.calls == [f"{DATASET}/fineweb_train_000001.bin"]
    assert shard.read_bytes() == good


def test_one_bad_download_is_retried(hub, tmp_path):
    hub.corrupt[f"{DATASET}/fineweb_val_000000.bin"] = 1
    download(hub, tmp_path / "data", 0)
    assert hub.calls.count(f"{DATASET}/fineweb_val_000000.bin") == 2
    assert ccf.file_problem(tmp_path / "data/datasets/fineweb10B_sp1024/fineweb_val_000000.bin") is None


def test_download_that_stays_corrupt_is_an_error(hub, tmp_path):
    remote = f"{DATASET}/fineweb_train_000000.bin"
    hub.corrupt[remote] = 99
    with pytest.raises(ccf.DownloadError, match=f"{remote} .* corrupt after 2 downloads: .*header says"):
        download(hub, tmp_path / "data", 1)
    assert hub.calls.count(remote) == 2
    assert not (tmp_path / "data/datasets/fineweb10B_sp1024/fineweb_train_000000.bin").exists()


def test_fetch_failure_is_a_clear_error(hub, tmp_path):
    hub.error = ConnectionError("Max retries exceeded with url\nmore detail")
    with pytest.raises(ccf.DownloadError) as info:
        download(hub, tmp_path / "data", 1)
    assert str(info.value) == (
        "downloading datasets/manifest.json from willdepueoai/parameter-golf failed: "
        "ConnectionError: Max retries exceeded with url"
    )


def test_too_many_train_shards(hub, tmp_path):
    with pytest.raises(ccf.DownloadError, match="has 5 train shards .* asked for 6"):
        download(hub, tmp_path / "data", 6)
    with pytest.raises(SystemExit, match="error: --train-shards must be >= 0"):
        ccf.main(["--train-shards", "-1"])


def test_hub_fetch_uses_the_dataset_repo(tmp_path, monkeypatch):
    import huggingface_hub

    seen = {}

    def fake_hf_hub_download(repo_id, filename, *, repo_type, local_dir):
        seen.update(repo_id=repo_id, filename=filename, repo_type=repo_type)
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    got = ccf.hub_fetch()("datasets/manifest.json", tmp_path)
    assert got == tmp_path / "datasets/manifest.json"
    assert seen == {
        "repo_id": "willdepueoai/parameter-golf",
        "filename": "datasets/manifest.json",
        "repo_type": "dataset",
    }


def test_missing_huggingface_hub_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ccf.DownloadError, match="pip install huggingface-hub"):
        ccf.hub_fetch()


def test_manifest_without_the_dataset(hub, tmp_path):
    (hub.root / "datasets" / "manifest.json").write_text(json.dumps({"datasets": [{"name": "fineweb10B_sp4096"}]}))
    with pytest.raises(ccf.DownloadError, match="manifest.json lists no shard counts for fineweb10B_sp1024"):
        download(hub, tmp_path / "data", 1)
