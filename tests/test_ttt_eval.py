"""The legal eval stack: score-first order of the n-gram cache and test-time training inside
evaluate(), causality and rank-count invariance of whole EVAL_ONLY runs, the per-token NLL dump,
the normalization audit and the NGRAM_ENABLED / TTT_ENABLED switches, and which weights TTT trains."""
import dataclasses
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

import train_gpt
from test_ngram_mixer import BruteNgrams  # noqa: E402
from conftest import (LN2, REPO_ROOT, TINY_ENV, _clean_environ, error_lines, cpu_run, gains, log_line, randomize_, read_shard_tokens,
                      run_trainer, tiny_args, val_set, write_shard)

SEQ = 32  # EVAL_SEQ_LEN of the in-process tests


pytestmark = pytest.mark.usefixtures("one_thread")  # the subprocess runs below use OMP_NUM_THREADS=1 as well


def tiny_eval_setup(tiny_tokenizer, tiny_data, n_targets: int, **overrides):
    """A randomized tiny model (vocab 64), the first n_targets+1 val tokens and the byte tables."""
    sp = spm.SentencePieceProcessor(model_file=str(tiny_tokenizer))
    overrides.setdefault("EVAL_STRIDE", SEQ)
    args = tiny_args(VOCAB_SIZE=64, EVAL_SEQ_LEN=SEQ, **{k: str(v) for k, v in overrides.items()})
    torch.manual_seed(0)
    model = randomize_(train_gpt.GPT(args), std=0.1).eval()
    val = read_shard_tokens(tiny_data / "fineweb_val_000000.bin")[:n_targets + 1]
    return model, args, torch.from_numpy(val.astype(np.int64)), train_gpt.byte_tables(sp)


# ----------------------------------------------------------------------------- 4. score before update

