#!/usr/bin/env python3
"""Turn JSON-lines documents into challenge shards.

Each document becomes [BOS] + sp.encode(text) (no EOS); documents are concatenated and the
token stream is cut into shards of at most --shard-tokens tokens, as in the official export.
The first --val-docs documents go to fineweb_val_*.bin, the rest to fineweb_train_*.bin.
A shard is 256 little-endian int32 header words [20240520, 1, num_tokens, 0, ...] followed by
num_tokens little-endian uint16 tokens.

    python data/docs_to_shards.py --input docs.jsonl.xz --tokenizer fineweb_1024_bpe.model \
        --output-dir data/datasets/my_sp1024 --workers 16

Shards are made in a hidden folder beside --output-dir and moved in only when all is written, so a
failed or interrupted run leaves nothing behind. Bad input (for example a .jsonl or .xz file cut
off mid-document) stops it with one line naming the file, line and column, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import lzma
import multiprocessing
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from itertools import chain, count
from pathlib import Path
from typing import TextIO

import numpy as np
import sentencepiece as spm

MAGIC = 20240520
VERSION = 1
HEADER_WORDS = 256
TOKEN_DTYPE = np.dtype("<u2")
CHUNK_DOCS = 256  # documents per worker task
SHARD_GLOBS = ("fineweb_train_*.bin", "fineweb_val_*.bin")

Encoded = tuple[np.ndarray, np.ndarray, int]  # (tokens of the chunk, tokens per document, UTF-8 bytes)


class DocsError(Exception):
    """A problem with the inputs; its message is shown to the user as one line."""


@dataclass
class Summary:
    train_docs: int = 0
    val_docs: int = 0
    train_tokens: int = 0
    val_tokens: int = 0
    text_bytes: int = 0
    shards: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        docs, tokens = self.train_docs + self.val_docs, self.train_tokens + self.val_tokens
        return (
            f"docs:{docs} train_docs:{self.train_docs} val_docs:{self.val_docs} "
            f"tokens:{tokens} train_tokens:{self.train_tokens} val_tokens:{self.val_tokens} "
            f"shards:{len(self.shards)} bytes_per_token:{self.text_bytes / max(tokens, 1):.3f} "
            f"seconds:{self.seconds:.1f}"
        )


# ----------------------------------------------------------------------------- reading


def open_text(path: Path) -> TextIO:
    if path.suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8", newline="\n")
    return path.open(encoding="utf-8", newline="\n")


CUT_OFF = "the file looks cut off; re-download or regenerate it"


def json_error(path: Path, first_line: int, record: str, e: json.JSONDecodeError, cut_off: bool) -> str:
    """One line: file, line and column in the file, json's own message, and what to do.

    json reports a problem found at the end of a line after the line break; it is placed right
    after the line's last character instead, where the document really stops."""
    pos = min(e.pos, len(record.rstrip()))
    line = first_line + record.count("\n", 0, pos)
    column = pos - record.rfind("\n", 0, pos)
    fix = f"it ends inside this document: {CUT_OFF}" if cut_off else "fix or remove that document"
    return f"{path}: invalid JSON: {e.msg}: line {line} column {column}; {fix}"


def read_docs(path: Path, text_field: str, max_docs: int | None) -> Iterator[str]:
    """Yield the text of each JSON object in `path`, one object a line, blank lines skipped.

    Raw control characters inside JSON strings are accepted (json's strict=False). A raw newline
    there continues the object on the next line; the shared proxy documents contain such objects.
    Every problem is a DocsError of one line naming the file and line; input that ends inside a
    document (a cut-off .jsonl, or .xz data without its end) says so and how to fix it.
    """
    decoder = json.JSONDecoder(strict=False)
    docs = line_no = 0
    try:
        with open_text(path) as f:
            lines = enumerate(f, 1)
            for line_no, record in lines:
                if not record.strip():
                    continue
                first_line = line_no
                while True:
                    try:
                        obj = decoder.decode(record)
                        break
                    except json.JSONDecodeError as e:
                        unterminated = e.msg.startswith("Unterminated string")
                        more = next(lines, None) if unterminated else None
                        if more is None:  # no continuation: a broken document, or the end of the file
                            at_end = unterminated or (
                                e.pos >= len(record.rstrip()) and all(not rest.strip() for _, rest in lines)
                            )
                            raise DocsError(json_error(path, first_line, record, e, at_end)) from None
                        line_no, continuation = more
                        record += continuation
                text = obj.get(text_field) if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    raise DocsError(f"{path} line {first_line}: no string field {text_field!r}")
                yield text
                docs += 1
                if docs == max_docs:
                    return
    except EOFError as e:  # lzma: the data stops before the end-of-stream marker
        raise DocsError(f"{path}: the xz data ends early, after line {line_no} ({e}); {CUT_OFF}") from None
    except lzma.LZMAError as e:
        raise DocsError(f"{path}: damaged xz data after line {line_no} ({e}); re-download or regenerate it") from None
    except UnicodeDecodeError as e:
        fix = CUT_OFF if e.reason == "unexpected end of data" else "the input must be UTF-8"
        raise DocsError(f"{path}: not UTF-8 after line {line_no} ({e.reason}); {fix}") from None
    except OSError as e:
        raise DocsError(f"cannot read {path}: {e}") from e


