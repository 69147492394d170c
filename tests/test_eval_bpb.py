"""Bits per byte: per-token byte counts, the sliding-window plan, scored logits and evaluate()."""
import math

import numpy as np
import pytest
import sentencepiece as spm
import torch
import torch.nn.functional as F

import train_gpt
from conftest import LN2, OFFICIAL_TOKENIZER, PROXY_DATA, cpu_run, randomize_, read_shard_tokens, tiny_args, val_set, write_shard


@pytest.fixture(scope="module")
def official_sp():
    if not OFFICIAL_TOKENIZER.is_file():
        pytest.skip(f"official tokenizer not found at {OFFICIAL_TOKENIZER}")
    return spm.SentencePieceProcessor(model_file=str(OFFICIAL_TOKENIZER))


def doc_bytes(sp, ids, tables) -> int:
    """Bytes counted for the targets of `[BOS] + ids`."""
    tokens = torch.tensor([sp.bos_id()] + list(ids))
    return int(train_gpt.target_bytes(tokens[:-1], tokens[1:], tables).sum())


def test_byte_tables_official(official_sp):
    base, space, boundary = train_gpt.byte_tables(official_sp)
    assert base.shape == space.shape == boundary.shape == (1024,)
    for special in (0, 1, 2, 3):  # pad, bos, eos, unk: boundary tokens worth no bytes
        assert boundary[special] and base[special] == 0 and not space[special]
    byte_ids = [i for i in range(1024) if official_sp.is_byte(i)]
    assert len(byte_ids) == 256 and (base[byte_ids] == 1).all() and not space[byte_ids].any()
    assert not boundary[4:].any()
    word = official_sp.piece_to_id("▁wor")
    assert base[word] == 3 and space[word]
    dash = official_sp.piece_to_id("—")
    assert base[dash] == 3 and not space[dash]  # a multi-byte UTF-8 piece
    lone_space = official_sp.piece_to_id("▁")
    assert base[lone_space] == 0 and space[lone_space]


def test_target_bytes_hand_computed_case(official_sp):
    text = "Hello world, café"
    ids = official_sp.encode(text)
    pieces = [official_sp.id_to_piece(i) for i in ids]
    assert pieces == ["H", "ell", "o", "▁wor", "ld", ",", "▁c", "a", "f", "<0xC3>", "<0xA9>"]
    tables = train_gpt.byte_tables(official_sp)
    tokens = torch.tensor([official_sp.bos_id()] + ids)
    per_target = train_gpt.target_bytes(tokens[:-1], tokens[1:], tables).tolist()
    # H=1 ell=3 o=1 " wor"=4 ld=2 ","=1 " c"=2 a=1 f=1, then é as two byte-fallback tokens 1+1
    assert per_target == [1, 3, 1, 4, 2, 1, 2, 1, 1, 1, 1]
    assert sum(per_target) == len(text.encode("utf-8")) == 18
    # the leading space of a piece right after a boundary (BOS) is not counted; after a normal token it is
    bos, wor, o = official_sp.bos_id(), official_sp.piece_to_id("▁wor"), official_sp.piece_to_id("o")
    assert train_gpt.target_bytes(torch.tensor([bos, o]), torch.tensor([wor, wor]), tables).tolist() == [3, 4]


@pytest.mark.parametrize("text", ["Oh — naïve 日本!", "The end.", "x", "Spaces   collapse\tand\nnewlines  too ☃"])
def test_document_bytes_equal_decoded_utf8_length(official_sp, text):
    tables = train_gpt.byte_tables(official_sp)
    ids = official_sp.encode(text)
    assert doc_bytes(official_sp, ids, tables) == len(official_sp.decode(ids).encode("utf-8"))


def test_concatenated_documents_count_each_document(official_sp):
    tables = train_gpt.byte_tables(official_sp)
    a, b = official_sp.encode("First doc — ok."), official_sp.encode("Second doc, café.")
    tokens = torch.tensor([1] + a + [1] + b)
    total = int(train_gpt.target_bytes(tokens[:-1], tokens[1:], tables).sum())
    assert total == len(official_sp.decode(a).encode()) + len(official_sp.decode(b).encode())


def test_real_val_shard_bytes_equal_decoded_documents(official_sp):
    path = PROXY_DATA / "fineweb_val_000000.bin"
    if not path.is_file():
        pytest.skip(f"proxy val shard not found at {path}")
    tokens = read_shard_tokens(path).astype(np.int64)
    bos = np.flatnonzero(tokens == official_sp.bos_id())
    assert bos[0] == 0
    end = int(bos[bos > 100_000][0])  # whole documents only
    t = torch.from_numpy(tokens[:end])
    counted = int(train_gpt.target_bytes(t[:-1], t[1:], train_gpt.byte_tables(official_sp)).sum())
    docs = np.split(tokens[:end], bos[(bos > 0) & (bos < end)])
    assert counted == sum(len(official_sp.decode(d[1:].tolist()).encode("utf-8")) for d in docs)
    assert 2.0 < counted / (end - 1) < 3.0  # English web text: ~2.4 bytes per token