@pytest.mark.parametrize("stride, chunk, n_targets", [(12, 64, 7 * SEQ), (32, 32, 5 * SEQ + 7), (8, 96, 300)])
def test_every_target_is_scored_before_the_cache_or_ttt_sees_it(monkeypatch, tmp_path, tiny_tokenizer, tiny_data,
                                                                stride, chunk, n_targets):
    model, args, tokens, tables = tiny_eval_setup(tiny_tokenizer, tiny_data, n_targets, EVAL_STRIDE=stride, TTT_CHUNK_TOKENS=chunk,
                                            TTT_EPOCHS=1, NGRAM_ORDER=4)
    vocab = args.vocab_size
    events = []  # ("score" | "audit", positions, p) / ("cache", positions, columns, q) / ("train", start, chunk, last scored target)
    scored_max = [0]
    cache_probabilities, mixer_probabilities, train_chunk = (train_gpt.NgramMixer.cache_probabilities, train_gpt.NgramMixer.probabilities,
                                                             train_gpt.TestTimeTrainer.train_chunk)

    def cache(self, positions, columns):
        q, longest = cache_probabilities(self, positions, columns)
        events.append(("cache", positions.tolist(), columns.clone(), q.clone()))
        return q, longest

    def probabilities(self, model_p, entropy, positions, columns):
        result = mixer_probabilities(self, model_p, entropy, positions, columns)
        events.append(("score" if columns.size(1) == 1 else "audit", positions.tolist(), result[0].clone()))
        if columns.size(1) == 1:
            scored_max[0] = max([scored_max[0]] + positions.tolist())
        return result

    def train(self, tokens, start, chunk):
        events.append(("train", start, chunk, scored_max[0]))
        hidden = tokens.clone()
        hidden[scored_max[0] + 1:] = vocab  # not a token: any use of an unscored target fails
        try:
            return train_chunk(self, hidden, start, chunk)
        except IndexError as e:
            pytest.fail(f"train_chunk(start={start}, chunk={chunk}) read a target after {scored_max[0]}, the last scored: {e}")

    monkeypatch.setattr(train_gpt.NgramMixer, "cache_probabilities", cache)
    monkeypatch.setattr(train_gpt.NgramMixer, "probabilities", probabilities)
    monkeypatch.setattr(train_gpt.TestTimeTrainer, "train_chunk", train)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dump = tmp_path / "nll.npz"
    result = train_gpt.evaluate(model, args, cpu_run(), val_set(tokens, tables), stride, "t", use_mixer=True, ttt=True, dump_path=str(dump))

    n_chunks = -(-n_targets // chunk)
    chunk_of = lambda t: (t - 1) // chunk  # noqa: E731
    scored, trained = [], 0
    for kind, *rest in events:
        if kind == "train":
            trained += 1
        elif kind == "score":
            scored += rest[0]
        if kind in ("score", "audit", "cache"):  # nothing TTT has trained on is scored (a window may reach into the next chunk)
            assert min(chunk_of(t) for t in rest[0]) >= trained, (kind, trained)
    assert sorted(scored) == list(range(1, n_targets + 1))  # every target scored exactly once
    # the cache that scored (and audited) a target held exactly the targets before it: its q is the
    # brute-force q over them, so no target's own n-gram (or a later one) was in it
    listed = tokens.tolist()
    brutes = {}
    for kind, positions, columns, q in (e for e in events if e[0] == "cache"):
        for i, pos in enumerate(positions):
            if pos not in brutes:
                brutes[pos] = BruteNgrams(args.ngram_order - 1)
                brutes[pos].add(listed, 1, pos)
            expected, _ = brutes[pos].q(listed, pos, args.ngram_discount, vocab)
            np.testing.assert_allclose(q[i].numpy(), expected[columns[i].numpy()], rtol=1e-12, atol=1e-15)
    assert {k for k, *_ in events} == {"cache", "score", "audit", "train"}

    trains = [rest for kind, *rest in events if kind == "train"]
    assert [c for _, c, _ in trains] == list(range(n_chunks - 1))  # every chunk but the last
    for start, c, seen in trains:
        assert start == c * chunk
        assert start + chunk <= seen  # its targets start+1 .. start+chunk were all scored
    # TTT did train: trained weights moved (the model keeps them), frozen ones did not
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "tok_emb.weight" in moved and "bigram.embed.weight" not in moved

    assert result["audit_positions"] > 0 and result["audit_max_abs_err"] <= 1e-6
    # the dump holds what was scored: -log2 p of each target, in val order, and its bytes
    data = np.load(dump)
    expected = torch.zeros(n_targets, dtype=torch.float64)
    for kind, positions, p in (e for e in events if e[0] == "score"):
        expected[torch.tensor(positions) - 1] = -p.squeeze(1).log() / math.log(2)
    assert np.array_equal(data["nll_bits"], expected.float().numpy())
    assert np.array_equal(data["bytes"], train_gpt.target_bytes(tokens[:-1], tokens[1:], tables).numpy())
    assert float(expected.sum()) / float(data["bytes"].sum()) == pytest.approx(result["mixed_bpb"], rel=1e-9)


# ----------------------------------------------------------------------------- 9. what TTT trains

@pytest.mark.parametrize("freeze_blocks", [0, 1, 2, 3])
def test_ttt_trains_last_k_blocks_scales_and_embedding_only(tiny_tokenizer, tiny_data, freeze_blocks):
    layers = 3
    model, args, tokens, tables = tiny_eval_setup(tiny_tokenizer, tiny_data, 4 * SEQ, NUM_LAYERS=layers, TTT_FREEZE_BLOCKS=freeze_blocks,
                                            TTT_CHUNK_TOKENS=2 * SEQ, TTT_EPOCHS=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = train_gpt.TestTimeTrainer(model, args, cpu_run(), val_set(tokens, tables), n_chunks=2)
    last_blocks = {id(p) for block in list(model.blocks)[layers - freeze_blocks:] for p in block.parameters()}
    expected = [n for n, p in model.named_parameters() if id(p) in last_blocks or "scale" in n or n.startswith("tok_emb.")]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == expected
    assert [id(p) for p in trainer.params] == [id(p) for n, p in model.named_parameters() if n in expected]
    assert "blocks.0.attn_scale" in expected and "tok_emb.weight" in expected  # scales of frozen blocks train too
    assert ("blocks.0.mlp.fc.weight" in expected) == (freeze_blocks == layers)
    assert ("blocks.2.attn.q.weight" in expected) == (freeze_blocks >= 1)

    trainer.train_chunk(tokens, 0, 0)
    for name, p in model.named_parameters():
        if name in expected:
            assert not torch.equal(p, before[name]), f"{name} is trained but did not change"
        else:
            assert torch.equal(p, before[name]), f"{name} is frozen but changed"
    # scoring uses the Polyak averages; the raw trained weights come back afterwards
    raw = [p.detach().clone() for p in trainer.params]
    with trainer.averaged_weights():
        assert all(torch.equal(p, avg) for p, avg in zip(trainer.params, trainer.polyak))
    assert all(torch.equal(p, r) for p, r in zip(trainer.params, raw))
    assert not all(torch.equal(avg, r) for avg, r in zip(trainer.polyak, raw))


# ----------------------------------------------------------------------------- whole EVAL_ONLY runs

EVAL_SEQ_LEN = int(TINY_ENV["EVAL_SEQ_LEN"])
CHUNK = 2 * EVAL_SEQ_LEN            # TTT_CHUNK_TOKENS
VAL_TOKENS = 16 * CHUNK             # VAL_MAX_TOKENS: 15.5 chunks of scored targets
SPLIT = 7 * CHUNK + 50              # P: the two val streams agree on tokens < P (inside chunk 7, mid-window)


@dataclasses.dataclass
class Artifact:
    env: dict          # settings of the EVAL_ONLY runs (artifact path absolute)
    root: Path
    val_tokens: np.ndarray  # the val shard


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, tiny_data, tiny_tokenizer) -> Artifact:
    """One tiny training run on the self-made data; the EVAL_ONLY runs below share its artifact."""
    root = tmp_path_factory.mktemp("eval_stack")
    env = dict(TINY_ENV, DATA_PATH=str(tiny_data), TOKENIZER_PATH=str(tiny_tokenizer), VOCAB_SIZE="64",
               VAL_MAX_TOKENS=str(VAL_TOKENS), TTT_CHUNK_TOKENS=str(CHUNK), TTT_EPOCHS="2", NGRAM_ORDER="6",
               ARTIFACT_PATH=str(root / "final_model.int6.ptz"), OMP_NUM_THREADS="1")
    trained = run_trainer(dict(env, NGRAM_ENABLED="0", TTT_ENABLED="0", RUN_ID="train"), root / "train")
    assert trained.returncode == 0, trained.output[-4000:]
    assert (root / "final_model.int6.ptz").is_file()
    return Artifact(dict(env, EVAL_ONLY="1"), root, read_shard_tokens(tiny_data / "fineweb_val_000000.bin"))


TEARDOWN_ABORT = "terminate called without an active exception"


def is_teardown_abort(result) -> bool:
    """A multi-process run that finished and logged everything, then died with SIGABRT while Python
    shut down: a gloo worker thread (ProcessGroupGloo::runLoop) frees an all-reduce work item whose
    tensors are Python objects after Py_FinalizeEx has begun, its GIL acquire ends the thread and
    std::terminate aborts the process. The process group outlives destroy_process_group() (with
    torch 2.13 on CPU, creating any torch.optim optimizer is enough), so the race is open at every
    exit; on 2 busy cores it hits about 1 run in 3 (known upstream: pytorch/pytorch#109478)."""
    return (result.returncode != 0 and TEARDOWN_ABORT in result.output and error_lines(result.log) == []
            and log_line(result.log, "peak_memory") is not None)


def eval_only(artifact: Artifact, name: str, nproc: int = 1, **overrides):
    """An EVAL_ONLY subprocess run of the shared artifact that dumps its per-token NLL. A run that
    ends in the teardown abort above (after its results are complete) is repeated, up to 3 tries,
    with a warning: that abort is reported on its own and is not what these tests are about."""
    env = dict(artifact.env, RUN_ID=name, EVAL_DUMP_NLL=str(artifact.root / f"{name}.npz"), **overrides)
    for attempt in range(3):
        result = run_trainer(env, artifact.root / f"{name}_{attempt}", nproc=nproc)
        if not is_teardown_abort(result):
            break
        warnings.warn(f"{name}: {nproc}-process run aborted at interpreter exit after finishing ({TEARDOWN_ABORT!r})")
    assert result.returncode == 0, result.output[-4000:]
    return result, np.load(env["EVAL_DUMP_NLL"])


@pytest.fixture(scope="module")
def stream_a(artifact):
    return eval_only(artifact, "a")


@pytest.fixture(scope="module")
def data_b(artifact, tmp_path_factory) -> Path:
    return data_parting_at(artifact, SPLIT, tmp_path_factory.mktemp("data_b"))


def data_parting_at(artifact, split: int, folder: Path) -> Path:
    """A DATA_PATH (folder) whose val shard is the same up to token `split`, other tokens of the shard
    from there on (other document boundaries too)."""
    a = artifact.val_tokens
    shift = next(s for s in range(1000, 5000) if a[split + s] != a[split])
    b = a.copy()
    b[split:] = np.roll(a, -shift)[split:]
    assert np.array_equal(a[:split], b[:split]) and a[split] != b[split]
    write_shard(folder / "fineweb_val_000000.bin", b)
    return folder


@pytest.fixture(scope="module")
def stream_b(artifact, data_b):
    return eval_only(artifact, "b", DATA_PATH=str(data_b))


# TTT_MODE=lora on the same artifact: 8-document batches, the first 24 documents before the phase's SGD
LORA_CHUNK, LORA_PHASE = 8, 24
LORA = dict(TTT_MODE="lora", TTT_LORA_CHUNK=str(LORA_CHUNK), TTT_LORA_RANK="8", TTT_LORA_BATCH_DOCS="8", TTT_PHASE_DOCS=str(LORA_PHASE))


@pytest.fixture(scope="module")
def lora_split(artifact) -> int:
    """Where the lora streams part: inside a chunk (targets before it share the chunk, the batch and
    the mixer's alpha history with it), one chunk into a document of a batch after the phase."""
    starts, lengths = train_gpt.document_spans(torch.from_numpy(artifact.val_tokens[:VAL_TOKENS].astype(np.int64)), 1)
    d = next(d for d in range(LORA_PHASE + 8, len(starts)) if lengths[d] > 2 * LORA_CHUNK)
    return int(starts[d]) + LORA_CHUNK + 5


@pytest.fixture(scope="module")
def lora_a(artifact):
    return eval_only(artifact, "lora_a", **LORA)


@pytest.fixture(scope="module")
def lora_b(artifact, lora_split, tmp_path_factory):
    data = data_parting_at(artifact, lora_split, tmp_path_factory.mktemp("data_lora_b"))
    return eval_only(artifact, "lora_b", DATA_PATH=str(data), **LORA)


def bpb(log: str, kind: str) -> float:
    line = log_line(log, kind)
    assert line is not None, f"no {kind} line in\n{log[-3000:]}"
    return float(line["val_bpb"])


def check_audit(log: str):
    audit = log_line(log, "ngram_audit")
    assert audit is not None, log[-3000:]
    assert int(audit["positions"]) > 0 and float(audit["max_abs_err"]) <= 1e-6


# 5. causality

def test_eval_stack_is_causal(stream_a, stream_b):
    (run_a, a), (run_b, b) = stream_a, stream_b
    n_targets = (VAL_TOKENS - 1) // EVAL_SEQ_LEN * EVAL_SEQ_LEN
    assert SPLIT % CHUNK not in (0, 1) and 2 * CHUNK < SPLIT < n_targets - 2 * CHUNK
    for r in (run_a, run_b):
        assert log_line(r.log, "final_ngram_ttt")["ngram"] == "1" and log_line(r.log, "final_ngram_ttt")["ttt"] == "1"
        assert f"val_tokens:{n_targets} " in r.log
    assert len(a["nll_bits"]) == len(b["nll_bits"]) == n_targets
    # target i is token i, predicted from tokens < i: entries 0 .. SPLIT-2 are targets 1 .. SPLIT-1
    assert np.array_equal(a["nll_bits"][:SPLIT - 1], b["nll_bits"][:SPLIT - 1])
    assert np.array_equal(a["bytes"][:SPLIT - 1], b["bytes"][:SPLIT - 1])
    later = a["nll_bits"][SPLIT - 1:] != b["nll_bits"][SPLIT - 1:]
    assert later[0] and later.mean() > 0.5  # target SPLIT itself and most later ones differ
    assert bpb(run_a.log, "final_ngram_ttt") != bpb(run_b.log, "final_ngram_ttt")


def test_lora_eval_is_causal(lora_a, lora_b, lora_split):
    """Document-level LoRA TTT, its phase and its mixer: a target's score depends on nothing after it."""
    (run_a, a), (run_b, b) = lora_a, lora_b
    for r in (run_a, run_b):
        assert "ttt_mode:lora" in r.log and f"phase_sgd documents:{LORA_PHASE} " in r.log
        check_audit(r.log)
    P = lora_split
    for key in ("nll_bits", "model_nll_bits", "entropy_bits"):
        assert np.array_equal(a[key][:P - 1], b[key][:P - 1]), key
    later = a["nll_bits"][P - 1:] != b["nll_bits"][P - 1:]
    assert later[0] and later.mean() > 0.5
    assert (a["nll_bits"][P - 5:P - 1] != a["model_nll_bits"][P - 5:P - 1]).any()  # the mixer is at work on P's chunk


def test_lora_dump_and_gains_match_the_final_score(lora_a, stream_a):
    run, data = lora_a
    nll, model_nll, n_bytes = (data[k].astype(np.float64) for k in ("nll_bits", "model_nll_bits", "bytes"))
    assert np.array_equal(data["bytes"], stream_a[1]["bytes"]) and np.isfinite(nll).all()
    assert nll.sum() / n_bytes.sum() == pytest.approx(bpb(run.log, "final_ngram_ttt"), rel=1e-6)
    assert model_nll.sum() / n_bytes.sum() == pytest.approx(bpb(run.log, "ttt_only"), rel=1e-6)
    got = gains(run.log)
    assert got["ttt_gain"] == pytest.approx(bpb(run.log, "final_int6_sliding_window") - bpb(run.log, "ttt_only"), abs=2e-6)
    assert got["ngram_gain"] > 0  # the mixer helps on this repetitive text (alpha is learned after the first batch)
    assert re.search(r"^eval:ngram_ttt seconds:\S+ .*lora_seconds:\S+ phase_sgd_seconds:\S+ mixer_seconds:\S+$", run.log, re.M)


def test_lora_eval_on_two_processes_matches_one(lora_a, artifact):
    one, dump_one = lora_a
    two, dump_two = eval_only(artifact, "lora_2_procs", nproc=2, **LORA)
    for kind in ("ttt_only", "final_ngram_ttt"):
        assert abs(bpb(one.log, kind) - bpb(two.log, kind)) <= 1e-6, kind
    assert np.abs(dump_one["nll_bits"].astype(np.float64) - dump_two["nll_bits"]).max() < 1e-4
    check_audit(two.log)


# 6. the per-token NLL dump

def test_nll_dump_matches_the_final_score_and_val_bytes(stream_a, artifact):
    run, data = stream_a
    assert set(data.files) == {"nll_bits", "model_nll_bits", "entropy_bits", "bytes"}
    n_targets = (VAL_TOKENS - 1) // EVAL_SEQ_LEN * EVAL_SEQ_LEN
    nll, n_bytes = data["nll_bits"].astype(np.float64), data["bytes"]
    model_nll, entropy = data["model_nll_bits"].astype(np.float64), data["entropy_bits"]
    assert nll.shape == n_bytes.shape == model_nll.shape == entropy.shape == (n_targets,)
    assert np.isfinite(nll).all() and (nll >= 0).all()
    # the model's own part: the TTT-only score of the same pass, and its entropy in [0, log2 V]
    ttt_only = log_line(run.log, "ttt_only")
    assert model_nll.sum() / n_bytes.sum() == pytest.approx(float(ttt_only["val_bpb"]), rel=1e-6)
    assert (entropy >= 0).all() and (entropy <= np.log2(1024) + 1e-4).all() and entropy.std() > 0
    assert (nll != model_nll).mean() > 0.5  # the mixer changed most scores
    sp = spm.SentencePieceProcessor(model_file=artifact.env["TOKENIZER_PATH"])
    tokens = torch.from_numpy(artifact.val_tokens[:n_targets + 1].astype(np.int64))
    assert np.array_equal(n_bytes, train_gpt.target_bytes(tokens[:-1], tokens[1:], train_gpt.byte_tables(sp)).numpy())
    final = log_line(run.log, "final_ngram_ttt")
    assert nll.sum() / n_bytes.sum() == pytest.approx(float(final["val_bpb"]), rel=1e-6)
    assert nll.sum() * LN2 / n_targets == pytest.approx(float(final["val_loss"]), rel=1e-6)
    dumped = log_line(run.log, "nll_dump")
    assert dumped["label"] == "ngram_ttt" and dumped["path"] == str(artifact.root / "a.npz")


# 7. one process vs two and four

@pytest.mark.parametrize("nproc", [2, 4])
def test_multi_process_eval_matches_one_process(stream_a, artifact, nproc):
    one, dump_one = stream_a
    two, dump_two = eval_only(artifact, f"a_{nproc}_procs", nproc=nproc)
    assert f"world_size:{nproc}" in two.log and two.log.count("final_ngram_ttt ") == 1
    eval_lines = re.findall(r"^eval:\w+ seconds:.* score_seconds:(\S+) .*score_seconds_by_rank:(\S+)$", two.log, re.M)
    assert len(eval_lines) == 3 and "score_seconds_by_rank" not in one.log  # roundtrip, sliding, ngram_ttt; one process: none
    for rank0, by_rank in eval_lines:  # each rank's own scoring lap, rank 0's first
        laps = by_rank.split(",")
        assert len(laps) == nproc and laps[0] == rank0 and all(float(x) >= 0 for x in laps)
    for kind in ("final_int6_roundtrip", "final_int6_sliding_window", "ngram_only", "ttt_only", "final_ngram_ttt"):
        assert abs(bpb(one.log, kind) - bpb(two.log, kind)) <= 1e-6, kind
    for r in (one, two):
        check_audit(r.log)
        assert error_lines(r.log) == []
    assert np.array_equal(dump_one["bytes"], dump_two["bytes"])
    assert np.abs(dump_one["nll_bits"].astype(np.float64) - dump_two["nll_bits"]).max() < 1e-4


# 8. audit and switches

def test_full_runs_log_the_audit_and_consistent_gains(stream_a, stream_b):
    for run, _ in (stream_a, stream_b):
        check_audit(run.log)
        assert error_lines(run.log) == []
        sliding = bpb(run.log, "final_int6_sliding_window")
        got = gains(run.log)
        assert got["total_gain"] == pytest.approx(sliding - bpb(run.log, "final_ngram_ttt"), abs=2e-6)
        assert got["ttt_gain"] == pytest.approx(sliding - bpb(run.log, "ttt_only"), abs=2e-6)
        assert got["ngram_gain"] == pytest.approx(bpb(run.log, "ttt_only") - bpb(run.log, "final_ngram_ttt"), abs=2e-6)
        assert got["total_gain"] == pytest.approx(got["ttt_gain"] + got["ngram_gain"], abs=3e-6)
        # the mixer also runs on the sliding pass: the TTT-off score of the same run
        assert bpb(run.log, "ngram_only") != sliding
        assert "mixer_seconds" in [l for l in run.log.splitlines() if l.startswith("eval:int6_sliding_window seconds:")][0]
        assert run.log.count("ngram_audit positions:") == 1
        assert log_line(run.log, "ttt_only")["temperature"] == str(train_gpt.SETTINGS["TTT_TEMPERATURE"])


@pytest.mark.parametrize("ngram, ttt", [(0, 1), (1, 0), (0, 0)])
def test_ngram_and_ttt_switches(run_main, tmp_path, artifact, stream_a, ngram, ttt):
    full, _ = stream_a
    dump = tmp_path / "nll.npz"
    result = run_main(dict(artifact.env, NGRAM_ENABLED=str(ngram), TTT_ENABLED=str(ttt), EVAL_DUMP_NLL=str(dump)))
    assert result.returncode == 0, result.log[-3000:]
    log = result.log
    assert error_lines(log) == []
    final = log_line(log, "final_ngram_ttt")
    assert (final["ngram"], final["ttt"]) == (str(ngram), str(ttt))
    assert (log_line(log, "ngram_only") is not None) == bool(ngram)
    assert (log_line(log, "ttt_only") is not None) == bool(ttt)
    assert (log_line(log, "ngram_audit") is not None) == bool(ngram)
    if ngram:
        check_audit(log)
    sliding = log_line(log, "final_int6_sliding_window")
    if ngram and not ttt:
        assert final["val_bpb"] == log_line(log, "ngram_only")["val_bpb"]
    if ttt and not ngram:
        assert final["val_bpb"] == log_line(log, "ttt_only")["val_bpb"]
    if not ngram and not ttt:
        assert (final["val_loss"], final["val_bpb"]) == (sliding["val_loss"], sliding["val_bpb"])
    # each pass scores the same as in the run with everything on
    assert abs(bpb(log, "final_int6_sliding_window") - bpb(full.log, "final_int6_sliding_window")) <= 1e-7
    for kind, on in (("ngram_only", ngram), ("ttt_only", ttt)):
        if on:
            assert abs(bpb(log, kind) - bpb(full.log, kind)) <= 1e-6, kind
    assert set(gains(log)) == {"total_gain"} | ({"ngram_gain"} if ngram else set()) | ({"ttt_gain"} if ttt else set())
    if ngram and not ttt:  # the mixer on the sliding pass: its gain is sliding minus ngram_only
        assert gains(log)["ngram_gain"] == pytest.approx(bpb(log, "final_int6_sliding_window") - bpb(log, "ngram_only"), abs=2e-6)
    # the dump is the final score's, whichever pass that is
    data = np.load(dump)
    assert data["nll_bits"].astype(np.float64).sum() / data["bytes"].sum() == pytest.approx(float(final["val_bpb"]), rel=1e-6)


def test_failed_audit_ends_the_run_with_exit_2(run_main, monkeypatch, artifact):
    monkeypatch.setattr(train_gpt, "AUDIT_TOLERANCE", -1.0)
    result = run_main(dict(artifact.env, TTT_ENABLED="0"))
    assert result.returncode == 2
    errors = error_lines(result.log)
    assert len(errors) == 1 and errors[0].startswith("ERROR: ngram audit failed"), result.log[-2000:]
    assert result.log.rstrip().endswith(errors[0])
    assert log_line(result.log, "final_ngram_ttt") is not None and log_line(result.log, "ngram_audit") is not None


def test_unnormalized_mixture_fails_the_audit(run_main, monkeypatch, artifact):
    probabilities = train_gpt.NgramMixer.probabilities
    monkeypatch.setattr(train_gpt.NgramMixer, "probabilities", lambda self, *a: (lambda r: (r[0] * 1.001,) + r[1:])(probabilities(self, *a)))
    result = run_main(dict(artifact.env, TTT_ENABLED="0"))
    assert result.returncode == 2
    audit = log_line(result.log, "ngram_audit")
    assert float(audit["max_abs_err"]) == pytest.approx(1e-3, rel=1e-2)
    assert [e.split(":")[1].strip() for e in error_lines(result.log)] == ["ngram audit failed"]


# ----------------------------------------------------------------------------- 10. tools/mixer_replay.py

def replay(artifact, dump, *argv, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "mixer_replay.py"), str(dump), *argv],
                          env={**_clean_environ(), **artifact.env, **(env or {})}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("mixer_replay "), line
    return dict(item.split(":", 1) for item in line.split()[1:] if ":" in item) | {"line": line}


