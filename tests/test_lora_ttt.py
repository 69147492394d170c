"""TTT_MODE=lora in-process: documents cut at BOS cover every target once, fresh adapters change
nothing, every target is scored before anything learns from it (a changed token changes no score
before it, with and without the phase's SGD and the stream context), a document's scores do not
depend on its batch (its adapters start fresh), the adapters do learn, and chunks scored on kept
keys and values get what one forward over the document (and its context) gives."""
import numpy as np
import pytest
import sentencepiece as spm
import torch

import train_gpt
from conftest import randomize_, read_shard_tokens, tiny_args, val_set

SEQ = 32  # EVAL_SEQ_LEN


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("stream, starts, lengths", [
    ([1, 5, 6, 1, 7, 1, 8, 9], [0, 3, 5], [3, 2, 2]),  # starts with BOS
    ([4, 5, 1, 6, 7], [0, 2], [2, 2]),                 # text before the first BOS is a document of its own
    ([1, 5, 1, 1, 6, 1], [0, 2, 3], [2, 1, 2]),        # an empty document; a BOS as the last token is only a target
])
def test_documents_cover_every_target_once(stream, starts, lengths):
    got_starts, got_lengths = train_gpt.document_spans(torch.tensor(stream), bos_id=1)
    assert got_starts.tolist() == starts and got_lengths.tolist() == lengths
    targets = [s + 1 + j for s, n in zip(starts, lengths) for j in range(n)]
    assert targets == list(range(1, len(stream)))  # each target once, in order: a document's last is the next one's BOS


def tiny_lora_setup(tiny_tokenizer, tiny_data, n_targets: int, **overrides):
    sp = spm.SentencePieceProcessor(model_file=str(tiny_tokenizer))
    settings = dict(VOCAB_SIZE=64, EVAL_SEQ_LEN=SEQ, EVAL_STRIDE=SEQ, LOOP_LAYERS="1", TTT_MODE="lora", TTT_LORA_CHUNK=8, TTT_LORA_RANK=4,
                    TTT_LORA_BATCH_DOCS=4, TTT_PHASE_DOCS=0, TTT_LORA_LR=0.01, TTT_LORA_CONTEXT=0, NGRAM_ORDER=4)
    args = tiny_args(**{k: str(v) for k, v in {**settings, **overrides}.items()})
    torch.manual_seed(0)
    model = randomize_(train_gpt.GPT(args), std=0.1).eval()
    tokens = torch.from_numpy(read_shard_tokens(tiny_data / "fineweb_val_000000.bin")[:n_targets + 1].astype(np.int64))
    return model, args, val_set(tokens, train_gpt.byte_tables(sp), sp.bos_id())


def lora_scores(model, args, val, tmp_path, name: str) -> tuple[dict, dict]:
    """lora_evaluate with the mixer on; returns its result and its per-token dump."""
    dump = tmp_path / f"{name}.npz"
    result = train_gpt.lora_evaluate(model, args, train_gpt.Run(torch.device("cpu"), 0, 1, lambda m: None), val, name,
                                     use_mixer=True, dump_path=str(dump))
    return result, dict(np.load(dump))


def test_fresh_adapters_change_nothing_and_every_target_adapts(tiny_tokenizer, tiny_data):
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, 100, TTT_LORA_TARGETS="q,k,v,o,mlp,head")
    ids = val.tokens[:2 * SEQ].view(2, SEQ)
    adapters = train_gpt.DocumentAdapters(model, args.ttt_lora_targets, 4, 2, seed=0)
    runs = len(model.layer_orders[True])
    assert runs == args.num_layers + 1  # layer 1 runs twice: an adapter for each run
    assert sorted(adapters.a) == sorted([f"{p}_{t}" for p in range(runs) for t in "q k v o mlp".split()] + ["out_head"])
    with torch.no_grad():
        plain = model.head(model.hidden(ids))
        assert torch.equal(model.head(model.hidden(ids, adapters=adapters), adapters), plain)
        for key in adapters.b:
            adapters.b[key].normal_()
            changed = model.head(model.hidden(ids, adapters=adapters), adapters)
            assert not torch.allclose(changed, plain), key
            adapters.b[key].zero_()
        adapters.b["0_v"].normal_()
        adapters.rows = torch.tensor([1])  # the step's documents: only document 1's adapter is used
        one = model.head(model.hidden(ids[1:], adapters=adapters), adapters)
        adapters.rows = None
        both = model.head(model.hidden(ids, adapters=adapters), adapters)
        torch.testing.assert_close(one, both[1:], rtol=0, atol=1e-6)
    assert torch.equal(adapters.a["0_q"][0], adapters.a["0_q"][1])  # every document starts from the same A


