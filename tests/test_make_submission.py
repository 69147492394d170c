"""tools/make_submission.py on real logs of tiny train_gpt.py runs (CPU): the json's numbers equal
those in the logs, mean/std, each refusal, the t distribution, the significance test and the plot."""
import hashlib
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

import conftest
import train_gpt
from conftest import REPO_ROOT, TINY_ENV, TRAIN_GPT, run_trainer

TOOL = REPO_ROOT / "tools" / "make_submission.py"
sys.path.insert(0, str(TOOL.parent))
import make_submission as ms  # noqa: E402

# TTT chunks of 2048 tokens so that test-time training really runs (4 chunks of the 8128 val targets);
# a periodic validation at step 3 for the plot.
RUN_ENV = dict(TINY_ENV, TTT_CHUNK_TOKENS="2048", VAL_LOSS_EVERY="3")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def logs(tmp_path_factory, tiny_data, tiny_tokenizer) -> dict[str, Path]:
    """Real logs, trained once for this module: seeds 1-3 of one config, an ablation (another
    MATRIX_LR, SEED=1 again) and two EVAL_ONLY runs on its artifact (SEED=5, and SEED=1 as its own).
    They run a copy of train_gpt.py taken now ("program"), so that all of them run one code."""
    cwd = tmp_path_factory.mktemp("submission_runs")
    program = tmp_path_factory.mktemp("program") / "train_gpt.py"
    shutil.copyfile(TRAIN_GPT, program)
    env = dict(RUN_ENV, DATA_PATH=str(tiny_data), TOKENIZER_PATH=str(tiny_tokenizer), VOCAB_SIZE="64")
    runs = {f"seed{s}": dict(SEED=str(s)) for s in (1, 2, 3)}
    runs.update(ablation=dict(SEED="1", MATRIX_LR="0.05"), eval_only=dict(SEED="5", EVAL_ONLY="1"),
                ablation_eval=dict(SEED="1", EVAL_ONLY="1"))  # the ablation's artifact scored again, as a second job
    out = dict(program=program)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conftest, "TRAIN_GPT", program)  # what run_trainer runs
        for run_id, extra in runs.items():
            if extra.get("EVAL_ONLY"):  # the artifact the ablation's log names
                extra = dict(extra, ARTIFACT_PATH=re.search(r"^artifact:(\S+) ", out["ablation"].read_text(), re.M)[1])
            result = run_trainer(dict(env, RUN_ID=run_id, **extra), cwd)
            assert result.returncode == 0, result.output[-3000:]
            out[run_id] = result.log_path
    return out


def make(argv, capsys) -> tuple[int, str, str]:
    code = ms.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def three(logs):
    return [logs["seed1"], logs["seed2"], logs["seed3"]]


@pytest.fixture
def submission(three, tmp_path, capsys) -> dict:
    out = tmp_path / "submission.json"
    code, stdout, stderr = make([*three, "--output", out, "--name", "Tiny", "--author", "A. Person", "--github-id", "aperson",
                                 "--blurb", "three tiny seeds"], capsys)
    assert code == 0, stderr
    assert stderr == "" and f"wrote {out}" in stdout
    return json.loads(out.read_text())


# ----------------------------------------------------------------------------- independent parsing

def grab(text: str, pattern: str, group=1, cast=float, last=True):
    found = re.findall(pattern, text, re.M)
    assert found, pattern
    value = found[-1] if last else found[0]
    return cast(value if isinstance(value, str) else value[group - 1])


def expected_seed(path: Path) -> dict:
    text = path.read_text()
    last_train = re.findall(r"^step:(\d+)/(\d+) train_loss:\S+ .*elapsed:([\d.]+)s step_avg:([\d.]+)ms", text, re.M)[-1]
    header = re.search(r"^run_id:(\S+) torch:(\S+) device:(.+) world_size:(\d+) attention:\S+ code_bytes:(\d+)"
                       r"(?: source_bytes:\d+)?$", text, re.M)
    artifact = re.search(r"^artifact:\S+ compressed_bytes:(\d+) code_bytes:(\d+) total_bytes:(\d+)$", text, re.M)
    return dict(
        seed=grab(text, r"^hyperparameter SEED=(\d+)$", cast=int),
        run_id=header[1],
        log=str(path), log_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        val_bpb=grab(text, r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+) \(ngram:1 ttt:1\)$"),
        val_loss=grab(text, r"^final_ngram_ttt val_loss:(\S+) "),
        final_int6_sliding_window_val_bpb=grab(text, r"^final_int6_sliding_window val_loss:\S+ val_bpb:(\S+) stride:32$"),
        final_int6_roundtrip_val_bpb=grab(text, r"^final_int6_roundtrip val_loss:\S+ val_bpb:(\S+)$"),
        ngram_only_val_bpb=grab(text, r"^ngram_only val_loss:\S+ val_bpb:(\S+) "),
        ttt_only_val_bpb=grab(text, r"^ttt_only val_loss:\S+ val_bpb:(\S+) "),
        pre_quant_val_bpb=grab(text, r"^pre_quant val_loss:\S+ val_bpb:(\S+) "),
        bytes_total=grab(text, r"^Total submission size int6\+lzma: (\d+) bytes$", cast=int),
        bytes_compressed=int(artifact[1]), bytes_code=int(artifact[2]),
        steps=grab(text, r"^training_done steps:(\d+) ", cast=int),
        iterations=int(last_train[1]),
        step_avg_ms=float(last_train[3]),
        train_wall_seconds=grab(text, r"^training_done steps:\d+ wall_seconds:([\d.]+)"),
        train_elapsed_seconds=float(last_train[2]),
        eval_seconds={label: grab(text, rf"^eval:{label} seconds:([\d.]+) ")
                      for label in ("periodic", "pre_quant", "int6_roundtrip", "int6_sliding_window", "ngram_ttt")},
        gpus=int(header[4]), gpu=header[3], torch=header[2],
        ngram_audit=dict(positions=grab(text, r"^ngram_audit positions:(\d+) ", cast=int),
                         max_abs_err=grab(text, r"^ngram_audit positions:\d+ max_abs_err:(\S+)$")),
        last_step_line=int(last_train[0]),
    )