def test_mixer_replay_reproduces_the_run_from_its_dump(stream_a, artifact):
    """The dump's model part + the val tokens are all the mixer needs: replaying them through
    NgramMixer gives the run's own final score; the reference rule gives another, valid one."""
    run, _ = stream_a
    dump = artifact.root / "a.npz"
    ours = replay(artifact, dump)
    assert float(ours["model_bpb"]) == pytest.approx(bpb(run.log, "ttt_only"), abs=2e-6)
    assert float(ours["mixed_bpb"]) == pytest.approx(bpb(run.log, "final_ngram_ttt"), abs=2e-6)
    assert float(ours["gain"]) == pytest.approx(gains(run.log)["ngram_gain"], abs=3e-6)
    reference = replay(artifact, dump, "--rule", "reference", "--min-count", "1")
    assert reference["model_bpb"] == ours["model_bpb"] and reference["mixed_bpb"] != ours["mixed_bpb"]
    assert "rule:reference min_count=1 " in reference["line"]
    other = replay(artifact, dump, "--discount", "0.3")
    assert other["mixed_bpb"] != ours["mixed_bpb"] and " NGRAM_DISCOUNT=0.3 " in other["line"]
    # with TTT off the mixer runs over the stream's chunks whatever TTT_MODE says (RECIPE=modern's lora)
    assert replay(artifact, dump, env=dict(LORA, TTT_ENABLED="0"))["mixed_bpb"] == ours["mixed_bpb"]