def changed_after(tokens: torch.Tensor, P: int, bos_id: int) -> torch.Tensor:
    """Other tokens from position P on, with every BOS where it was (the same documents)."""
    other = (tokens + 7) % 64
    other = torch.where(other == bos_id, (tokens + 8) % 64, other)
    keep = (torch.arange(len(tokens)) < P) | (tokens == bos_id)
    return torch.where(keep, tokens, other)


@pytest.mark.parametrize("phase_docs, context", [(0, 0), (6, 0), (6, 16)])
def test_a_changed_token_changes_no_score_before_it(tmp_path, tiny_tokenizer, tiny_data, phase_docs, context):
    """Scored before learned from: a token changed at P (boundaries kept) leaves every target < P
    as it was, for the model (adapters, the phase's SGD, the stream context) and the mixer; targets >= P move."""
    n = 700
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, n, TTT_PHASE_DOCS=phase_docs, TTT_PHASE_LR=0.05, TTT_LORA_CONTEXT=context)
    starts, lengths = train_gpt.document_spans(val.tokens, val.bos_id)
    assert len(starts) > 12 and (lengths[8:] > 2 * args.ttt_lora_chunk).any()  # several batches; documents of several chunks
    base = {k: v.clone() for k, v in model.state_dict().items()}
    a_result, a = lora_scores(model, args, val, tmp_path, "a")
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, base[k])]
    assert bool(moved) == (phase_docs > 0)  # the phase changed the base weights
    # inside a chunk, one chunk into a document: of the first batch (inside the phase), and of a batch after the phase
    C = args.ttt_lora_chunk
    in_phase, after = (next(d for d in range(first, len(starts)) if lengths[d] > 2 * C) for first in (0, 8))
    assert in_phase < 8 <= after  # batches of 4: the phase covers documents 0-7
    for P in (int(starts[in_phase]) + C + 5, int(starts[after]) + C + 5):
        changed = changed_after(val.tokens, P, val.bos_id)
        assert torch.equal(changed == val.bos_id, val.tokens == val.bos_id) and changed[P] != val.tokens[P]
        model.load_state_dict(base)
        _, b = lora_scores(model, args, val_set(changed, val.byte_tables, val.bos_id), tmp_path, "b")
        for key in ("model_nll_bits", "nll_bits", "entropy_bits"):
            assert np.array_equal(a[key][:P - 1], b[key][:P - 1]), (key, P)  # targets 1 .. P-1
        assert a["model_nll_bits"][P - 1] != b["model_nll_bits"][P - 1]
    assert a_result["audit_positions"] > 0 and a_result["audit_max_abs_err"] <= 1e-9


@pytest.mark.parametrize("context", [0, 16])
def test_a_documents_scores_do_not_depend_on_its_batch(tmp_path, tiny_tokenizer, tiny_data, context):
    n = 600
    results = {}
    for per_batch in (1, 3, 64):
        model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, n, TTT_LORA_BATCH_DOCS=per_batch, TTT_LORA_CONTEXT=context)
        results[per_batch] = lora_scores(model, args, val, tmp_path, f"batch{per_batch}")[1]["model_nll_bits"]
    np.testing.assert_allclose(results[1], results[3], rtol=0, atol=1e-5)
    np.testing.assert_allclose(results[1], results[64], rtol=0, atol=1e-5)