def batched(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ----------------------------------------------------------------------------- encoding
_sp: spm.SentencePieceProcessor | None = None  # per-process tokenizer, set by init_encoder


def init_encoder(tokenizer: str) -> None:
    global _sp
    _sp = spm.SentencePieceProcessor(model_file=tokenizer)


def encode_chunk(texts: list[str]) -> Encoded:
    """Tokenize a chunk of documents; each becomes [BOS] + its tokens."""
    assert _sp is not None, "init_encoder was not called"
    ids = _sp.encode(texts, num_threads=1)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(chain.from_iterable(ids), dtype=TOKEN_DTYPE, count=int(lengths.sum()))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    tokens = np.insert(flat, starts, _sp.bos_id())
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return tokens, lengths + 1, text_bytes


def encode_all(chunks: Iterable[list[str]], workers: int, tokenizer: str) -> Iterator[Encoded]:
    """Encode chunks in order. At most 4 chunks per worker are in flight, so memory stays
    bounded (Pool.imap would read the whole input ahead of the workers)."""
    if workers == 1:
        init_encoder(tokenizer)
        yield from map(encode_chunk, chunks)
        return
    with multiprocessing.Pool(workers, init_encoder, (tokenizer,)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(encode_chunk, (chunk,)))
            if len(pending) >= 4 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ----------------------------------------------------------------------------- writing


class ShardWriter:
    """Cuts a token stream into fineweb_<split>_NNNNNN.bin shards of at most `shard_tokens`."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int):
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.pieces: list[np.ndarray] = []
        self.filled = 0
        self.tokens = 0
        self.names: list[str] = []

    def add(self, tokens: np.ndarray) -> None:
        while self.filled + len(tokens) >= self.shard_tokens:
            take = self.shard_tokens - self.filled
            self.pieces.append(tokens[:take])
            self.filled += take
            self._flush()
            tokens = tokens[take:]
        if len(tokens):
            self.pieces.append(tokens)
            self.filled += len(tokens)

    def close(self) -> None:
        if self.filled:
            self._flush()

    def _flush(self) -> None:
        name = f"fineweb_{self.split}_{len(self.names):06d}.bin"
        header = np.zeros(HEADER_WORDS, dtype="<i4")
        header[:3] = MAGIC, VERSION, self.filled
        with (self.out_dir / name).open("wb") as f:
            f.write(header.tobytes())
            for piece in self.pieces:
                f.write(piece.astype(TOKEN_DTYPE, copy=False).tobytes())
        self.names.append(name)
        self.tokens += self.filled
        self.pieces, self.filled = [], 0


# ----------------------------------------------------------------------------- main


def existing_shards(out_dir: Path) -> list[Path]:
    return sorted(p for pattern in SHARD_GLOBS for p in out_dir.glob(pattern))


def load_tokenizer(path: Path) -> spm.SentencePieceProcessor:
    if not path.is_file():
        raise DocsError(f"tokenizer not found: {path}")
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        raise DocsError(f"cannot load tokenizer {path}: {e}") from e
    if sp.bos_id() < 0:
        raise DocsError(f"tokenizer {path} has no BOS token")
    if sp.vocab_size() > 1 << 16:
        raise DocsError(f"tokenizer {path} has {sp.vocab_size()} tokens; uint16 shards hold at most 65536")
    return sp


def make_folders(folder: Path) -> list[Path]:
    """mkdir -p; returns the folders it created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DocsError(f"cannot create {folder}: {e.strerror or e}") from None
    return missing


def make_staging(output_dir: Path) -> Path:
    """An empty hidden folder beside output_dir (same file system, so renames are atomic)."""
    for i in count():
        path = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}-{i}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def publish(staging: Path, output_dir: Path, names: list[str], old: list[Path]) -> list[Path]:
    """Move the finished shards into output_dir: a rename of the whole folder if it is new;
    otherwise shard by shard, then remove old shards the new ones did not replace."""
    if not output_dir.exists():
        staging.rename(output_dir)
    else:
        for name in names:
            (staging / name).replace(output_dir / name)
        for path in old:
            if path.name not in names:
                path.unlink()
        staging.rmdir()
    return [output_dir / name for name in names]


