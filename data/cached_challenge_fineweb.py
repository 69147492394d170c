#!/usr/bin/env python3
"""Download the official challenge data from the Hugging Face dataset repo willdepueoai/parameter-golf.

Writes, next to this script (the project's data/ folder):
    datasets/fineweb10B_sp1024/fineweb_val_NNNNNN.bin    every validation shard
    datasets/fineweb10B_sp1024/fineweb_train_NNNNNN.bin  the first --train-shards training shards
    tokenizers/fineweb_1024_bpe.model
    manifest.json                                        the export's manifest (shard counts)

Resumable: a file already present and intact is skipped. Each file is downloaded into
data/.download/ and checked (shard header magic, version and file size == 1024 + 2 * num_tokens)
before it is moved to its final name, so an interrupted run never leaves a partial file there.

    python data/cached_challenge_fineweb.py --variant sp1024 --train-shards 80
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ID = "willdepueoai/parameter-golf"  # a Hugging Face *dataset* repo
REMOTE_ROOT = "datasets"  # the export's folder inside that repo
DATA_DIR = Path(__file__).resolve().parent
STAGING_DIR = ".download"
MAGIC, VERSION, HEADER_BYTES = 20240520, 1, 1024


@dataclass(frozen=True)
class Variant:
    dataset: str  # folder under datasets/, and the dataset's name in the manifest
    tokenizer: str  # file under tokenizers/


VARIANTS = {"sp1024": Variant("fineweb10B_sp1024", "fineweb_1024_bpe.model")}

Fetch = Callable[[str, Path], Path]
"""fetch(remote_path, staging_dir) downloads one file of the repo somewhere under staging_dir
and returns its local path; remote_path is relative to the repo root."""

Log = Callable[[str], None]


class DownloadError(Exception):
    """A download that cannot go on; its message is shown to the user as one line."""


def hub_fetch() -> Fetch:
    """The real fetch: huggingface_hub's hf_hub_download into the staging folder.

    hf_hub_download writes to a temporary file and renames it when complete."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DownloadError("huggingface_hub is not installed; run: pip install huggingface-hub") from None

    def fetch(remote_path: str, staging_dir: Path) -> Path:
        local = hf_hub_download(repo_id=REPO_ID, repo_type="dataset", filename=remote_path, local_dir=staging_dir)
        return Path(local)

    return fetch


def file_problem(path: Path) -> str | None:
    """What is wrong with a downloaded file, or None if it looks intact."""
    size = path.stat().st_size
    if path.suffix == ".bin":
        if size < HEADER_BYTES:
            return f"{size} bytes, shorter than the {HEADER_BYTES}-byte shard header"
        with path.open("rb") as f:
            magic, version, num_tokens = struct.unpack("<3i", f.read(12))
        if magic != MAGIC:
            return f"bad magic {magic} (expected {MAGIC})"
        if version != VERSION:
            return f"unsupported version {version} (expected {VERSION})"
        expected = HEADER_BYTES + 2 * num_tokens
        if size != expected:
            return f"{size} bytes, but its header says {num_tokens} tokens = {expected} bytes"
        return None
    if size == 0:
        return "empty file"
    if path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return f"not valid JSON ({e})"
    return None


def one_line(error: BaseException) -> str:
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def ensure_file(remote_path: str, dest: Path, fetch: Fetch, staging_dir: Path, log: Log) -> bool:
    """Make `dest` an intact copy of `remote_path`; return True if it had to be downloaded.

    A bad file is deleted and downloaded again once; a second bad download is an error."""
    if dest.exists():
        problem = file_problem(dest)
        if problem is None:
            return False
        log(f"{dest}: {problem}; downloading it again")
        dest.unlink()
    for attempt in (1, 2):
        try:
            got = fetch(remote_path, staging_dir)
        except Exception as e:
            raise DownloadError(f"downloading {remote_path} from {REPO_ID} failed: {one_line(e)}") from e
        problem = file_problem(got)
        if problem is None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(got, dest)
            return True
        got.unlink()
        if attempt == 1:
            log(f"downloaded {remote_path} is bad ({problem}); trying once more")
    raise DownloadError(f"{remote_path} from {REPO_ID} is corrupt after 2 downloads: {problem}")