def test_adapters_learn_and_the_first_chunk_of_each_document_is_scored_fresh(tmp_path, tiny_tokenizer, tiny_data):
    n = 800
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, n, TTT_LORA_LR=0.03)
    learned, dump = lora_scores(model, args, val, tmp_path, "learn")
    still, still_dump = lora_scores(*tiny_lora_setup(tiny_tokenizer, tiny_data, n, TTT_LORA_LR=1e-12), tmp_path, "still")
    starts, lengths = train_gpt.document_spans(val.tokens, val.bos_id)
    first_chunk = np.zeros(n, dtype=bool)
    for s, length in zip(starts.tolist(), lengths.tolist()):
        first_chunk[s:s + min(length, args.ttt_lora_chunk)] = True
    # before any step a document's adapters are fresh: its first chunk scores as the base model alone
    assert np.array_equal(dump["model_nll_bits"][first_chunk], still_dump["model_nll_bits"][first_chunk])
    assert (dump["model_nll_bits"][~first_chunk] != still_dump["model_nll_bits"][~first_chunk]).mean() > 0.9
    assert learned["val_bpb"] < still["val_bpb"] - 0.01  # on this repetitive toy text the adapters must help
    # the base model without adapters, document by document, is what a learning rate of ~0 scores
    with torch.no_grad():
        doc = int(torch.argmax(lengths))
        s, length = int(starts[doc]), int(lengths[doc])
        ids = val.tokens[s:s + min(length, SEQ)][None]
        log_probs = torch.log_softmax(model.head(model.hidden(ids)).double() / args.ttt_temperature, -1)[0]
        nll = -log_probs.gather(1, val.tokens[s + 1:s + 1 + ids.size(1), None]).squeeze(1) / np.log(2)
    np.testing.assert_allclose(still_dump["model_nll_bits"][s:s + ids.size(1)], nll.float().numpy(), rtol=1e-5)


def test_progress_reports_batches_with_an_eta_from_the_steps_left(monkeypatch, tiny_tokenizer, tiny_data):
    """Where every step (and context piece) takes the same time, the ETA (planned on the CPU from the
    documents' lengths: a batch has as many steps as its longest document has chunks, after one piece
    of context here) is exact; the header line gives the steps."""
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, 300, TTT_LORA_BATCH_DOCS=5, EVAL_SEQ_LEN=8, EVAL_STRIDE=8, TTT_LORA_CHUNK=2,
                                       TTT_LORA_CONTEXT=4)
    starts, lengths = train_gpt.document_spans(val.tokens, val.bos_id)
    n_batches = -(-len(starts) // 5)
    clock, steps, after_batch = {"now": 0.0}, [0], []

    class FakeTime:
        @staticmethod
        def perf_counter():
            return clock["now"]
    hidden, score_documents = model.hidden, train_gpt.score_documents

    def timed_hidden(ids, **kw):  # 40 s per step: a report after every batch
        clock["now"] += 40.0
        steps[0] += 1
        return hidden(ids, **kw)

    def scoring(*a, **k):
        out = score_documents(*a, **k)
        after_batch.append(steps[0])
        return out
    monkeypatch.setattr(model, "hidden", timed_hidden)
    monkeypatch.setattr(train_gpt, "time", FakeTime)
    monkeypatch.setattr(train_gpt, "score_documents", scoring)
    lines = []
    train_gpt.lora_evaluate(model, args, train_gpt.Run(torch.device("cpu"), 0, 1, lines.append), val, "t", use_mixer=False)
    progress = [line for line in lines if line.startswith("eval:t batch:")]
    assert n_batches > 3 and steps[0] > 30 and f" steps:{steps[0] - n_batches} " in lines[0]
    assert progress == [f"eval:t batch:{k}/{n_batches} elapsed:{train_gpt.format_seconds(40 * after_batch[k - 1])} "
                        f"eta:{train_gpt.format_seconds(40 * (steps[0] - after_batch[k - 1]))}" for k in range(1, n_batches)]


def test_the_lora_pass_keeps_cudnn_attention_out(monkeypatch, tiny_tokenizer, tiny_data):
    """cuDNN's attention builds a graph per new shape, and nearly every lora step has one: the
    documents' batches run with the other backends, and the setting is back afterwards."""
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, 300, TTT_LORA_BATCH_DOCS=5)
    score_documents, seen = train_gpt.score_documents, []

    def recording(*a, **k):
        seen.append((torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()))
        return score_documents(*a, **k)
    monkeypatch.setattr(train_gpt, "score_documents", recording)
    assert torch.backends.cuda.cudnn_sdp_enabled()
    train_gpt.lora_evaluate(model, args, train_gpt.Run(torch.device("cpu"), 0, 1, lambda line: None), val, "t", use_mixer=False)
    assert len(seen) > 3 and set(seen) == {(False, True)}
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_batches_run_longest_first_on_each_side_of_the_phase(monkeypatch, tiny_tokenizer, tiny_data):
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, 600, TTT_LORA_BATCH_DOCS=3, TTT_PHASE_DOCS=4, TTT_PHASE_LR=0.001)
    starts, lengths = train_gpt.document_spans(val.tokens, val.bos_id)
    score_documents, phase_sgd, events = train_gpt.score_documents, train_gpt.phase_sgd, []

    def scoring(model, args, tokens, batch_starts, batch_lengths, *rest):
        events.append(("score", batch_starts.tolist(), batch_lengths.tolist()))
        return score_documents(model, args, tokens, batch_starts, batch_lengths, *rest)

    def phase(model, args, run, tokens, phase_starts, phase_lengths):
        events.append(("phase", phase_starts.tolist()))
        return phase_sgd(model, args, run, tokens, phase_starts, phase_lengths)
    monkeypatch.setattr(train_gpt, "score_documents", scoring)
    monkeypatch.setattr(train_gpt, "phase_sgd", phase)
    train_gpt.lora_evaluate(model, args, train_gpt.Run(torch.device("cpu"), 0, 1, lambda line: None), val, "t", use_mixer=True)
    at = [e[0] for e in events].index("phase")
    before, after = events[:at], events[at + 1:]
    assert len(starts) > 10 and events[at][1] == starts[:6].tolist()  # the phase: the first 2 batches' worth, in stream order
    assert sorted(s for e in before for s in e[1]) == starts[:6].tolist()
    assert sorted(s for e in after for s in e[1]) == starts[6:].tolist()
    for side in (before, after):
        order = [n for e in side for n in e[2]]
        assert order == sorted(order, reverse=True) and len(set(order)) > 1