# ----------------------------------------------------------------------------- window plan

PLANS = [(129, 64, 64), (129, 64, 32), (129, 64, 48), (101, 64, 64), (101, 64, 7), (20, 64, 16), (65, 64, 1),
         (2, 64, 64), (1001, 100, 100), (1001, 100, 30)]


@pytest.mark.parametrize("n_tokens, seq_len, stride", PLANS)
def test_window_plan_scores_every_target_once(n_tokens, seq_len, stride):
    ends, skips = train_gpt.window_plan(n_tokens, seq_len, stride)
    length = min(seq_len, n_tokens - 1)
    scored, context = [], {}
    for e, s in zip(ends.tolist(), skips.tolist()):
        first_target = e - length + 1          # window inputs are tokens[first_target-1 : e]
        assert first_target >= 1 and e <= n_tokens - 1 and 0 <= s < length
        for i in range(first_target + s, e + 1):
            scored.append(i)
            context[i] = i - first_target + 1  # tokens visible when predicting target i
    assert sorted(scored) == list(range(1, n_tokens)) and len(scored) == len(set(scored))
    assert scored == sorted(scored)  # windows go left to right
    for i, c in context.items():  # every target has at least the sliding context (or all tokens before it)
        assert c >= min(i, length - stride + 1)
    if stride >= length:
        assert (skips[:-1] == 0).all()  # non-sliding: consecutive disjoint windows



@pytest.mark.parametrize("n_tokens, seq_len, stride, batch_seqs", [(1001, 100, 30, 4), (1001, 100, 100, 3), (129, 64, 64, 2)])
def test_scored_logits_never_reads_device_values(n_tokens, seq_len, stride, batch_seqs):
    """Which positions are scored comes from the CPU plan alone: with the tokens, the hidden states and
    the logits on the meta device (shapes, no values), any read of a device value on the host (int(),
    boolean masks, .item(): each a GPU sync on CUDA) would raise. Each batch keeps the compiled shape."""
    ends, skips = train_gpt.window_plan(n_tokens, seq_len, stride)
    length = min(seq_len, n_tokens - 1)
    tokens = torch.empty(n_tokens, dtype=torch.long, device="meta")
    shapes = []

    def hidden(idx, last):
        assert idx.device.type == "meta"
        shapes.append((*idx.shape, last))
        return torch.empty(idx.size(0), last, 8, device="meta")
    counts = [len(idx) for idx, logits in train_gpt.scored_logits(hidden, lambda h: h @ torch.empty(8, 5, device="meta"), tokens,
                                                                 ends, skips, length, batch_seqs, stride)]
    assert sum(counts) == n_tokens - 1
    # two compiled shapes at most: the batch with the first window computes every position, the others only the last `stride`
    assert set(shapes) == {(batch_seqs, length, length)} | ({(batch_seqs, length, stride)} if stride < length else set())
    assert shapes[0] == (batch_seqs, length, length)


def _tiny_eval_setup(tiny_tokenizer, tiny_data, eval_seq_len=32, n_chunks=4, **overrides):
    sp = spm.SentencePieceProcessor(model_file=str(tiny_tokenizer))
    args = tiny_args(VOCAB_SIZE=64, EVAL_SEQ_LEN=eval_seq_len, EVAL_STRIDE=8, **overrides)
    torch.manual_seed(0)
    model = randomize_(train_gpt.GPT(args), std=0.2).eval()
    tokens = torch.from_numpy(read_shard_tokens(tiny_data / "fineweb_val_000000.bin")[:n_chunks * eval_seq_len + 1].astype(np.int64))
    return model, args, tokens, train_gpt.byte_tables(sp)


def _direct_logits(model, tokens, e, length):
    """Logits of the window whose targets are tokens[e-length+1 : e+1], computed in one plain call."""
    with torch.no_grad():
        return model.head(model.hidden(tokens[e - length:e][None]))[0]