# ----------------------------------------------------------------------------- the json

def test_fields_equal_the_numbers_in_the_logs(submission, three):
    assert [s["log"] for s in submission["seeds"]] == [str(p) for p in three]
    for got, path in zip(submission["seeds"], three):
        want = expected_seed(path)
        assert want.pop("last_step_line") == want["steps"] == int(TINY_ENV["ITERATIONS"])
        for key, value in want.items():
            assert got[key] == value, (path.name, key)
        assert got["eval_stack"] == dict(ngram=True, ttt=True)
        assert got["sliding_window_stride"] == 32
    assert (submission["name"], submission["author"], submission["github_id"], submission["blurb"]) == \
        ("Tiny", "A. Person", "aperson", "three tiny seeds")
    assert submission["track"] == "10min_16mb"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", submission["date"])
    text = three[0].read_text()
    assert submission["dataset"] == dict(data_path=grab(text, r"^hyperparameter DATA_PATH=(.*)$", cast=str),
                                         tokenizer_path=grab(text, r"^hyperparameter TOKENIZER_PATH=(.*)$", cast=str),
                                         val_tokens=grab(text, r"^val_tokens:(\d+) ", cast=int),
                                         official_tokenizer=False)
    assert submission["bytes_total"] == max(s["bytes_total"] for s in submission["seeds"])
    assert submission["bytes_code"] == submission["seeds"][0]["bytes_code"]
    assert submission["settings"]["MATRIX_LR"] == "0.025" and "SEED" not in submission["settings"]
    assert "settings_differ" not in submission and "significance" not in submission


def test_mean_and_sample_std_over_seeds(submission, three):
    bpb = [expected_seed(p)["val_bpb"] for p in three]
    assert len(set(bpb)) == 3  # the seeds really differ
    assert submission["n_seeds"] == 3
    assert submission["val_bpb"] == pytest.approx(statistics.mean(bpb), abs=1e-8)
    assert submission["val_bpb_std"] == pytest.approx(statistics.stdev(bpb), abs=1e-8)  # ddof=1
    sliding = [expected_seed(p)["final_int6_sliding_window_val_bpb"] for p in three]
    assert submission["summary"]["final_int6_sliding_window_val_bpb"]["mean"] == pytest.approx(statistics.mean(sliding), abs=1e-8)


def test_one_seed_has_no_std(logs, tmp_path, capsys):
    out = tmp_path / "one.json"
    code, _, err = make([logs["seed2"], "-o", out], capsys)
    assert code == 0, err
    sub = json.loads(out.read_text())
    assert sub["val_bpb_std"] is None and sub["val_bpb"] == pytest.approx(sub["seeds"][0]["val_bpb"], abs=1e-8)
    assert (sub["name"], sub["blurb"], sub["author"], sub["github_id"]) == ("", "", "", "")  # placeholders


