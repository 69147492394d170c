"""TTT_MODE=lora in-process: documents cut at BOS cover every target once, fresh adapters change
nothing, Adam steps each row from its own start, rows take the next document as they free up,
every target is scored before anything learns from it (a changed token changes no score before
it, with and without the phase's SGD and the stream context), a document's scores do not depend
on its batch (its adapters start fresh), the adapters do learn, and chunks scored on kept keys and
values get what one forward over the document (and its context) gives."""
import contextlib
import re

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
    """lora_evaluate with the mixer on; returns its result (with its log lines under "log") and its per-token dump."""
    dump, lines = tmp_path / f"{name}.npz", []
    result = train_gpt.lora_evaluate(model, args, train_gpt.Run(torch.device("cpu"), 0, 1, lines.append), val, name,
                                     use_mixer=True, dump_path=str(dump))
    return dict(result, log=lines), dict(np.load(dump))


def test_fresh_adapters_change_nothing_and_every_target_adapts(tiny_tokenizer, tiny_data):
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, 100, TTT_LORA_TARGETS="q,k,v,o,mlp,head")
    ids = val.tokens[:2 * SEQ].view(2, SEQ)
    adapters = train_gpt.DocumentAdapters(model, args.ttt_lora_targets, 4, 2, seed=0, lr=0.01)
    runs = len(model.layer_orders[True])
    assert runs == args.num_layers + 1  # layer 1 runs twice: an adapter for each run
    assert sorted(adapters.matrices) == sorted([f"{p}_{t}" for p in range(runs) for t in "q k v o mlp".split()] + ["out_head"])
    with torch.no_grad():
        plain = model.head(model.hidden(ids))
        assert torch.equal(model.head(model.hidden(ids, adapters=adapters), adapters), plain)
        for key in adapters.matrices:
            adapters.matrices[key][1].normal_()  # B: a view of weights
            changed = model.head(model.hidden(ids, adapters=adapters), adapters)
            assert not torch.allclose(changed, plain), key
            adapters.matrices[key][1].zero_()
        adapters.matrices["0_v"][1][1].normal_()  # row 1's adapter only
        changed = model.head(model.hidden(ids, adapters=adapters), adapters)
        assert torch.equal(changed[0], plain[0]) and not torch.allclose(changed[1], plain[1])
    a = adapters.matrices["0_q"][0]
    assert torch.equal(a[0], a[1]) and a.abs().max() <= 1 / np.sqrt(a.size(2))  # every document starts from the same A
    adapters.reset(torch.tensor([1]))
    assert torch.equal(adapters.weights[0], adapters.weights[1])
    # the backward adds every matrix's gradient into its place in the one `grad` tensor
    adapters.grad.zero_()
    model.head(model.hidden(ids, adapters=adapters), adapters).square().sum().backward()
    for key, (a, b) in adapters.matrices.items():
        assert a.is_leaf and a.grad.untyped_storage().data_ptr() == adapters.grad.untyped_storage().data_ptr()
    assert int((adapters.grad != 0).sum()) > adapters.grad.numel() // 4


def test_adapters_learn_by_adam_with_a_step_count_per_row():
    """learn() is Adam with betas (0, 0.999) and eps 1e-10, as torch.optim.Adam steps it, in each row
    from the row's own first step: a row that took a new document (reset) starts its count again,
    and a row that does not learn (its document's last chunk) keeps its weights."""
    torch.manual_seed(0)
    args = tiny_args(LOOP_LAYERS="")
    adapters = train_gpt.DocumentAdapters(train_gpt.GPT(args), ("q", "head"), 2, 2, seed=0, lr=0.01)
    reference = [torch.nn.Parameter(adapters.weights[r].detach().clone()) for r in range(2)]
    optimizers = [torch.optim.Adam([p], lr=0.01, betas=(0.0, 0.999), eps=1e-10) for p in reference]
    for step in range(6):
        grads = torch.randn_like(adapters.weights)
        learns = torch.tensor([True, step != 2])  # row 1's document ends at step 2
        if step == 3:  # row 1 takes a new document
            adapters.reset(torch.tensor([1]))
            reference[1].data.copy_(adapters.start)
            optimizers[1] = torch.optim.Adam([reference[1]], lr=0.01, betas=(0.0, 0.999), eps=1e-10)
        adapters.grad.copy_(grads * learns[:, None])
        before = adapters.weights.detach().clone()
        adapters.learn(learns)
        assert torch.equal(adapters.weights[~learns], before[~learns])
        for r in range(2):
            if learns[r]:
                reference[r].grad = grads[r].clone()
                optimizers[r].step()
            torch.testing.assert_close(adapters.weights[r], reference[r].detach(), rtol=0, atol=1e-6)  # rounding apart