@pytest.mark.parametrize("context", [0, 1, 16, 300])  # 1: one lead token before the first chunk; 300: two pieces
def test_kept_keys_and_values_score_each_document_as_one_forward_over_it(tmp_path, tiny_tokenizer, tiny_data, context):
    """With a window longer than every document and nothing learned, the chunks scored on the keys and
    values kept from earlier steps get what one forward over the whole document (led by the
    TTT_LORA_CONTEXT stream tokens before it; before the stream, its first token) gives each target:
    the ring of slots, the masks and the rotary angles at document positions, over many chunks."""
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, 500, EVAL_SEQ_LEN=512, EVAL_STRIDE=512, TTT_LORA_LR=1e-12, TTT_LORA_CHUNK=2,
                                       TTT_LORA_CONTEXT=context)
    starts, lengths = train_gpt.document_spans(val.tokens, val.bos_id)
    assert int(lengths.max()) + context <= 512 and int((lengths > 5 * args.ttt_lora_chunk).sum()) >= 10
    dump = lora_scores(model, args, val, tmp_path, "whole")[1]["model_nll_bits"]
    with torch.no_grad():
        for s, length in zip(starts.tolist(), lengths.tolist()):
            ids = val.tokens[(torch.arange(s - context, s + length)).clamp_min(0)]
            log_probs = torch.log_softmax(model.head(model.hidden(ids[None])).double() / args.ttt_temperature, -1)[0, context:]
            nll = -log_probs.gather(1, val.tokens[s + 1:s + 1 + length, None]).squeeze(1) / np.log(2)
            np.testing.assert_allclose(dump[s:s + length], nll.float().numpy(), rtol=1e-5, atol=1e-6)


def test_a_chunk_sees_the_kept_positions_of_its_window_only():
    """Windows of 8 positions, chunks of 3: the step for positions 9-11 sees the kept positions 4-8 (its
    window ends with the chunk) and the chunk causally; slots hold position p at p mod 8."""
    args = tiny_args(EVAL_SEQ_LEN=8, EVAL_STRIDE=8, TTT_LORA_CHUNK=3)
    context = train_gpt.ChunkContext(train_gpt.GPT(args), args, n_docs=2, longest=12)
    for first in (0, 3, 6, 9):
        context.step(first, 3, rows=None)
    assert context.slot_position.tolist() == [8, 9, 10, 11, 4, 5, 6, 7]
    # before the last step slots 1-3 held positions 1-3, outside its window; position 8 was in slot 0
    assert torch.equal(context.mask[:, :8], torch.tensor([True, False, False, False, True, True, True, True]).expand(3, -1))
    assert torch.equal(context.mask[:, 8:], torch.ones(3, 3, dtype=torch.bool).tril())
    cos, sin = train_gpt.rotary_tables(12, args.rope_dims, args.rope_base)
    assert torch.equal(context.rotary[0], cos[:, 9:12]) and torch.equal(context.rotary[1], sin[:, 9:12])


