"""Tests for data/docs_to_shards.py and data/cached_challenge_fineweb.py (CPU, offline)."""

from __future__ import annotations

import json
import lzma
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


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "ok"}\n{"text": oops}\n', "line 2: invalid JSON"),
        ('{"text": "ok"}\n\n{"text": "unterminated\n', "line 3: invalid JSON"),
        ('{"text": "ok"}\n{"title": "no text"}\n', "line 2: no string field 'text'"),
        ('{"text": 5}\n', "line 1: no string field 'text'"),
        ('["text"]\n', "line 1: no string field 'text'"),
        ("\n\n", "no documents in"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(sp, tmp_path, content, message):
    path = tmp_path / "docs.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(d2s.DocsError, match=message):
        run(tmp_path, path, chunk_docs=1)
    assert list((tmp_path / "out").iterdir()) == []


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
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"docs:{len(DOCS)} train_docs:{len(DOCS) - 2} val_docs:2 " in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["fineweb_train_000000.bin", "fineweb_val_000000.bin"]
    assert np.array_equal(read_split(out, "val")[0], expected_stream(sp, DOCS[:2]))

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": "b"\n', encoding="utf-8")
    cmd[cmd.index(str(docs))] = str(bad)
    done = subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {bad} line 2: invalid JSON (Expecting ',' delimiter)"


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