@pytest.mark.parametrize("rows", [1, 3])
def test_rows_take_the_next_document_as_they_free_up(rows):
    """plan_rows: each document holds one row for as many consecutive steps as it has chunks, from its
    chunk 0; rows take documents in order as they free up, so no row is idle while documents wait; a
    document's context is given at or before its first step, in a page no held document has."""
    n_chunks = [5, 1, 3, 1, 1, 2, 4, 1]
    plan, fills = train_gpt.plan_rows(n_chunks, rows)
    documents, chunks, pages = plan.unbind(1)
    assert plan.shape == (len(plan), 3, rows) and len(plan) < sum(n_chunks) / rows + max(n_chunks)
    seen, given = {}, {}  # document: (first step, last step); (step its context is given, its page)
    for s in range(len(plan)):
        for d, p in zip(*fills.get(s, ([], []))):
            given[d] = (s, p)
        held = [d for d in documents[s].tolist() if d >= 0]
        assert len({given[d][1] for d in held}) == len(held) and (pages[s][documents[s] < 0] == 2 * rows).all()
        for r in range(rows):
            d = int(documents[s, r])
            if d >= 0:
                first, _ = seen.setdefault(d, (s, s))
                seen[d] = (first, s)
                assert int(chunks[s, r]) == s - first and int(pages[s, r]) == given[d][1] < 2 * rows and given[d][0] <= first
                assert s == first or int(documents[s - 1, r]) == d  # one row throughout
    for s in range(len(plan)):  # a row is idle only when no document waits
        assert (documents[s] >= 0).all() or all(first <= s for first, _ in seen.values())
    assert all(last - first + 1 == n_chunks[d] for d, (first, last) in seen.items()) and len(seen) == len(n_chunks)
    assert [seen[d][0] for d in range(len(n_chunks))] == sorted(seen[d][0] for d in range(len(n_chunks)))  # taken in order


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
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, n, TTT_PHASE_DOCS=phase_docs, TTT_PHASE_LR=0.05, TTT_LORA_CONTEXT=context,
                                       NGRAM_AUDIT_POSITIONS=4)  # fewer than the steps: the lora audit does not use it
    starts, lengths = train_gpt.document_spans(val.tokens, val.bos_id)
    assert len(starts) > 12 and (lengths[8:] > 2 * args.ttt_lora_chunk).any()  # several batches; documents of several chunks
    base = {k: v.clone() for k, v in model.state_dict().items()}
    a_result, a = lora_scores(model, args, val, tmp_path, "a")
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, base[k])]
    assert bool(moved) == (phase_docs > 0)  # the phase changed the base weights
    # inside a chunk, one chunk into a document: one inside the phase, one after it
    C = args.ttt_lora_chunk
    in_phase, after = (next(d for d in range(first, len(starts)) if lengths[d] > 2 * C) for first in (0, 8))
    assert in_phase < 6 <= after  # the phase covers documents 0-5
    for P in (int(starts[in_phase]) + C + 5, int(starts[after]) + C + 5):
        changed = changed_after(val.tokens, P, val.bos_id)
        assert torch.equal(changed == val.bos_id, val.tokens == val.bos_id) and changed[P] != val.tokens[P]
        model.load_state_dict(base)
        _, b = lora_scores(model, args, val_set(changed, val.byte_tables, val.bos_id), tmp_path, "b")
        for key in ("model_nll_bits", "nll_bits", "entropy_bits"):
            assert np.array_equal(a[key][:P - 1], b[key][:P - 1]), (key, P)  # targets 1 .. P-1
        assert a["model_nll_bits"][P - 1] != b["model_nll_bits"][P - 1]
    steps = int(re.search(r" steps_rank0:(\d+) ", a_result["log"][0])[1])
    assert a_result["audit_positions"] == steps and a_result["audit_max_abs_err"] <= 1e-9  # one position of every step


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


