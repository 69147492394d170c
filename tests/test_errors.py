"""Bad inputs: each gives one `ERROR: ...` line naming the fix (log + stderr) and exit code 2, or a
`WARNING: ...` line where the run can go on."""
import math
import re
import subprocess
import sys

import numpy as np
import pytest

import train_gpt
from conftest import OFFICIAL_TOKENIZER, REPO_ROOT, error_lines, log_line, run_trainer, tiny_args, train_losses, write_shard


def assert_user_error(result, capsys, *fragments):
    """Exit 2, exactly one ERROR line in the log, the same line on stderr, containing `fragments`."""
    assert result.returncode == 2, result
    errors = error_lines(result.log)
    assert len(errors) == 1, result.log[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert errors[0] in capsys.readouterr().err.splitlines()
    assert "Traceback" not in result.log
    return errors[0]


def test_no_shards_at_data_path(run_main, capsys, tiny_data_env, tmp_path):
    empty = tmp_path / "nowhere"
    empty.mkdir()
    result = run_main(dict(tiny_data_env, DATA_PATH=str(empty)))
    assert_user_error(result, capsys, f"no fineweb_val_*.bin shards in DATA_PATH={empty}",
                      "python data/cached_challenge_fineweb.py --variant sp1024", "set DATA_PATH")


def test_no_train_shards(run_main, capsys, tiny_data_env, tiny_data, tmp_path):
    only_val = tmp_path / "only_val"
    only_val.mkdir()
    (only_val / "fineweb_val_000000.bin").write_bytes((tiny_data / "fineweb_val_000000.bin").read_bytes())
    result = run_main(dict(tiny_data_env, DATA_PATH=str(only_val)))
    assert_user_error(result, capsys, "no fineweb_train_*.bin shards", "cached_challenge_fineweb.py")


def test_tokenizer_missing(run_main, capsys, tiny_data_env, tmp_path):
    missing = tmp_path / "no_such.model"
    result = run_main(dict(tiny_data_env, TOKENIZER_PATH=str(missing)))
    assert_user_error(result, capsys, f"tokenizer not found at TOKENIZER_PATH={missing}", "cached_challenge_fineweb.py")


def test_tokenizer_vocab_differs_from_vocab_size(run_main, capsys, tiny_data_env):
    env = dict(tiny_data_env)
    del env["VOCAB_SIZE"]  # default 1024, but the tokenizer has 64 pieces
    result = run_main(env)
    assert_user_error(result, capsys, "tokenizer has 64 pieces but VOCAB_SIZE=1024", "set VOCAB_SIZE=64")
    assert "WARNING: tokenizer" in result.log and "not the official sp1024 model" in result.log


def test_unofficial_tokenizer_is_only_a_warning(run_main, capsys, e2e_run, tmp_path):
    """A tokenizer whose bytes differ from the official one (here: the official model plus an unknown
    protobuf field, same pieces) is reported, and the run still scores the artifact as before."""
    assert e2e_run.result.returncode == 0, e2e_run.result.output[-3000:]
    altered = tmp_path / "altered.model"
    altered.write_bytes(OFFICIAL_TOKENIZER.read_bytes() + b"\xa0\x06\x01")  # field 100, varint 1
    env = dict(e2e_run.env, TOKENIZER_PATH=str(altered), EVAL_ONLY="1", ARTIFACT_PATH=str(e2e_run.artifact))
    result = run_main(env)
    assert result.returncode == 0, result.log[-3000:]
    warnings = [line for line in result.log.splitlines() if line.startswith("WARNING: tokenizer")]
    assert warnings == [f"WARNING: tokenizer {altered} is not the official sp1024 model (sha256 differs); "
                        "val_bpb is not comparable to the leaderboard"]
    assert error_lines(result.log) == []
    assert log_line(result.log, "final_int6_roundtrip") == log_line(e2e_run.result.log, "final_int6_roundtrip")


@pytest.mark.parametrize("split", ["val", "train"])
@pytest.mark.parametrize("damage", ["bad_magic", "bad_version", "too_short"])
def test_corrupt_shard_header(run_main, capsys, tiny_data_env, tiny_data, tmp_path, split, damage):
    data = tmp_path / "data"
    for s in ("train", "val"):
        write_shard(data / f"fineweb_{s}_000000.bin", np.arange(5000) % 64)
    bad = data / f"fineweb_{split}_000001.bin"
    if damage == "too_short":
        bad.write_bytes(b"\x00" * 100)
    else:
        write_shard(bad, np.arange(100), **({"magic": 12345} if damage == "bad_magic" else {"version": 2}))
    result = run_main(dict(tiny_data_env, DATA_PATH=str(data)))
    assert_user_error(result, capsys, f"{bad} is not a challenge shard (bad header)", train_gpt.REGENERATE_SHARDS)


@pytest.mark.parametrize("split", ["val", "train"])
def test_truncated_shard_names_the_file(run_main, capsys, tiny_data_env, tmp_path, split):
    data = tmp_path / "data"
    for s in ("train", "val"):
        write_shard(data / f"fineweb_{s}_000000.bin", np.arange(5000) % 64)
    bad = write_shard(data / f"fineweb_{split}_000001.bin", np.arange(500) % 64, count=1000)
    result = run_main(dict(tiny_data_env, DATA_PATH=str(data)))
    assert_user_error(result, capsys, f"{bad} is truncated or corrupt", "header says 1000 tokens (3024 bytes)",
                      "file has 2024 bytes", "python data/cached_challenge_fineweb.py --variant sp1024", "python data/docs_to_shards.py")


def test_batch_tokens_not_divisible(run_main, capsys, tiny_data_env):
    result = run_main(dict(tiny_data_env, TRAIN_BATCH_TOKENS="4000"))
    assert_user_error(result, capsys, "TRAIN_BATCH_TOKENS=4000 must be divisible by world_size*GRAD_ACCUM_STEPS*TRAIN_SEQ_LEN",
                      "= 1*8*64")


@pytest.mark.parametrize("setting, step", [("TIED_EMBED_INIT_STD=1e39", 1), ("MATRIX_LR=1e30", 2)])
def test_non_finite_loss_stops_with_step(run_main, capsys, tiny_data_env, setting, step):
    name, value = setting.split("=")
    result = run_main(dict(tiny_data_env, **{name: value}))
    assert_user_error(result, capsys, f"non-finite train_loss at step {step}", "log kept", "lower MATRIX_LR")
    assert result.log_path.is_file() and f"hyperparameter {name}=" in result.log  # the log is kept
    assert sorted(train_losses(result.log)) == list(range(1, step))  # steps before the bad one were logged
    assert all(math.isfinite(v) for v in train_losses(result.log).values())
    assert not list(result.log_path.parent.parent.glob("*.ptz"))


def test_artifact_over_size_limit(run_main, capsys, monkeypatch, tiny_data_env, tmp_path):
    monkeypatch.setattr(train_gpt, "SIZE_LIMIT_BYTES", 1000)
    result = run_main(tiny_data_env)
    line = assert_user_error(result, capsys, "ARTIFACT OVER LIMIT", "> 1000", "everything was saved")
    total = int(log_line(result.log, "total")["bytes"])
    assert f"ARTIFACT OVER LIMIT: {total} bytes > 1000" in line
    artifact = tmp_path / "final_model_inproc.int6.ptz"
    assert artifact.is_file() and (tmp_path / "final_model_inproc.pt").is_file()
    assert total == artifact.stat().st_size + train_gpt.code_size().counted_bytes
    assert log_line(result.log, "final_int6_roundtrip") is not None  # scoring still happened


def test_eval_only_with_missing_artifact(run_main, capsys, tiny_data_env, tmp_path):
    result = run_main(dict(tiny_data_env, EVAL_ONLY="1", ARTIFACT_PATH=str(tmp_path / "nope.ptz")))
    assert_user_error(result, capsys, f"EVAL_ONLY=1: no artifact at {tmp_path / 'nope.ptz'}", "set ARTIFACT_PATH")
    assert "val_tokens" not in result.log  # found before any work


def test_a_run_never_overwrites_an_earlier_artifact(run_main, capsys, tiny_data_env, tmp_path):
    """The default artifact and raw-weights names carry the RUN_ID; a run that would replace an
    existing one stops before training (the file is untouched) unless OVERWRITE=1."""
    earlier = tmp_path / "final_model_again.int6.ptz"
    earlier.write_bytes(b"an earlier run's artifact")
    result = run_main(dict(tiny_data_env, RUN_ID="again"))
    assert_user_error(result, capsys, f"{earlier.name} already exist", "use another RUN_ID or ARTIFACT_PATH, or OVERWRITE=1")
    assert earlier.read_bytes() == b"an earlier run's artifact" and "model_params" not in result.log
    explicit = tmp_path / "mine.pt"
    explicit.write_bytes(b"raw weights")  # the raw weights beside ARTIFACT_PATH=mine.ptz
    result = run_main(dict(tiny_data_env, RUN_ID="other", ARTIFACT_PATH=str(tmp_path / "mine.ptz")))
    assert_user_error(result, capsys, f"{explicit} already exist")
    result = run_main(dict(tiny_data_env, RUN_ID="again", OVERWRITE="1", ITERATIONS="1", TTT_ENABLED="0", NGRAM_ENABLED="0"))
    assert result.returncode == 0, result.log[-2000:]
    assert earlier.read_bytes() != b"an earlier run's artifact"


# ----------------------------------------------------------------------------- settings

BAD_SETTINGS = [
    (dict(VE_LAYERS="1,5"), "VE_LAYERS=1,5 must be layer indices in 0..1 (NUM_LAYERS-1)"),
    (dict(XSA_LAST_N="3"), "XSA_LAST_N=3 must be in 0..NUM_LAYERS=2"),
    (dict(MODEL_DIM="66"), "MODEL_DIM=66 must be divisible by NUM_HEADS=4"),
    (dict(NUM_KV_HEADS="3"), "NUM_HEADS=4 must be divisible by NUM_KV_HEADS=3"),
    (dict(SEED="abc"), "SEED='abc' is not a valid int (default 42)"),
    (dict(SEED="1.5"), "SEED='1.5' is not a valid int"),
    (dict(LEAKY_RELU="yes"), "LEAKY_RELU='yes' is not a valid bool"),
    (dict(MATRIX_LR="fast"), "MATRIX_LR='fast' is not a valid float"),
    (dict(EVAL_STRIDE="128"), "EVAL_STRIDE=128 must be in 1..EVAL_SEQ_LEN=64"),
    (dict(COMPLEMENT_ALPHA="2"), "COMPLEMENT_ALPHA must be in [0, 1]"),
    (dict(ITERATIONS="0"), "ITERATIONS must be > 0"),
    (dict(RECIPE="newest"), "RECIPE='newest' must be one of pr803, modern"),
    (dict(LOOP_LAYERS="0,2"), "LOOP_LAYERS=0,2 must be consecutive layer indices in 0..1 (NUM_LAYERS-1)"),
    (dict(LOOP_START_FRAC="1"), "LOOP_START_FRAC must be in [0, 1): evaluation always runs the loop"),
    (dict(PARALLEL_RESIDUAL_FROM="2"), "PARALLEL_RESIDUAL_FROM must be -1 (off) or a layer index in 0..1"),
    (dict(MUON_NS_COEFFS="cubic"), "MUON_NS_COEFFS=cubic must be one of quintic, polar"),
    (dict(TTT_MODE="doc"), "TTT_MODE=doc must be chunk or lora"),
    (dict(TTT_LORA_TARGETS="q,ffn"), "TTT_LORA_TARGETS=q,ffn must name some of q,k,v,o,mlp,head"),
    (dict(TTT_MODE="lora", TTT_LORA_CHUNK="65"), "TTT_LORA_CHUNK at most EVAL_SEQ_LEN=64"),
    (dict(TTT_PHASE_DOCS="-1"), "TTT_PHASE_DOCS must be a document count (0: no phase)"),
    (dict(NGRAM_AUDIT_POSITIONS="0"), "NGRAM_AUDIT_POSITIONS must be > 0"),
    (dict(TTT_GRAD_CLIP="0"), "TTT_GRAD_CLIP must be > 0"),
    (dict(VAL_MAX_TOKENS="-5"), "VAL_MAX_TOKENS must be >= 0"),
    (dict(TTT_MODE="chunk", TTT_CHUNK_TOKENS="100"), "TTT_CHUNK_TOKENS=100 must be a multiple of EVAL_SEQ_LEN=64"),
]


def test_the_chunk_size_need_not_fit_the_window_where_chunk_ttt_does_not_run():
    """Only TTT_MODE=chunk trains on whole EVAL_SEQ_LEN sequences of a chunk; the mixer's chunks may be any size."""
    assert tiny_args(TTT_MODE="lora", TTT_CHUNK_TOKENS=100).ttt_chunk_tokens == 100
    assert tiny_args(TTT_MODE="chunk", TTT_ENABLED=0, TTT_CHUNK_TOKENS=100).ttt_chunk_tokens == 100


@pytest.mark.parametrize("overrides, message", BAD_SETTINGS, ids=[next(iter(o)) + "=" + next(iter(o.values())) for o, _ in BAD_SETTINGS])
def test_inconsistent_settings_are_rejected_at_start(run_main, tiny_data_env, overrides, message):
    result = run_main(dict(tiny_data_env, **overrides))
    assert result.returncode == 2, result.log
    errors = [line for line in result.log.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and message in errors[0], result.log
    assert "hyperparameter" not in result.log and "model_params" not in result.log  # rejected before anything ran


def test_every_conflicting_setting_is_named_in_one_line(run_main, capsys, tiny_data_env):
    """A small model tried by hand (the record's other limits left as they are) fails once, naming
    every limit it breaks and a configuration that works."""
    env = {k: v for k, v in tiny_data_env.items() if k not in ("VE_LAYERS", "XSA_LAST_N")}
    result = run_main(dict(env, NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="8", NUM_KV_HEADS="4"))
    line = assert_user_error(result, capsys, "3 setting(s) conflict: ", "ROPE_DIMS=16 must be even and in 2..head_dim=8",
                             "XSA_LAST_N=4 must be in 0..NUM_LAYERS=2", "VE_LAYERS=9,10 must be layer indices in 0..1",
                             f"A tiny model that works: {train_gpt.TINY_EXAMPLE}")
    assert line.count(" must ") == 3


def test_a_small_model_under_the_default_recipe_is_told_which_layer_settings_to_change(run_main, capsys, tiny_data_env):
    """RECIPE=modern (the default) names layers 4-5 and 7: a 2-layer model must move them too."""
    env = {k: v for k, v in tiny_data_env.items() if k != "RECIPE"}
    result = run_main(env)
    assert_user_error(result, capsys, "LOOP_LAYERS=4,5 must be consecutive layer indices in 0..1",
                      "PARALLEL_RESIDUAL_FROM must be -1 (off) or a layer index in 0..1")


def test_the_tiny_example_in_the_conflict_message_works():
    """The configuration the conflict message offers passes every check, with the other defaults."""
    example = dict(item.split("=") for item in train_gpt.TINY_EXAMPLE.split(" (")[0].split())
    args = train_gpt.Hyperparameters(environ=example)
    assert (args.num_layers, args.model_dim) == (int(example["NUM_LAYERS"]), int(example["MODEL_DIM"]))


CRASHING_SETTINGS = [
    pytest.param(dict(VE_LAYERS="1,x"), "VE_LAYERS", id="VE_LAYERS=1,x"),
    *[pytest.param(overrides, name, id=f"{name}=0")
      for name, overrides in (("NUM_KV_HEADS", dict(NUM_KV_HEADS="0")), ("NUM_HEADS", dict(NUM_HEADS="0")),
                              # EVAL_SEQ_LEN=0 (its default) means "= TRAIN_SEQ_LEN"; modulo by it must not crash
                              ("TRAIN_SEQ_LEN", dict(TRAIN_SEQ_LEN="0", EVAL_SEQ_LEN="0")))],
]


@pytest.mark.parametrize("overrides, setting", CRASHING_SETTINGS)
def test_malformed_settings_are_a_clear_error(run_main, tiny_data_env, overrides, setting):
    result = run_main(dict(tiny_data_env, **overrides))
    assert result.returncode == 2
    assert any(line.startswith("ERROR: ") and setting in line for line in result.log.splitlines()), result.log


def test_empty_train_shards_are_an_error_not_a_hang(run_main, tiny_data_env, tiny_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "fineweb_val_000000.bin").write_bytes((tiny_data / "fineweb_val_000000.bin").read_bytes())
    write_shard(data / "fineweb_train_000000.bin", np.zeros(0))
    result = run_main(dict(tiny_data_env, DATA_PATH=str(data)))
    assert result.returncode == 2 and error_lines(result.log)


def test_settings_error_exit_code_is_2(tiny_data_env, tmp_path):
    result = run_trainer(dict(tiny_data_env, SEED="abc"), tmp_path)
    assert "ERROR: SEED='abc' is not a valid int (default 42)" in result.output.splitlines()
    assert result.returncode == 2


def test_under_torchrun_the_error_comes_once(tiny_data_env, tmp_path):
    """Two ranks hit the same bad setting: rank 0 prints the one ERROR line, each rank exits 2, and
    torchrun reports the failure (its own summary names exit code 2) and exits 1, as the README says."""
    result = run_trainer(dict(tiny_data_env, SEED="abc"), tmp_path, nproc=2)
    assert error_lines(result.output) == ["ERROR: SEED='abc' is not a valid int (default 42)"]
    assert result.returncode == 1 and "exitcode  : 2" in result.output


def test_unknown_setting_warning():
    args = train_gpt.Hyperparameters(environ={"COMPLEMENT_ALHPA": "0.1", "PATH": "/bin", "HOME": "/root",
                                              "TRAIN_STEPS": "5", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2"})
    assert args.complement_alpha == 0.5  # the typo is ignored
    assert args.warnings[0] == "unknown setting COMPLEMENT_ALHPA ignored (did you mean COMPLEMENT_ALPHA?)"
    assert len(args.warnings) == 2 and args.warnings[1].startswith("unknown setting TRAIN_STEPS ignored")
    assert train_gpt.Hyperparameters(environ={"PATH": "/bin", "LANG": "C"}).warnings == []


def test_settings_of_the_reference_and_other_programs():
    """The reference's settings we lack are named as such; other programs' variables that share a
    common prefix with ours (MAX_JOBS) pass in silence unless they are close to one of ours."""
    env = {"USE_HEDGE_MIXER": "1", "GATED_ATTENTION": "0", "MAX_JOBS": "4", "RUN_ALL": "1", "MAX_WALLCLOK_SECONDS": "60"}
    assert train_gpt.Hyperparameters(environ=env).warnings == [
        "GATED_ATTENTION (a setting of the reference script that this program does not have) ignored",
        "unknown setting MAX_WALLCLOK_SECONDS ignored (did you mean MAX_WALLCLOCK_SECONDS?)",
        "USE_HEDGE_MIXER (a setting of the reference script that this program does not have) ignored"]


def test_unknown_setting_is_logged_as_warning(run_main, tiny_data_env, tmp_path):
    # the run stops early (EVAL_ONLY without an artifact); the warning comes before that
    result = run_main(dict(tiny_data_env, COMPLEMENT_ALHPA="0.1", EVAL_ONLY="1", ARTIFACT_PATH=str(tmp_path / "x.ptz")))
    assert "WARNING: unknown setting COMPLEMENT_ALHPA ignored (did you mean COMPLEMENT_ALPHA?)" in result.log.splitlines()
    assert "hyperparameter COMPLEMENT_ALPHA=0.5" in result.log.splitlines()
    assert result.returncode == 2


def test_download_command_named_in_errors_exists(tmp_path):
    """The errors for missing data/tokenizer tell users to run a command: it must exist in the repo."""
    with pytest.raises(train_gpt.UserError) as missing:
        train_gpt.find_shards(str(tmp_path), "val")
    command = re.search(r"`python (\S+) --variant (\S+)`", str(missing.value))
    assert command, str(missing.value)
    script, variant = REPO_ROOT / command[1], command[2]
    assert script.is_file(), f"{script} is named in the error message but does not exist"
    usage = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--variant" in usage.stdout and variant in usage.stdout


def test_the_reference_mixer_settings_are_named_as_not_ours():
    """The reference's run command may set its mixer's knobs; ours has none of them: say so."""
    env = {"NGRAM_MIN_COUNT": "2", "ALPHA_BASE": "0.2", "ALPHA_RANGE": "0.55", "ALPHA_CENTER": "3", "ALPHA_OTHER": "1"}
    args = train_gpt.Hyperparameters(environ=env)
    assert args.warnings == [f"{name} (the reference mixer's) ignored: ours smooths over all context lengths and learns alpha online"
                             for name in ("ALPHA_BASE", "ALPHA_CENTER", "ALPHA_RANGE", "NGRAM_MIN_COUNT")]  # ALPHA_OTHER: not ours, no prefix of ours