def test_mixer_replay_refuses_a_dump_without_the_model_part(artifact, tmp_path):
    old = tmp_path / "old.npz"
    np.savez(old, nll_bits=np.zeros(10, np.float32), bytes=np.ones(10, np.int32))
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "mixer_replay.py"), str(old)],
                          env={**_clean_environ(), **artifact.env}, capture_output=True, text=True)
    assert proc.returncode == 2 and "lacks ['entropy_bits', 'model_nll_bits']" in proc.stderr


def test_mixer_replay_refuses_a_lora_run(lora_a, artifact):
    """A lora run's mixer counts inside documents: replaying it over the stream's chunks would not reproduce it."""
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "mixer_replay.py"), str(artifact.root / "lora_a.npz")],
                          env={**_clean_environ(), **artifact.env, **LORA}, capture_output=True, text=True)
    assert proc.returncode == 2 and "TTT_MODE=lora: this tool replays the stream's chunks" in proc.stderr


# ----------------------------------------------------------------------------- 11. progress lines

def test_eval_progress_eta_leaves_out_the_first_chunk(monkeypatch, tiny_tokenizer, tiny_data):
    """The first chunk pays for torch.compile on GPU: the ETA is the pace of the chunks after it."""
    model, args, tokens, tables = tiny_eval_setup(tiny_tokenizer, tiny_data, 6 * SEQ, TTT_CHUNK_TOKENS=SEQ, TTT_EPOCHS=1, NGRAM_ORDER=3)
    clock = {"now": 0.0, "chunk": 0}

    class FakeTime:  # the first chunk takes 1000 s, every later one 40 s
        @staticmethod
        def perf_counter():
            return clock["now"]
    train_chunk = train_gpt.TestTimeTrainer.train_chunk

    def slow_train(self, tokens, start, chunk):
        clock["now"] += 1000.0 if chunk == 0 else 40.0
        return train_chunk(self, tokens, start, chunk)
    monkeypatch.setattr(train_gpt, "time", FakeTime)
    monkeypatch.setattr(train_gpt.TestTimeTrainer, "train_chunk", slow_train)
    lines = []
    train_gpt.evaluate(model, args, cpu_run(lines.append), val_set(tokens, tables), SEQ, "t", use_mixer=True, ttt=True)
    progress = [line for line in lines if line.startswith("eval:t chunk:")]
    # chunks 2..5 of 6 report (the last never does); after chunk k: (40 s per chunk) x (6 - k) to go
    assert progress == [f"eval:t chunk:{k}/6 elapsed:{train_gpt.format_seconds(1000 + 40 * (k - 1))} "
                        f"eta:{train_gpt.format_seconds(40 * (6 - k))}" for k in range(2, 6)]