def test_different_settings_allowed_on_request(logs, tmp_path, capsys):
    out = tmp_path / "ablation.json"
    code, _, err = make([logs["seed2"], logs["ablation"], "-o", out, "--allow-different-settings"], capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["settings_differ"] == {"MATRIX_LR": {str(logs["seed2"]): "0.025", str(logs["ablation"]): "0.05"}}
    code, _, err = make([logs["seed2"], logs["ablation"], "-o", out, "--ignore-setting", "MATRIX_LR"], capsys)
    assert code == 0, err


# ----------------------------------------------------------------------------- --code: the file submitted

@pytest.fixture
def packed(logs, tmp_path) -> Path:
    """The packed train_gpt.py the runs counted and hashed."""
    path = tmp_path / "packed" / "train_gpt.py"
    path.parent.mkdir()
    path.write_bytes(train_gpt.pack_source(logs["program"].read_bytes()))
    return path


def test_code_is_the_packed_file_the_runs_hashed(logs, three, packed, tmp_path, capsys):
    out = tmp_path / "submission.json"  # two trainings and one scored by an EVAL_ONLY job: all ran the packed file's code
    code, _, err = make([logs["seed2"], logs["seed3"], logs["ablation_eval"], killed_in_eval(logs["ablation"], tmp_path / "t.txt"),
                         "-o", out, "--code", packed, "--ignore-setting", "MATRIX_LR"], capsys)
    assert code == 0, err
    sub = json.loads(out.read_text())
    data = packed.read_bytes()
    assert (sub["code_file"], sub["code_sha256"], sub["code_bytes"]) == (str(packed), hashlib.sha256(data).hexdigest(), len(data))
    assert sub["bytes_code"] == len(data) and "code_differs_from_logs" not in sub
    assert [s["bytes_source"] for s in sub["seeds"]] == [len(logs["program"].read_bytes())] * 3
    code, _, err = make([*three, "-o", out], capsys)  # without --code: no code fields
    assert code == 0 and not {"code_file", "code_sha256", "code_bytes"} & set(json.loads(out.read_text()))


def test_code_refusals(logs, three, packed, tmp_path, capsys):
    out = tmp_path / "submission.json"
    # the plain source is not what the runs hashed (nor counted)
    code, _, err = make([*three, "-o", out, "--code", logs["program"]], capsys)
    assert code == 2 and not out.exists()
    assert f"{three[0]} ran other code: its code_sha256 is" in err and "(+2 more)" in err
    # an EVAL_ONLY log is checked too (joined by code_bytes to a training log without code_sha256)
    ev = edited(logs["ablation_eval"], tmp_path / "e.txt", sub_line(r"^code_sha256:\S+", "code_sha256:" + "0" * 64))
    train = edited(killed_in_eval(logs["ablation"], tmp_path / "t.txt"), tmp_path / "t.txt", sub_line(r"^code_sha256:.*\n", ""))
    code, _, err = make([ev, train, "-o", out, "--code", packed], capsys)
    assert code == 2 and f"{ev} ran other code" in err
    # a log without code_sha256 (older logs): its code_bytes must be the file's size
    no_sha = edited(three[0], tmp_path / "no_sha.txt", sub_line(r"^code_sha256:.*\n", ""))
    assert make([no_sha, "-o", out, "--code", packed], capsys)[0] == 0
    bigger = tmp_path / "bigger.py"
    bigger.write_bytes(packed.read_bytes() + b"\n")
    code, _, err = make([no_sha, "-o", tmp_path / "b.json", "--code", bigger], capsys)
    assert code == 2 and f"counted code_bytes:{len(packed.read_bytes()):,} but {bigger} has" in err
    code, _, err = make([*three, "-o", tmp_path / "c.json", "--code", tmp_path / "missing.py"], capsys)
    assert code == 2 and "cannot read --code" in err


def test_header_source_bytes_is_optional(logs, tmp_path):
    new = ms.parse_log(logs["seed1"])
    assert new.header["source_bytes"] == len(logs["program"].read_bytes())
    assert new.header["code_bytes"] == len(train_gpt.pack_source(logs["program"].read_bytes()))
    old = edited(logs["seed1"], tmp_path / "old_header.txt", sub_line(r" source_bytes:\d+$", ""))
    parsed = ms.parse_log(old)
    assert parsed.header["source_bytes"] is None and parsed.header["code_bytes"] == new.header["code_bytes"]
    assert "bytes_source" not in ms.seed_result(parsed) and ms.seed_result(new)["bytes_source"] == new.header["source_bytes"]


DEV_LOGS = sorted((REPO_ROOT / "logs" / "dev").glob("*_h200_*.txt"))  # 2026-11-27: all cut short
FINISHED_DEV_LOGS = sorted((REPO_ROOT / "logs" / "dev").glob("*_h100_finished_*.txt"))


@pytest.mark.skipif(not DEV_LOGS, reason="no logs/dev/*.txt")
def test_gpu_dev_logs_parse_and_are_refused(tmp_path, capsys):
    """The H200 logs in logs/dev/: a device name with spaces, the older compile_warmup line; all
    stopped before their final lines (one is over the cap), so none may become a submission."""
    for path in DEV_LOGS:
        log = ms.parse_log(path)
        text = path.read_text()
        assert log.header["device"] == re.search(r"^run_id:\S+ torch:\S+ device:(.+) world_size:", text, re.M)[1]
        assert log.header["world_size"] == 1 and log.train and log.training_done
        assert log.compile_warmup_seconds == grab(text, r"^compile_warmup.* seconds:([\d.]+)")
        code, _, err = make([path, "-o", tmp_path / "dev.json"], capsys)
        assert code == 2 and ("did not finish" in err or "over the cap" in err), err


# ----------------------------------------------------------------------------- refusals

def edited(src: Path, dst: Path, edit) -> Path:
    dst.write_text(edit(src.read_text()))
    return dst


def sub_line(pattern, repl):
    def edit(text):
        new, n = re.subn(pattern, repl, text, flags=re.M)
        assert n == 1, pattern
        return new
    return edit


REFUSALS = {
    # the seeds are checked before the settings: the ablation is refused for its SEED=1
    "same_seed": (lambda L, d: [L["seed1"], L["seed2"], L["ablation"]], "SEED=1 again"),
    "same_log": (lambda L, d: [L["seed1"], L["seed2"], L["seed1"]], "the same log"),
    "eval_only": (lambda L, d: [L["seed1"], L["seed2"], L["eval_only"]], "EVAL_ONLY=True"),
    "over_limit": (lambda L, d: [L["seed1"], edited(L["seed2"], d / "big.txt", sub_line(
        r"^Total submission size int6\+lzma: \d+ bytes$", "Total submission size int6+lzma: 16000001 bytes"))],
        "over the cap (16,000,001 bytes"),
    "over_limit_text": (lambda L, d: [edited(L["seed2"], d / "big.txt",
                                             lambda t: t + "ERROR: ARTIFACT OVER LIMIT: 16000001 bytes > 16000000\n")],
                        "ARTIFACT OVER LIMIT"),
    "truncated": (lambda L, d: [L["seed1"], edited(L["seed2"], d / "cut.txt", lambda t: t[:t.index("final_ngram_ttt ")])],
                  "did not finish (no final_ngram_ttt line)"),
    "error_line": (lambda L, d: [edited(L["seed2"], d / "err.txt", lambda t: t + "ERROR: something went wrong\n"), L["seed1"]],
                   "ERROR: something went wrong"),
    "audit_failed": (lambda L, d: [L["seed1"], edited(L["seed2"], d / "audit.txt", sub_line(
        r"max_abs_err:\S+$", "max_abs_err:2.000e-06"))], "n-gram audit failed"),
    "audit_absent": (lambda L, d: [L["seed1"], edited(L["seed2"], d / "noaudit.txt", sub_line(r"^ngram_audit .*\n", ""))],
                     "no 'ngram_audit"),
    "different_settings": (lambda L, d: [L["seed2"], L["seed3"], L["ablation"]], "settings differ between logs: MATRIX_LR"),
    "two_runs_in_one_log": (lambda L, d: [edited(L["seed1"], d / "twice.txt", lambda t: t + L["seed2"].read_text())],
                            "holds 2 runs"),
    "not_a_log": (lambda L, d: [edited(L["seed1"], d / "junk.txt", lambda t: "hello\n")], "not a train_gpt.py log"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals(case, logs, tmp_path, capsys):
    make_logs, expected = REFUSALS[case]
    out = tmp_path / "submission.json"
    code, stdout, stderr = make([*make_logs(logs, tmp_path), "-o", out], capsys)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("make_submission: refused: "), stderr
    assert expected in stderr, stderr
    assert not out.exists() and stdout == ""


def test_refusal_from_the_command_line(logs, tmp_path):
    """The real command: exit code 2 and a single line on stderr."""
    out = tmp_path / "submission.json"
    proc = subprocess.run([sys.executable, str(TOOL), str(logs["seed1"]), str(logs["eval_only"]), "--output", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "EVAL_ONLY=True" in proc.stderr
    assert not out.exists()
    help_text = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True).stdout
    for phrase in ("one-sided Welch", "mean_ours < X - D", "NOT converted", "--plot-only", "16,000,000"):
        assert phrase in help_text


# ----------------------------------------------------------------------------- training and eval as two jobs

def killed_in_eval(log: Path, dst: Path) -> Path:
    """The training log as it stands when the job is stopped right after writing its artifact."""
    text = log.read_text()
    end = text.index("\n", text.index("\nartifact:") + 1) + 1
    return edited(log, dst, lambda t: text[:end])


def test_training_and_its_eval_only_log_make_one_seed(logs, tmp_path, capsys):
    train = killed_in_eval(logs["ablation"], tmp_path / "train.txt")
    out = tmp_path / "s.json"
    assert make([train, "-o", out], capsys)[0] == 2  # alone, the training has no score
    code, stdout, stderr = make([logs["ablation_eval"], train, "-o", out, "--table", tmp_path / "t.md"], capsys)
    assert code == 0, stderr
    seed = json.loads(out.read_text())["seeds"][0]
    full, ev = expected_seed(logs["ablation"]), logs["ablation_eval"].read_text()
    assert seed["val_bpb"] == grab(ev, r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+)")
    assert seed["val_bpb"] == full["val_bpb"]  # the same artifact scored by the same code and settings
    assert seed["final_int6_sliding_window_val_bpb"] == grab(ev, r"^final_int6_sliding_window val_loss:\S+ val_bpb:(\S+)")
    assert seed["pre_quant_val_bpb"] == full["pre_quant_val_bpb"]  # from the training log
    for key in ("steps", "step_avg_ms", "bytes_total", "bytes_compressed", "seed"):
        assert seed[key] == full[key], key
    assert seed["eval_log"] == str(logs["ablation_eval"]) and seed["log"] == str(train)
    assert seed["eval_log_sha256"] == hashlib.sha256(logs["ablation_eval"].read_bytes()).hexdigest()
    assert seed["ngram_audit"]["positions"] == grab(ev, r"^ngram_audit positions:(\d+) ", cast=int)
    assert set(seed["eval_seconds"]) == {"periodic", "pre_quant", "int6_roundtrip", "int6_sliding_window", "ngram_ttt"}
    assert f"`{train}` + `{logs['ablation_eval']}`" in (tmp_path / "t.md").read_text()


def test_eval_phases_of_a_training_killed_late_are_not_counted_twice(logs, tmp_path, capsys):
    """Killed during its sliding pass: its roundtrip line is in the training log and the eval log."""
    text = logs["ablation"].read_text()
    train = edited(logs["ablation"], tmp_path / "train.txt", lambda t: text[:text.index("\neval:int6_sliding_window ") + 1])
    assert "eval:int6_roundtrip " in train.read_text()
    code, _, err = make([train, logs["ablation_eval"], "-o", tmp_path / "s.json"], capsys)
    assert code == 0, err
    seconds = json.loads((tmp_path / "s.json").read_text())["seeds"][0]["eval_seconds"]
    ev = logs["ablation_eval"].read_text()
    for label in ("int6_roundtrip", "int6_sliding_window", "ngram_ttt"):
        assert seconds[label] == grab(ev, rf"^eval:{label} seconds:([\d.]+) "), label
    assert seconds["pre_quant"] == grab(text, r"^eval:pre_quant seconds:([\d.]+) ")


def test_plot_only_draws_a_split_run_as_one_line(logs, tmp_path, capsys, monkeypatch):
    drawn = []
    monkeypatch.setattr(ms, "plot_logs", lambda runs, out: drawn.extend(runs))
    train = killed_in_eval(logs["ablation"], tmp_path / "train.txt")
    code, _, err = make([logs["seed1"], train, logs["ablation_eval"], "--plot", tmp_path / "p.png", "--plot-only"], capsys)
    assert code == 0, err
    assert [r.path for r in drawn] == [logs["seed1"], train] and drawn[1].eval_log.path == logs["ablation_eval"]
    assert drawn[1].finals["final_ngram_ttt"]["val_bpb"] == grab(logs["ablation_eval"].read_text(), r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+)")


SPLIT_REFUSALS = {
    "no_training": (lambda L, d: [L["seed1"], L["ablation_eval"]], "matches no training log given"),
    "scored_twice": (lambda L, d: [L["ablation"], L["ablation_eval"]], "scored twice"),
    "other_seed": (lambda L, d: [killed_in_eval(L["ablation"], d / "t.txt"), L["eval_only"]], "with other settings: SEED=1 vs 5"),
    "other_eval_setting": (lambda L, d: [killed_in_eval(L["ablation"], d / "t.txt"), edited(
        L["ablation_eval"], d / "e.txt", sub_line(r"^hyperparameter NGRAM_ORDER=\d+$", "hyperparameter NGRAM_ORDER=3"))],
        "with other settings: NGRAM_ORDER="),
    "eval_unfinished": (lambda L, d: [killed_in_eval(L["ablation"], d / "t.txt"), edited(
        L["ablation_eval"], d / "e.txt", lambda t: t[:t.index("final_ngram_ttt ")])], "EVAL_ONLY run that did not finish"),
    "eval_two_runs": (lambda L, d: [killed_in_eval(L["ablation"], d / "t.txt"), edited(
        L["ablation_eval"], d / "e.txt", lambda t: t + t)], "holds 2 runs"),
    "other_artifact": (lambda L, d: [killed_in_eval(L["seed1"], d / "t.txt"), L["ablation_eval"]], "matches no training log given"),
}


@pytest.mark.parametrize("case", sorted(SPLIT_REFUSALS))
def test_split_run_refusals(case, logs, tmp_path, capsys):
    make_logs, expected = SPLIT_REFUSALS[case]
    code, _, stderr = make([*make_logs(logs, tmp_path), "-o", tmp_path / "s.json"], capsys)
    assert code == 2 and expected in stderr, stderr


def test_ablation_as_training_plus_eval_only(logs, three, tmp_path, capsys):
    table = tmp_path / "t.md"
    train = killed_in_eval(logs["ablation"], tmp_path / "train.txt")
    code, _, err = make([*three, "-o", tmp_path / "s.json", "--table", table, "--ablation", train,
                         "--ablation", logs["ablation_eval"]], capsys)
    assert code == 0, err
    row = next(line for line in table.read_text().splitlines() if line.startswith("| MATRIX_LR=0.05 |"))
    final = grab(logs["ablation_eval"].read_text(), r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+)")
    assert row.split(" | ")[1] == f"{final:.5f}" and f"`{train}` + `{logs['ablation_eval']}`" in row


# ----------------------------------------------------------------------------- t distribution and significance

@pytest.mark.parametrize("t, df, p", [(2.0, 5, 0.05097), (3.0, 10, 0.00667), (1.0, 1, 0.25), (0.0, 7, 0.5),
                                      (2.228, 10, 0.025), (1.645, 1e6, 0.05)])
def test_t_sf_known_values(t, df, p):
    assert ms.t_sf(t, df) == pytest.approx(p, abs=5e-5)
    assert ms.t_sf(-t, df) == pytest.approx(1 - p, abs=5e-5)
    assert ms.t_cdf(t, df) == pytest.approx(1 - p, abs=5e-5)


@pytest.mark.parametrize("t", [-40.0, -3.3, -1.0, -0.2, 0.1, 0.7, 1.5, 4.0, 25.0, 300.0])
def test_t_sf_closed_forms(t):
    assert ms.t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-10, abs=1e-15)  # Cauchy
    assert ms.t_sf(t, 2) == pytest.approx(0.5 * (1 - t / math.sqrt(t * t + 2)), rel=1e-10, abs=1e-15)
    if abs(t) < 8:
        assert ms.t_sf(t, 1e9) == pytest.approx(0.5 * math.erfc(t / math.sqrt(2)), rel=1e-6)  # normal limit


def test_regularized_incomplete_beta():
    for x in (0.0, 0.1, 0.5, 0.93, 1.0):
        assert ms.regularized_incomplete_beta(1, 1, x) == pytest.approx(x)
        assert ms.regularized_incomplete_beta(2, 1, x) == pytest.approx(x * x)
    for a, b, x in ((0.5, 0.5, 0.3), (3.2, 7.5, 0.4), (50, 2, 0.97)):
        assert ms.regularized_incomplete_beta(a, b, x) + ms.regularized_incomplete_beta(b, a, 1 - x) == pytest.approx(1)
    assert ms.regularized_incomplete_beta(0.5, 0.5, 0.25) == pytest.approx(2 / math.pi * math.asin(0.5))


def test_significance_in_json(submission, three, tmp_path, capsys):
    bpb = [s["val_bpb"] for s in submission["seeds"]]
    mean, std = statistics.mean(bpb), statistics.stdev(bpb)
    baseline_mean, baseline_std, baseline_n, delta = mean + 0.02, 0.002, 4, 0.005
    out = tmp_path / "sig.json"
    code, stdout, err = make([*three, "-o", out, "--baseline-mean", baseline_mean, "--baseline-std", baseline_std,
                              "--baseline-n", baseline_n], capsys)
    assert code == 0, err
    sig = json.loads(out.read_text())["significance"]
    a, b = std ** 2 / 3, baseline_std ** 2 / baseline_n
    t = (baseline_mean - delta - mean) / math.sqrt(a + b)
    df = (a + b) ** 2 / (a * a / 2 + b * b / (baseline_n - 1))
    assert sig["test"] == "one-sided Welch" and sig["delta"] == delta and sig["baseline_n_assumed"] is False
    assert sig["improvement_bpb"] == pytest.approx(0.02, abs=1e-12)
    assert sig["t"] == pytest.approx(t) and sig["df"] == pytest.approx(df)
    assert sig["p_value"] == pytest.approx(ms.t_sf(t, df)) and f"p={sig['p_value']:.3g}" in stdout
    ratio = submission["seeds"][0]["val_bpb"] / submission["seeds"][0]["val_loss"]  # tokens / (bytes ln 2)
    assert sig["bpb_per_nat"] == pytest.approx(ratio, rel=1e-6) and sig["delta_nats"] == pytest.approx(delta / ratio, rel=1e-6)
    # a baseline no better than ours: no evidence at all
    code, _, err = make([*three, "-o", out, "--baseline-mean", mean, "--baseline-std", baseline_std], capsys)
    assert code == 0, err
    sig = json.loads(out.read_text())["significance"]
    assert sig["p_value"] > 0.5 and sig["baseline_n"] == 3 and sig["baseline_n_assumed"] is True


def baseline_pair(logs, tmp_path) -> list[Path]:
    """Two seeds of another configuration: the ablation's log (MATRIX_LR=0.05, SEED=1) and a copy of it
    as SEED=2 with a full-stack score 0.01 higher."""
    text = logs["ablation"].read_text()
    final = grab(text, r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+)")
    second = edited(logs["ablation"], tmp_path / "baseline_seed2.txt", lambda t: sub_line(
        r"^hyperparameter SEED=1$", "hyperparameter SEED=2")(sub_line(
        r"^final_ngram_ttt val_loss:(\S+) val_bpb:\S+", rf"final_ngram_ttt val_loss:\1 val_bpb:{final + 0.01:.8f}")(t)))
    return [logs["ablation"], second]


def test_baseline_seeds_from_their_logs(logs, three, tmp_path, capsys):
    """--baseline-log: the test's X, S and N are the baseline logs' own; the json names them and what
    differs from ours; --table adds the baseline's row and the test's line."""
    baseline, out, table = baseline_pair(logs, tmp_path), tmp_path / "s.json", tmp_path / "t.md"
    argv = [*three, "-o", out, "--table", table]
    for path in baseline:
        argv += ["--baseline-log", path]
    code, stdout, err = make(argv, capsys)
    assert code == 0, err
    sig = json.loads(out.read_text())["significance"]
    base = [grab(p.read_text(), r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+)") for p in baseline]
    assert (sig["baseline_mean"], sig["baseline_std"], sig["baseline_n"]) == (statistics.fmean(base), statistics.stdev(base), 2)
    assert sig["baseline_changes"] == {"MATRIX_LR": "0.05"} and "baseline_n_assumed" not in sig
    assert [(s["seed"], s["log"], s["val_bpb"]) for s in sig["baseline_seeds"]] == [(1, str(baseline[0]), base[0]), (2, str(baseline[1]), base[1])]
    ours = [grab(p.read_text(), r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+)") for p in three]
    assert sig["improvement_bpb"] == pytest.approx(statistics.fmean(base) - statistics.fmean(ours)) and f"p={sig['p_value']:.3g}" in stdout
    lines = table.read_text().splitlines()
    row = next(line for line in lines if line.startswith("| baseline: `MATRIX_LR=0.05`; seeds 1, 2 |")).split(" | ")
    assert row[1] == f"{statistics.fmean(base):.5f} ± {statistics.stdev(base):.5f}" and f"`{baseline[1]}`" in row[-1]
    assert f"Mean minus the baseline's: {statistics.fmean(ours) - statistics.fmean(base):+.5f} BPB" in table.read_text()
    assert f"p = {sig['p_value']:.3g}." in table.read_text()
    # another preset: the row names it and counts the other settings, the json lists them all
    recipe = [edited(p, tmp_path / f"r{i}.txt", sub_line(r"^hyperparameter RECIPE=\w+$", "hyperparameter RECIPE=other"))
              for i, p in enumerate(baseline)]
    code, _, err = make([*three, "-o", out, "--table", table, "--baseline-log", recipe[0], "--baseline-log", recipe[1]], capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["significance"]["baseline_changes"] == {"RECIPE": "other", "MATRIX_LR": "0.05"}
    assert "| baseline: `RECIPE=other` and 1 more setting (`baseline_changes` in the json); seeds 1, 2 |" in table.read_text()


@pytest.mark.parametrize("case", ["one_seed", "ours_too", "other_val"])
def test_baseline_log_refusals(case, logs, three, tmp_path, capsys):
    baseline = baseline_pair(logs, tmp_path)
    baseline, expected = dict(
        one_seed=(baseline[:1], "at least 2 seeds"),
        ours_too=([three[2], edited(three[2], tmp_path / "s4.txt", sub_line(r"^hyperparameter SEED=3$", "hyperparameter SEED=4"))],
                  "both as ours and as the baseline"),
        other_val=([edited(p, tmp_path / f"v{i}.txt", sub_line(r"^val_tokens:(\d+)", "val_tokens:99")) for i, p in enumerate(baseline)],
                   "not the same val set"))[case]
    argv = [*three, "-o", tmp_path / "s.json"]
    for path in baseline:
        argv += ["--baseline-log", path]
    code, _, err = make(argv, capsys)
    assert code == 2 and expected in err, err
    with pytest.raises(SystemExit) as e:  # numbers and logs for one baseline: one or the other
        ms.main([str(p) for p in three] + ["--baseline-log", str(baseline[0]), "--baseline-mean", "1", "--baseline-std", "0.1"])
    assert e.value.code == 2


def test_significance_needs_two_seeds(logs, tmp_path, capsys):
    code, _, err = make([logs["seed1"], "-o", tmp_path / "x.json", "--baseline-mean", 1.0, "--baseline-std", 0.01], capsys)
    assert code == 2 and "at least 2 seeds" in err


# ----------------------------------------------------------------------------- plot

def test_plot_png(logs, three, tmp_path, capsys):
    try:
        import matplotlib  # noqa: F401  (optional dependency of the tool)
    except ImportError:
        pytest.skip("matplotlib is not installed (optional; only --plot needs it)")
    png, out = tmp_path / "seeds.png", tmp_path / "submission.json"
    code, _, err = make([*three, "-o", out, "--plot", png], capsys)
    assert code == 0, err
    assert png.read_bytes()[:8] == PNG_MAGIC and out.is_file()
    # ablations, an EVAL_ONLY log and an unfinished one: plotted, no checks, no json
    cut = edited(logs["seed2"], tmp_path / "cut.txt", lambda t: t[:t.index("final_int6_roundtrip ")])
    png2, out2 = tmp_path / "ablation.png", tmp_path / "not_written.json"
    code, stdout, err = make([logs["seed1"], logs["ablation"], logs["eval_only"], cut, "--plot", png2, "--plot-only",
                              "-o", out2], capsys)
    assert code == 0, err
    assert png2.read_bytes()[:8] == PNG_MAGIC and not out2.exists() and f"wrote {png2}" in stdout


def test_json_without_matplotlib(three, tmp_path, capsys, monkeypatch):
    """matplotlib is optional: without it the json is written, and --plot is a clean refusal."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    out = tmp_path / "submission.json"
    assert make([*three, "-o", out], capsys)[0] == 0 and out.is_file()
    out.unlink()
    code, _, err = make([*three, "-o", out, "--plot", tmp_path / "p.png"], capsys)
    assert code == 2 and "needs matplotlib" in err and not out.exists()


@pytest.mark.skipif(not FINISHED_DEV_LOGS, reason="no finished H100 logs in logs/dev/")
def test_finished_gpu_logs_become_a_submission_with_their_own_numbers(tmp_path, capsys):
    """Real H100 logs that ran to the end: each alone is accepted, and every number comes from it."""
    for path in FINISHED_DEV_LOGS:
        code, _, err = make([path, "-o", tmp_path / "one.json"], capsys)
        assert code == 0, err
        text = path.read_text()
        seed = json.loads((tmp_path / "one.json").read_text())["seeds"][0]
        assert seed["val_bpb"] == grab(text, r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+)")
        assert seed["final_int6_sliding_window_val_bpb"] == grab(text, r"^final_int6_sliding_window val_loss:\S+ val_bpb:(\S+)")
        assert seed["bytes_total"] == grab(text, r"^Total submission size int6\+lzma: (\d+)", cast=int)
        assert seed["step_avg_ms"] == grab(text, r"^step:\d+/\d+ .*step_avg:([\d.]+)ms")
        assert seed["gpu"] == "NVIDIA H100 80GB HBM3" and seed["gpus"] == 1
    # they share SEED=42: not distinct trainings
    code, _, err = make([*FINISHED_DEV_LOGS, "-o", tmp_path / "both.json"], capsys)
    assert code == 2 and "not distinct" in err


def test_results_table_rows_come_from_the_logs(logs, three, tmp_path, capsys):
    table = tmp_path / "results.md"
    code, out, err = make([*three, "-o", tmp_path / "s.json", "--table", table,
                           "--ablation", logs["ablation"], "--ablation", logs["eval_only"]], capsys)
    assert code == 0, err
    assert f"table {table}" in out
    lines = table.read_text().splitlines()
    seed_rows = [line.split(" | ") for line in lines if re.match(r"^\| \d+ \|", line)]
    assert [r[0] for r in seed_rows] == ["| 1", "| 2", "| 3"]
    finals = []
    for row, path in zip(seed_rows, three):
        text = path.read_text()
        final = grab(text, r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+)")
        sliding = grab(text, r"^final_int6_sliding_window val_loss:\S+ val_bpb:(\S+)")
        ttt = grab(text, r"^ttt_only val_loss:\S+ val_bpb:(\S+)")
        finals.append(final)
        assert row[1:4] == [f"{final:.5f}", f"{sliding:.5f}", f"{ttt:.5f}"]
        assert row[4:6] == [f"{sliding - ttt:+.5f}", f"{ttt - final:+.5f}"]
        total = grab(text, r"^Total submission size int6\+lzma: (\d+)", cast=int)
        assert row[6] == f"{total:,}"
        assert row[-1] == f"`{path}` |"
    mean_row = next(line for line in lines if line.startswith("| mean ± std |"))
    assert f"{statistics.fmean(finals):.5f} ± {statistics.stdev(finals):.5f}" in mean_row
    ablation = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines if line.startswith("| ") and " | `" in line
                and not re.match(r"^\| \d+ \|", line)}
    base = finals[0]
    seed1 = three[0].read_text()
    row = ablation["NGRAM_ENABLED=0 (same run: `ttt_only`)"]
    ttt1 = grab(seed1, r"^ttt_only val_loss:\S+ val_bpb:(\S+)")
    assert row[1] == f"{ttt1:.5f}" and row[3] == f"`{three[0]}` |"
    row = ablation["TTT_ENABLED=0 (same run: `ngram_only`)"]
    ngram1 = grab(seed1, r"^ngram_only val_loss:\S+ val_bpb:(\S+)")
    assert row[1:3] == [f"{ngram1:.5f}", f"{ngram1 - base:+.5f}"]
    row = ablation["MATRIX_LR=0.05"]  # the same SEED as seed1: only the LR differs
    lr_final = grab(logs["ablation"].read_text(), r"^final_ngram_ttt val_loss:\S+ val_bpb:(\S+)")
    assert row[1:3] == [f"{lr_final:.5f}", f"{lr_final - base:+.5f}"]
    assert "SEED=5 (EVAL_ONLY)" in ablation  # the eval-only run against seed 1: its training settings are not its own


def test_results_table_refuses_an_unfinished_ablation_and_needs_table(logs, three, tmp_path, capsys):
    cut = edited(logs["ablation"], tmp_path / "cut.txt", lambda t: t.split("final_ngram_ttt")[0])
    code, _, err = make([*three, "-o", tmp_path / "s.json", "--table", tmp_path / "t.md", "--ablation", cut], capsys)
    assert code == 2 and "did not finish" in err and not (tmp_path / "t.md").exists()
    with pytest.raises(SystemExit) as e:
        ms.main([str(p) for p in three] + ["--ablation", str(logs["ablation"])])
    assert e.value.code == 2