@pytest.mark.parametrize("stride, batch_seqs", [(32, 32), (32, 3), (8, 3), (12, 5)])
def test_scored_logits_match_direct_windows(tiny_tokenizer, tiny_data, stride, batch_seqs):
    model, _, tokens, _ = _tiny_eval_setup(tiny_tokenizer, tiny_data)
    length = 32
    ends, skips = train_gpt.window_plan(len(tokens), length, stride)
    got_idx, got_logits = [], []
    with torch.no_grad():
        for idx, logits in train_gpt.scored_logits(model.hidden, model.head, tokens, ends, skips, length, batch_seqs, stride):
            got_idx.append(idx)
            got_logits.append(logits)
    idx, logits = torch.cat(got_idx), torch.cat(got_logits)
    assert idx.tolist() == list(range(1, len(tokens)))  # each target exactly once, in order
    window_of = {}
    for e, s in zip(ends.tolist(), skips.tolist()):
        for i in range(e - length + 1 + s, e + 1):
            window_of[i] = e
    direct = {e: _direct_logits(model, tokens, e, length) for e in ends.tolist()}
    expected = torch.stack([direct[window_of[i]][i - (window_of[i] - length + 1)] for i in idx.tolist()])
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    # the first window is the same in sliding and non-sliding mode
    plain = _direct_logits(model, tokens, length, length)
    torch.testing.assert_close(logits[:length], plain, atol=1e-5, rtol=1e-5)


def _manual_eval(model, tokens, tables, length, stride):
    """val_loss and val_bpb from the definition: each target i predicted from the window of
    `length` tokens that ends at the first window end >= i (ends: length, length+stride, ..., last)."""
    last = len(tokens) - 1
    ends = list(range(length, last, stride)) + [last]
    nll = 0.0
    for i in range(1, last + 1):
        e = next(e for e in ends if e >= i)
        logits = _direct_logits(model, tokens, e, length)[i - (e - length + 1)]
        nll += F.cross_entropy(logits[None], tokens[i:i + 1], reduction="sum").item()
    n_bytes = int(train_gpt.target_bytes(tokens[:-1], tokens[1:], tables).sum())
    return nll / last, nll / LN2 / n_bytes


@pytest.mark.parametrize("stride", [32, 8, 12])
def test_evaluate_matches_definition(tiny_tokenizer, tiny_data, stride):
    model, args, tokens, tables = _tiny_eval_setup(tiny_tokenizer, tiny_data)
    logs = []
    result = train_gpt.evaluate(model, args, cpu_run(logs.append), val_set(tokens, tables), stride, "test")
    loss, bpb = result["val_loss"], result["val_bpb"]
    want_loss, want_bpb = _manual_eval(model, tokens, tables, 32, stride)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert bpb == pytest.approx(want_bpb, rel=1e-5)
    assert any(line.startswith("eval:test ") and f"targets:{len(tokens) - 1} " in line for line in logs)
    assert not model.training  # evaluate restores the mode it found


def test_evaluate_is_independent_of_batch_size_and_restores_train_mode(tiny_tokenizer, tiny_data):
    model, args, tokens, tables = _tiny_eval_setup(tiny_tokenizer, tiny_data)
    results = []
    for batch in ("1", "3", "32"):
        args.eval_batch_seqs = int(batch)
        model.train()
        result = train_gpt.evaluate(model, args, cpu_run(), val_set(tokens, tables), 8, "b")
        results.append((result["val_loss"], result["val_bpb"]))
        assert model.training
    for loss, bpb in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-6) and bpb == pytest.approx(results[0][1], rel=1e-6)
    assert math.isfinite(results[0][0])


@pytest.mark.parametrize("n", [0, 1, 5, 7, 64])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_rank_slices_partition_windows(n, world):
    covered = [i for rank in range(world) for i in range(n)[train_gpt.rank_slice(n, rank, world)]]
    assert covered == list(range(n))


def test_load_val_tokens_trims_to_whole_eval_sequences(tmp_path):
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(100) % 50)
    write_shard(tmp_path / "fineweb_val_000001.bin", np.arange(60) % 50)
    args = tiny_args(DATA_PATH=tmp_path, EVAL_SEQ_LEN=32, EVAL_STRIDE=32)
    tokens = train_gpt.load_val_tokens(args)
    assert len(tokens) == 4 * 32 + 1  # 160 tokens -> 159 targets -> 4 whole sequences
    assert tokens.tolist() == (list(np.arange(100) % 50) + list(np.arange(60) % 50))[:129]
    args = tiny_args(DATA_PATH=tmp_path, EVAL_SEQ_LEN=32, EVAL_STRIDE=32, VAL_MAX_TOKENS=70)
    assert len(train_gpt.load_val_tokens(args)) == 2 * 32 + 1
    with pytest.raises(train_gpt.UserError, match="fewer than EVAL_SEQ_LEN"):
        train_gpt.load_val_tokens(tiny_args(DATA_PATH=tmp_path, EVAL_SEQ_LEN=256, EVAL_STRIDE=32))