def test_the_default_context_is_what_the_window_has_room_for_beside_a_chunk():
    assert tiny_args(EVAL_SEQ_LEN=32, EVAL_STRIDE=32, TTT_LORA_CHUNK=8).ttt_lora_context == 24
    assert tiny_args(EVAL_SEQ_LEN=32, EVAL_STRIDE=32, TTT_LORA_CHUNK=8, TTT_LORA_CONTEXT=0).ttt_lora_context == 0
    for bad in (-2, 25):
        with pytest.raises(train_gpt.UserError, match="TTT_LORA_CONTEXT"):
            tiny_args(EVAL_SEQ_LEN=32, EVAL_STRIDE=32, TTT_LORA_CHUNK=8, TTT_LORA_CONTEXT=bad, TTT_MODE="lora")


def documents_scored(model, args, val, starts, lengths) -> torch.Tensor:
    """score_documents on one batch of these documents; -log p of every target (0 where not scored)."""
    scores = torch.zeros(2, len(val.tokens), dtype=torch.float64)
    train_gpt.score_documents(model, args, val.tokens, starts, lengths, scores, [])
    return scores[0]


@pytest.mark.parametrize("context", [0, 5])
def test_documents_that_finish_anywhere_in_a_batch_score_as_alone(tiny_tokenizer, tiny_data, context):
    """Documents in stream order, so the ones still running are not the first rows of the batch: each
    scores as it does in a batch of its own (the rows path of the adapters and the kept keys and values)."""
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, 400, TTT_LORA_CONTEXT=context)
    starts, lengths = (t[:8] for t in train_gpt.document_spans(val.tokens, val.bos_id))
    assert not torch.equal(lengths, lengths.sort(descending=True).values) and lengths[0] < lengths.max()
    together = documents_scored(model, args, val, starts, lengths)
    for d in range(8):
        alone = documents_scored(model, args, val, starts[d:d + 1], lengths[d:d + 1])
        targets = slice(int(starts[d]), int(starts[d] + lengths[d]))
        torch.testing.assert_close(together[targets], alone[targets], rtol=0, atol=1e-6)


def test_the_ring_of_slots_keeps_what_a_store_without_reuse_would(monkeypatch, tiny_tokenizer, tiny_data):
    """Windows of 8 positions over documents of up to ~20, learning on: the ring reuses each slot
    every 8 positions and scores what a store giving every position a slot of its own (the same
    window for the queries) scores."""
    class NoReuse(train_gpt.ChunkContext):
        def __init__(self, model, args, n_docs, longest):
            super().__init__(model, args, n_docs, longest)
            self.bound, self.window = args.eval_seq_len, longest
            self.slot_position = torch.full((longest,), -1)

        def step(self, first, n, rows):
            positions = torch.arange(first, first + n)
            self.rows, self.slots, self.lead = rows, positions, min(2, first)
            seen = self.slot_position >= max(0, first + n - self.bound)
            self.mask = torch.cat((seen.expand(n, -1), torch.ones(n, n, dtype=torch.bool).tril()), 1)
            self.rotary = (self.cos[:, first:first + n], self.sin[:, first:first + n])
            self.slot_position[positions] = positions
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, 400, EVAL_SEQ_LEN=8, EVAL_STRIDE=8, TTT_LORA_CHUNK=2, TTT_LORA_CONTEXT=3)
    starts, lengths = (t[:12] for t in train_gpt.document_spans(val.tokens, val.bos_id))
    assert int(lengths.max()) + 3 > 2 * 8  # the ring goes round twice
    ring = documents_scored(model, args, val, starts, lengths)
    monkeypatch.setattr(train_gpt, "ChunkContext", NoReuse)
    torch.testing.assert_close(documents_scored(model, args, val, starts, lengths), ring, rtol=1e-5, atol=1e-6)