def test_progress_reports_steps_with_an_eta_from_the_steps_left(monkeypatch, tiny_tokenizer, tiny_data):
    """Where every step takes the same time, the ETA (the rank's steps, planned on the CPU from the
    documents' lengths) is exact; the header line gives the steps."""
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, 300, TTT_LORA_BATCH_DOCS=5, EVAL_SEQ_LEN=8, EVAL_STRIDE=8, TTT_LORA_CHUNK=2)
    starts, lengths = train_gpt.document_spans(val.tokens, val.bos_id)
    clock, steps = {"now": 0.0}, [0]

    class FakeTime:
        @staticmethod
        def perf_counter():
            return clock["now"]
    hidden = model.hidden

    def timed_hidden(ids, **kw):  # 40 s per step (no context: one forward a step): a report after every step
        clock["now"] += 40.0
        steps[0] += 1
        return hidden(ids, **kw)
    monkeypatch.setattr(model, "hidden", timed_hidden)
    monkeypatch.setattr(train_gpt, "time", FakeTime)
    lines = []
    train_gpt.lora_evaluate(model, args, train_gpt.Run(torch.device("cpu"), 0, 1, lines.append), val, "t", use_mixer=False)
    n = steps[0]
    assert n == len(train_gpt.plan_rows((-(-lengths.sort(descending=True).values // 2)).tolist(), 5)[0]) and f" steps_rank0:{n} " in lines[0]
    assert n < int((-(-lengths // 2)).sum()) / 5 + int(lengths.max()) / 2  # rows refill: about the chunks over the rows
    progress = [line for line in lines if line.startswith("eval:t step:")]
    assert progress == [f"eval:t step:{k}/{n} elapsed:{train_gpt.format_seconds(40 * k)} eta:{train_gpt.format_seconds(40 * (n - k))}"
                        for k in range(1, n)]


def test_the_lora_pass_keeps_cudnn_attention_out(monkeypatch, tiny_tokenizer, tiny_data):
    """cuDNN's attention builds a graph per new shape, and the rows of a context run vary: the pass
    runs with the other backends, and the setting is back afterwards."""
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, 300, TTT_LORA_BATCH_DOCS=5)
    score_documents, seen = train_gpt.score_documents, []

    def recording(*a, **k):
        seen.append((torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()))
        return score_documents(*a, **k)
    monkeypatch.setattr(train_gpt, "score_documents", recording)
    assert torch.backends.cuda.cudnn_sdp_enabled()
    train_gpt.lora_evaluate(model, args, train_gpt.Run(torch.device("cpu"), 0, 1, lambda line: None), val, "t", use_mixer=False)
    assert seen == [(False, True)]
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_documents_run_longest_first_on_each_side_of_the_phase(monkeypatch, tiny_tokenizer, tiny_data):
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, 600, TTT_LORA_BATCH_DOCS=3, TTT_PHASE_DOCS=4, TTT_PHASE_LR=0.001)
    starts, lengths = train_gpt.document_spans(val.tokens, val.bos_id)
    score_documents, phase_sgd, events = train_gpt.score_documents, train_gpt.phase_sgd, []

    def scoring(model, args, tokens, side_starts, side_lengths, plan, fills, *rest):
        taken = [int(d) for d in plan[:, 0].flatten() if d >= 0]  # documents in the order they take rows
        events.append(("score", side_starts.tolist(), side_lengths[sorted(set(taken), key=taken.index)].tolist()))
        return score_documents(model, args, tokens, side_starts, side_lengths, plan, fills, *rest)

    def phase(model, args, run, tokens, phase_starts, phase_lengths):
        events.append(("phase", phase_starts.tolist()))
        return phase_sgd(model, args, run, tokens, phase_starts, phase_lengths)
    monkeypatch.setattr(train_gpt, "score_documents", scoring)
    monkeypatch.setattr(train_gpt, "phase_sgd", phase)
    train_gpt.lora_evaluate(model, args, train_gpt.Run(torch.device("cpu"), 0, 1, lambda line: None), val, "t", use_mixer=True)
    assert [e[0] for e in events] == ["score", "phase", "score"] and len(starts) > 10
    assert events[1][1] == starts[:4].tolist()  # the phase: the first 4 documents, in stream order
    assert sorted(events[0][1]) == starts[:4].tolist() and sorted(events[2][1]) == starts[4:].tolist()
    for side in (events[0], events[2]):
        assert side[2] == sorted(side[2], reverse=True) and len(set(side[2])) > 1


@pytest.mark.parametrize("context", [0, 1, 16, 300])  # 1: one lead token before the first chunk; 300: longer than the documents
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
    window ends with the chunk) and the chunk causally; slots hold position p at p mod 8. A row in
    another page, at other positions, has its own slots, mask and rotary angles."""
    args = tiny_args(EVAL_SEQ_LEN=8, EVAL_STRIDE=8, TTT_LORA_CHUNK=3)
    context = train_gpt.ChunkContext(train_gpt.GPT(args), args, n_pages=3, longest=12)
    for first, other, page in ((0, 0, 1), (3, 0, 0), (6, 3, 0), (9, 6, 0)):  # row 1: a document in page 0 from the second step
        context.step(torch.tensor([first, other]), 3, torch.tensor([2, page]), lead=min(2, first))
    assert context.slot_position[2].tolist() == [8, 9, 10, 11, 4, 5, 6, 7]
    assert context.slot_position[0].tolist() == [8, 1, 2, 3, 4, 5, 6, 7] and context.slot_position[1].tolist() == [0, 1, 2] + [-1] * 5
    # before the last step slots 1-3 held positions 1-3, outside its window; position 8 was in slot 0
    assert context.mask.shape == (2, 1, 3, 11)
    assert torch.equal(context.mask[0, 0, :, :8], torch.tensor([True, False, False, False, True, True, True, True]).expand(3, -1))
    assert torch.equal(context.mask[1, 0, :, :8], torch.tensor([False, True, True, True, True, True, False, False]).expand(3, -1))
    assert torch.equal(context.mask[:, 0, :, 8:], torch.ones(2, 3, 3, dtype=torch.bool).tril())
    cos, sin = train_gpt.rotary_tables(12, args.rope_dims, args.rope_base)
    assert torch.equal(context.rotary[0][0], cos[0, 9:12]) and torch.equal(context.rotary[1][1], sin[0, 6:9])
    context.step(torch.tensor([0, 1]), 3, torch.tensor([1, 2]), lead=2, begins=True)  # inputs from position -2 and -1
    assert context.begins.tolist() == [[False, False, True, False, False], [False, True, False, False, False]]


def test_the_default_context_is_what_the_window_has_room_for_beside_a_chunk():
    assert tiny_args(EVAL_SEQ_LEN=32, EVAL_STRIDE=32, TTT_LORA_CHUNK=8).ttt_lora_context == 24
    assert tiny_args(EVAL_SEQ_LEN=32, EVAL_STRIDE=32, TTT_LORA_CHUNK=8, TTT_LORA_CONTEXT=0).ttt_lora_context == 0
    for bad in (-2, 25):
        with pytest.raises(train_gpt.UserError, match="TTT_LORA_CONTEXT"):
            tiny_args(EVAL_SEQ_LEN=32, EVAL_STRIDE=32, TTT_LORA_CHUNK=8, TTT_LORA_CONTEXT=bad, TTT_MODE="lora")


def documents_scored(model, args, val, starts, lengths) -> torch.Tensor:
    """score_documents on these documents, in this order; -log p of every target (0 where not scored)."""
    scores = torch.zeros(2, len(val.tokens), dtype=torch.float64)
    plan, fills = train_gpt.plan_rows((-(-lengths // args.ttt_lora_chunk)).tolist(), min(args.ttt_lora_batch_docs, len(starts)))
    train_gpt.score_documents(model, args, val.tokens, starts, lengths, plan, fills, scores, [])
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
        def __init__(self, model, args, n_pages, longest):
            super().__init__(model, args, n_pages, longest)
            self.bound, self.window = args.eval_seq_len, longest
            self.slot_position = torch.full((n_pages, longest), -1)

        def step(self, first, n, pages, lead, begins=False, empty=False):
            positions = first[:, None] + torch.arange(n)
            self.pages, self.slots, self.lead, self.begins, self.mask = pages, positions, lead, None, None
            if not empty:
                seen = self.slot_position[pages] >= (first + n - self.bound).clamp_min(0)[:, None]
                self.mask = torch.cat((seen[:, None].expand(-1, n, -1), torch.ones(n, n, dtype=torch.bool).tril().expand(len(pages), -1, -1)), 2)[:, None]
            self.rotary = (self.cos[positions], self.sin[positions])
            self.slot_position[pages[:, None], positions] = positions
    model, args, val = tiny_lora_setup(tiny_tokenizer, tiny_data, 400, EVAL_SEQ_LEN=8, EVAL_STRIDE=8, TTT_LORA_CHUNK=2, TTT_LORA_CONTEXT=3)
    starts, lengths = (t[:12] for t in train_gpt.document_spans(val.tokens, val.bos_id))
    assert int(lengths.max()) + 3 > 2 * 8  # the ring goes round twice
    ring = documents_scored(model, args, val, starts, lengths)
    monkeypatch.setattr(train_gpt, "ChunkContext", NoReuse)
    torch.testing.assert_close(documents_scored(model, args, val, starts, lengths), ring, rtol=1e-5, atol=1e-6)


def test_a_step_that_cannot_be_captured_runs_eagerly_with_a_warning(monkeypatch):
    """On CUDA the step is warmed up, then captured as a graph; if the capture fails, the pass logs a
    WARNING and runs the step itself (the same scores, only slower) instead of stopping. CUDA's
    streams and graphs are stood in for here: a step that raises while being captured."""
    capturing, calls, lines = [False], [], []

    class Stream:
        def wait_stream(self, other):
            pass

    class Graph:
        def __enter__(self):
            capturing[0] = True

        def __exit__(self, *exc):
            capturing[0] = False
            return False
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: None)
    monkeypatch.setattr(torch.cuda, "graph", lambda graph: Graph())

    def step():
        if capturing[0]:
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
        calls.append(1)
        return "scores"
    run = train_gpt.replayable(step, torch.device("cuda"), lines.append)
    assert run is step and len(calls) == 3  # the warm-up ran; the step itself comes back
    assert lines == ["WARNING: the lora step could not be captured as a CUDA graph (operation not permitted when stream is "
                     "capturing); it runs eagerly, slower"]
    assert run() == "scores"