def shard_counts(manifest: dict, dataset: str) -> tuple[int, int]:
    """(train shards, val shards) of `dataset` as listed in the export's manifest."""
    entries = manifest.get("datasets") if isinstance(manifest, dict) else None
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == dataset:
            try:
                return int(entry["stats"]["files_train"]), int(entry["stats"]["files_val"])
            except (KeyError, TypeError, ValueError):
                break
    raise DownloadError(f"{REPO_ID}/{REMOTE_ROOT}/manifest.json lists no shard counts for {dataset}")


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def download(
    train_shards: int,
    variant: str = "sp1024",
    data_dir: Path = DATA_DIR,
    fetch: Fetch | None = None,
    log: Log = print,
) -> list[Path]:
    """Download the val shards, the first `train_shards` train shards and the tokenizer.

    Returns the local paths of all of them; `fetch` defaults to the Hugging Face Hub."""
    if train_shards < 0:
        raise DownloadError(f"--train-shards must be >= 0, got {train_shards}")
    spec = VARIANTS[variant]
    fetch = fetch or hub_fetch()
    staging_dir = data_dir / STAGING_DIR

    manifest_path = data_dir / "manifest.json"
    ensure_file(f"{REMOTE_ROOT}/manifest.json", manifest_path, fetch, staging_dir, log)
    available, val_shards = shard_counts(json.loads(manifest_path.read_text(encoding="utf-8")), spec.dataset)
    if train_shards > available:
        raise DownloadError(f"{spec.dataset} has {available} train shards on {REPO_ID}; asked for {train_shards}")

    remote_dir = f"{REMOTE_ROOT}/datasets/{spec.dataset}"
    names = [f"fineweb_val_{i:06d}.bin" for i in range(val_shards)]
    names += [f"fineweb_train_{i:06d}.bin" for i in range(train_shards)]
    files = [(f"{remote_dir}/{name}", data_dir / "datasets" / spec.dataset / name) for name in names]
    files.append((f"{REMOTE_ROOT}/tokenizers/{spec.tokenizer}", data_dir / "tokenizers" / spec.tokenizer))

    fetched_bytes, fetched_files, fetch_seconds = 0, 0, 0.0
    for i, (remote_path, dest) in enumerate(files, 1):
        start = time.monotonic()
        downloaded = ensure_file(remote_path, dest, fetch, staging_dir, log)
        size = dest.stat().st_size
        prefix = f"[{i}/{len(files)}] {dest.name} {size / 1e6:.1f} MB"
        if not downloaded:
            log(f"{prefix} present, skipped")
            continue
        fetch_seconds += time.monotonic() - start
        fetched_bytes += size
        fetched_files += 1
        rate = fetched_bytes / max(fetch_seconds, 1e-9)
        eta = (len(files) - i) * (fetched_bytes / fetched_files) / rate
        log(f"{prefix} downloaded, {rate / 1e6:.1f} MB/s, ETA {format_seconds(eta)}")

    shutil.rmtree(staging_dir, ignore_errors=True)
    log(f"done: {len(files)} files in {data_dir}, {fetched_files} downloaded ({fetched_bytes / 1e6:.1f} MB)")
    return [dest for _, dest in files]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=f"Download the challenge shards and tokenizer from {REPO_ID}.")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="sp1024", help="tokenizer family")
    p.add_argument(
        "--train-shards",
        type=int,
        default=80,
        help="train shards to download (default 80: the challenge's 8B training tokens)",
    )
    args = p.parse_args(argv)
    try:
        download(args.train_shards, args.variant)
    except DownloadError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
