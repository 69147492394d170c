#!/usr/bin/env python3
"""Write a records folder for the 10min_16mb track, in the layout of openai/parameter-golf's
records/track_10min_16mb/<date>_<name>/, from the logs of train_gpt.py runs:

    python tools/pack_submission.py --output records/track_10min_16mb/2026-12-07_Name \\
        logs/seed1.txt logs/seed2.txt logs/seed3.txt --name "..." --blurb "..." [--program PATH]

  train_gpt.py     the packed program: train_gpt.pack_source(train_gpt.py), the bytes the runs counted
  README.md        name, blurb, the results table, the run command, how to read the packed code
  submission.json  tools/make_submission.py's json, with code_sha256/code_bytes of the packed file
  train_seed<SEED>.log (eval_seed<SEED>.log for a separate EVAL_ONLY job, ablation_<name>.log)

The logs are checked by tools/make_submission.py (its options and refusals apply); the folder is
refused (exit code 2, one line, nothing written) when the logs ran other code than the packed file
written here (their code_sha256), unless --allow-code-mismatch, and when DIR exists and is not empty.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO_ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(1, str(REPO_ROOT))  # train_gpt: pack_source and the settings' defaults
import make_submission as ms  # noqa: E402

# Settings left out of the run command: per run (SEED, RUN_ID), where a run writes, and machine paths
# (DATA_PATH, TOKENIZER_PATH: the README names the logged ones).
NOT_IN_COMMAND = ("RUN_ID", "SEED", "ARTIFACT_PATH", "EVAL_DUMP_NLL", "OVERWRITE", "EVAL_ONLY", "DATA_PATH",
                  "TOKENIZER_PATH")
UNPACK_COMMAND = ("python -c \"ns={}; exec(open('train_gpt.py','rb').read().split(b';f=__file__')[0], ns); "
                  "open('train_gpt_source.py','wb').write(ns['UNPACKED_SOURCE'].encode())\"")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/pack_submission.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a records folder (packed train_gpt.py, README.md, submission.json, the logs) from "
                    "train_gpt.py logs, one per seed. The logs are checked as by tools/make_submission.py.",
        epilog=ms.REFUSALS + "\n  * the logs' code_sha256 is not the packed train_gpt.py's (--allow-code-mismatch "
               "accepts it, recorded in code_differs_from_logs);\n  * DIR exists and is not empty.\n\n" + ms.SIGNIFICANCE_HELP)
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="DIR",
                        help="the records folder to write, e.g. records/track_10min_16mb/<date>_<name> (new or empty)")
    parser.add_argument("--program", type=Path, default=REPO_ROOT / "train_gpt.py", metavar="PATH",
                        help="the source to pack (default: the repository's train_gpt.py); a file packed already is "
                             "taken as it is")
    parser.add_argument("--allow-code-mismatch", action="store_true",
                        help="write the folder even when the logs' code_sha256 is not the packed file's")
    ms.add_submission_options(parser)
    parser.add_argument("--ablation", type=Path, action="append", default=[], metavar="LOG",
                        help="an ablation log for the README's table (a training, or an EVAL_ONLY eval); copied in too")
    return parser


# ----------------------------------------------------------------------------- the code

def is_packed(program: bytes) -> bool:
    import train_gpt
    return program.startswith(train_gpt.PACK_HEADER) and b"UNPACKED_SOURCE=lzma.decompress(" in program


def unpack(packed: bytes) -> bytes:
    """The source inside a packed train_gpt.py, by running only its decompression (the README's command)."""
    namespace: dict = {}
    exec(packed.split(b";f=__file__")[0], namespace)  # bytes: the file's coding line (latin-1) applies
    return namespace["UNPACKED_SOURCE"].encode()


def packed_program(path: Path) -> tuple[bytes, bytes]:
    """(packed file, its source) of --program."""
    import train_gpt  # pack_source, the packing every run hashes
    try:
        program = path.read_bytes()
    except OSError as e:
        raise ms.Refusal(f"{path}: cannot read --program ({e.strerror or e})") from None
    if is_packed(program):
        return program, unpack(program)
    packed = train_gpt.pack_source(program)
    if unpack(packed) != program:
        raise ms.Refusal(f"{path}: its packed form does not unpack to it (train_gpt.pack_source is broken)")
    return packed, program


# ----------------------------------------------------------------------------- the folder

def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "log"


def log_names(logs: list[ms.RunLog], ablations: list[ms.RunLog], baseline: list[ms.RunLog] = ()) -> dict[Path, str]:
    """{path given: file name in the folder}: train_seed<SEED>.log and eval_seed<SEED>.log for the seeds,
    the same with a baseline_ prefix for the baseline's, ablation_<file stem>.log for ablations; names are
    made unique with _2, _3, ..."""
    names: dict[Path, str] = {}

    def add(path: Path, stem: str):
        if path in names:
            return
        name, k = f"{stem}.log", 2
        while name in names.values():
            name, k = f"{stem}_{k}.log", k + 1
        names[path] = name

    for prefix, runs in (("", logs), ("baseline_", baseline)):
        for log in runs:
            seed = _safe(str(log.settings["SEED"]))
            add(log.path, f"{prefix}train_seed{seed}")
            if log.eval_log:
                add(log.eval_log.path, f"{prefix}eval_seed{seed}")
    for log in ablations:
        for run in (log, log.eval_log):
            if run:
                add(run.path, f"ablation_{_safe(run.path.stem)}")
    return names


def _env_value(logged: str) -> str:
    """A setting as an env var from its logged value: tuples as logged "(9, 10)" become "9,10"."""
    if m := re.fullmatch(r"\((.*)\)", logged):
        return ",".join(part.strip() for part in m[1].split(",") if part.strip())
    return logged


def run_command(log: ms.RunLog) -> str:
    """The command of a run: every setting of its log that is not train_gpt.py's default, then torchrun."""
    import train_gpt
    defaults = {name: f"{value}" for name, value in train_gpt.Hyperparameters(environ={}).items()}
    env = [f"{name}={shlex.quote(_env_value(value))}" for name, value in log.settings.items()
           if name not in NOT_IN_COMMAND and defaults.get(name) != value]
    return " \\\n  ".join([*(" ".join(env[i:i + 4]) for i in range(0, len(env), 4)),
                           f"SEED=<seed> torchrun --standalone --nproc_per_node={log.header['world_size']} train_gpt.py"])


def readme(args, logs: list[ms.RunLog], ablations: list[ms.RunLog], submission: dict, packed: bytes, source: bytes,
           diffs: dict, baseline: list[ms.RunLog] = ()) -> str:
    first, n = logs[0], len(logs)
    std = submission["val_bpb_std"]
    seeds = ", ".join(str(log.settings["SEED"]) for log in logs)
    score = f"**val_bpb {submission['val_bpb']:.5f}**" + (f" ± {std:.5f}" if std is not None else "") + \
        f" (mean over {n} seed{'s' if n > 1 else ''}: {seeds}; the full eval stack, `final_ngram_ttt`)"
    sig = submission.get("significance")
    if sig:
        score += f", p = {sig['p_value']:.3g} for an improvement over {sig['baseline_mean']:.5f} by more than {sig['delta']} bpb"
    out = [f"# {args.name or '(name)'}", "", args.blurb or "(blurb)", "",
           score + f". Largest total {submission['bytes_total']:,} bytes (code {len(packed):,} + model). "
           f"Hardware: {submission['hardware']}; torch {submission['torch']}.", "",
           "## Results", "", ms.results_table(logs, ablations, baseline, sig).rstrip("\n"), "",
           "Every number above is in the logs of this folder; `submission.json` (written by "
           "`tools/make_submission.py`) has them per seed with each log's sha256.", "",
           "## Run", "",
           "From this folder, with the challenge's data in `./data` (`data/cached_challenge_fineweb.py --variant sp1024`), "
           f"for each seed ({seeds}):", "", "```bash", run_command(first), "```", "",
           f"The settings are those of the logs that differ from `train_gpt.py`'s defaults. The logs read "
           f"`DATA_PATH={first.settings.get('DATA_PATH')}` and `TOKENIZER_PATH={first.settings.get('TOKENIZER_PATH')}`"
           + ("" if submission["dataset"]["official_tokenizer"] else " (not the official sp1024 tokenizer)") + "."]
    if any(log.eval_log for log in logs):
        out += ["", "A seed with an `eval_seed*.log` was scored by a second job, `EVAL_ONLY=1 ARTIFACT_PATH=<the artifact: "
                "line of its training log>` with the same settings, on the artifact its training wrote."]
    if diffs:
        out += ["", "Settings that differ between the logs: " + "; ".join(
            f"`{name}`: " + ", ".join(f"{v} ({Path(p).name})" for p, v in by_log.items())
            for name, by_log in submission["settings_differ"].items()) + "."]
    src_sha = hashlib.sha256(source).hexdigest()
    out += ["", "## The code", "",
            f"`train_gpt.py` is packed: {len(packed):,} bytes, the size every run counted (`code_bytes`) and "
            f"the file whose sha256 the logs record (`code_sha256:{submission['code_sha256']}`). It holds the "
            f"readable source ({len(source):,} bytes, sha256 `{src_sha}`) compressed with lzma (raw LZMA2, preset 9 "
            "extreme) as a latin-1 string literal, and one line that decompresses it and runs it with `exec`: it "
            "behaves exactly like the source (tracebacks show the source's lines). To read the source "
            "(runs only the decompression):", "", "```bash", UNPACK_COMMAND, "```", "",
            "`train_gpt_source.py` then has the size and sha256 above; running it or the packed file is the same."]
    if submission.get("code_differs_from_logs"):
        out += ["", "**Warning:** the logs ran other code than this `train_gpt.py`: "
                + "; ".join(submission["code_differs_from_logs"]) + "."]
    return "\n".join(out) + "\n"


def pack(args) -> str:
    out: Path = args.output
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ms.Refusal(f"{out} exists and is not an empty folder; pass a new DIR")
    logs, diffs = ms.checked_logs(args)
    packed, source = packed_program(args.program)
    code = ms.check_code(logs, packed, "train_gpt.py", allow_mismatch=args.allow_code_mismatch)
    for problem in code.get("code_differs_from_logs", []):
        print(f"pack_submission: warning (--allow-code-mismatch): {problem}", file=sys.stderr)
    ablations = ms.checked_ablations(args.ablation)
    baseline = ms.checked_baseline(args, logs)
    names = log_names(logs, ablations, baseline)
    contents = {name: path.read_bytes() for path, name in names.items()}
    for run in (r for log in logs + ablations + baseline for r in (log, log.eval_log) if r):
        run.path = Path(names[run.path])  # the json and the table name the copies in the folder
    submission = ms.build_submission(logs, args, diffs, code, baseline)
    text = readme(args, logs, ablations, submission, packed, source, diffs, baseline)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_gpt.py").write_bytes(packed)
    for name, data in contents.items():
        (out / name).write_bytes(data)
    (out / "submission.json").write_text(json.dumps(submission, indent=2) + "\n")
    (out / "README.md").write_text(text)
    return (f"wrote {out}: train_gpt.py ({len(packed):,} bytes, packed from {len(source):,}), README.md, submission.json "
            f"(val_bpb {submission['val_bpb']:.8f}), {len(contents)} log(s)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ms.check_option_pairs(parser, args)
    try:
        print(pack(args))
    except ms.Refusal as e:
        print(f"pack_submission: refused: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