def docs_to_shards(
    input_path: Path,
    tokenizer: Path,
    output_dir: Path,
    *,
    val_docs: int = 0,
    shard_tokens: int = 100_000_000,
    workers: int = 1,
    max_docs: int | None = None,
    text_field: str = "text",
    overwrite: bool = False,
    chunk_docs: int = CHUNK_DOCS,
) -> Summary:
    """Write the shards. They are made in a hidden folder beside `output_dir` and moved in at the
    end, so on any error or interrupt nothing is left behind: no new folder, no partial shard, and
    a folder that was there before keeps exactly the files it had."""
    start = time.monotonic()
    if not input_path.is_file():
        raise DocsError(f"input not found: {input_path}")
    load_tokenizer(tokenizer)
    if output_dir.exists() and not output_dir.is_dir():
        raise DocsError(f"--output-dir {output_dir} is a file, not a folder")
    old = existing_shards(output_dir)
    if old and not overwrite:
        raise DocsError(
            f"{output_dir} already holds {len(old)} shard(s) ({old[0].name}, ...); pass --overwrite to replace them"
        )
    target = output_dir.resolve()  # "." or "..", or a symlink: staging goes beside the real folder
    made = make_folders(target.parent)
    staging = None
    try:
        staging = make_staging(target)
        summary = Summary()
        val = ShardWriter(staging, "val", shard_tokens)
        train = ShardWriter(staging, "train", shard_tokens)
        chunks = batched(read_docs(input_path, text_field, max_docs), chunk_docs)
        with closing(encode_all(chunks, workers, str(tokenizer))) as encoded:
            for tokens, doc_lengths, text_bytes in encoded:
                summary.text_bytes += text_bytes
                n_val = min(len(doc_lengths), val_docs - summary.val_docs)  # the first val_docs documents
                cut = int(doc_lengths[:n_val].sum())
                val.add(tokens[:cut])
                train.add(tokens[cut:])
                summary.val_docs += n_val
                summary.train_docs += len(doc_lengths) - n_val
        if summary.train_docs + summary.val_docs == 0:
            raise DocsError(f"no documents in {input_path}")
        val.close()
        train.close()
        summary.shards = publish(staging, output_dir, val.names + train.names, old)
    except BaseException as e:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(made):  # only folders this run created, and only while empty
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(e, OSError):
            raise DocsError(f"cannot write shards for {output_dir}: {e}") from e
        raise
    summary.train_tokens, summary.val_tokens = train.tokens, val.tokens
    summary.seconds = time.monotonic() - start
    return summary


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Tokenize JSON-lines documents into challenge shards.")
    p.add_argument("--input", type=Path, required=True, help="documents, one JSON object a line (.jsonl or .jsonl.xz)")
    p.add_argument("--tokenizer", type=Path, required=True, help="SentencePiece model, e.g. fineweb_1024_bpe.model")
    p.add_argument("--output-dir", type=Path, required=True, help="folder for fineweb_{train,val}_NNNNNN.bin")
    p.add_argument("--val-docs", type=non_negative_int, default=0, help="first N documents go to the val shard(s)")
    p.add_argument("--shard-tokens", type=positive_int, default=100_000_000, help="most tokens per shard")
    p.add_argument("--workers", type=positive_int, default=1, help="tokenizer processes")
    p.add_argument("--max-docs", type=positive_int, default=None, help="stop after this many documents (val ones included)")
    p.add_argument("--text-field", default="text", help="JSON key holding the document text")
    p.add_argument("--overwrite", action="store_true", help="replace shards already in --output-dir")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        summary = docs_to_shards(
            args.input,
            args.tokenizer,
            args.output_dir,
            val_docs=args.val_docs,
            shard_tokens=args.shard_tokens,
            workers=args.workers,
            max_docs=args.max_docs,
            text_field=args.text_field,
            overwrite=args.overwrite,
        )
    except DocsError as e:  # a problem with the inputs or the output folder: one line, exit code 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(summary.line())
    for path in summary.shards:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
