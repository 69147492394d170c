"""The eval-time n-gram cache: exact n-gram ids and earlier-target counts (Occurrences) against a
brute-force dict count, and normalization of the mixed distribution over the vocabulary."""
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

import train_gpt
from conftest import tiny_args

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- helpers

def make_mixer(tokens: torch.Tensor, vocab: int, order: int, discount: float = 0.75, floor: torch.Tensor | None = None) -> train_gpt.NgramMixer:
    args = tiny_args(VOCAB_SIZE=vocab, NGRAM_ORDER=order, NGRAM_DISCOUNT=discount)
    return train_gpt.NgramMixer(args, tokens, floor)


def repetitive_stream(n: int, vocab: int, seed: int) -> torch.Tensor:
    """Random tokens with copies of earlier spans mixed in, so long contexts recur (like text)."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    while len(out) < n:
        if len(out) > 20 and rng.random() < 0.5:
            start = int(rng.integers(0, len(out) - 10))
            out.extend(out[start:start + int(rng.integers(3, 15))])
        else:
            out.extend(rng.integers(0, vocab, size=int(rng.integers(1, 8))).tolist())
    return torch.tensor(out[:n], dtype=torch.long)


class BruteNgrams:
    """Pure-Python reference: N(v), N(ctx) and N(ctx, v) over the targets added so far, every
    context length 1..max_context that fits before the target (and starts at or after floor[t - 1]
    for target t, if floors are given), and the cache distribution q."""

    def __init__(self, max_context: int, floor: list[int] | None = None):
        self.max_context, self.floor = max_context, floor
        self.unigram: Counter = Counter()
        self.ctx: Counter = Counter()
        self.next: dict[tuple, Counter] = defaultdict(Counter)
        self.added: set[int] = set()

    def add(self, tokens: list[int], first: int, end: int):
        """Targets first .. end-1 are scored: now they count."""
        for t in range(max(first, 1), end):
            assert t not in self.added  # the test never adds a target twice
            self.added.add(t)
            self.unigram[tokens[t]] += 1
            for m in range(1, min(self.max_context, t - self.first_context(t)) + 1):
                c = tuple(tokens[t - m:t])
                self.ctx[c] += 1
                self.next[c][tokens[t]] += 1

    def first_context(self, t: int) -> int:
        return self.floor[t - 1] if self.floor else 0

    def q(self, tokens: list[int], pos: int, discount: float, vocab: int) -> tuple[np.ndarray, int]:
        """Interpolated absolute discounting from add-one unigram up to the longest seen context;
        also that context's length (0: none seen)."""
        total = sum(self.unigram.values())
        row = np.array([(self.unigram[v] + 1) / (total + vocab) for v in range(vocab)])
        longest = 0
        for m in range(1, min(self.max_context, pos - self.first_context(pos)) + 1):
            c = tuple(tokens[pos - m:pos])
            n = self.ctx[c]
            if n == 0:
                break
            after = self.next[c]
            row = (np.array([max(after[v] - discount, 0) for v in range(vocab)]) + discount * len(after) * row) / n
            longest = m
        return row, longest


def full_rows(mixer, model_p, entropy, tokens, positions):
    vocab = model_p.size(1)
    return mixer.probabilities(model_p, entropy, positions, torch.arange(vocab).expand(len(positions), -1))[0]


def all_columns(mixer, tokens, positions):
    return mixer.cache_probabilities(positions, torch.arange(mixer.vocab).expand(len(positions), -1))


def random_model_rows(n: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g, dtype=torch.float64) * torch.rand(n, 1, generator=g, dtype=torch.float64) * 6
    p = torch.softmax(logits, dim=1)
    return p, -(p * p.log()).sum(1)


def brute_force_matches(mixer, brute: BruteNgrams, tokens, checks: torch.Tensor, discount: float) -> int:
    """Target by target in stream order: q and the longest context of every target in `checks`
    (asked of the mixer in one call) equal the brute-force ones over the targets before it.
    Returns the longest context length seen."""
    listed = tokens.tolist()
    q, longest = all_columns(mixer, tokens, checks)
    row = {pos: i for i, pos in enumerate(checks.tolist())}
    for pos in range(1, len(listed)):
        if pos in row:
            i = row[pos]
            expected, expected_longest = brute.q(listed, pos, discount, mixer.vocab)
            assert int(longest[i]) == expected_longest, pos
            np.testing.assert_allclose(q[i].numpy(), expected, rtol=1e-12, atol=1e-15, err_msg=str(pos))
        brute.add(listed, pos, pos + 1)
    return int(longest.max())


def entropy_bin(entropy_nats: float) -> int:
    return min(int(entropy_nats / np.log(2)), train_gpt.NgramMixer.ENTROPY_BINS - 1)


# ----------------------------------------------------------------------------- 1. normalization

@pytest.mark.parametrize("discount", [0.0, 0.75, 1.0])
@pytest.mark.parametrize("order", [2, 3, 10])
def test_mixed_rows_sum_to_one_and_follow_the_documented_formula(order, discount):
    vocab, n, batch = 16, 400, 100
    tokens = repetitive_stream(n, vocab, seed=order * 10 + int(discount * 4))
    listed = tokens.tolist()
    mixer = make_mixer(tokens, vocab, order, discount)
    # a learned alpha per bin: bin b prefers candidate b % 20 (all 20 candidates, 0 and 0.95 included)
    bins = mixer.alpha_losses.size(0)
    mixer.alpha_losses[torch.arange(bins), torch.arange(bins) % len(mixer.ALPHAS)] = -1.0
    brute, longest_seen = BruteNgrams(order - 1), 0
    for c in range(4):  # the targets in batches of 100, in stream order
        positions = torch.arange(c * batch + 1, min((c + 1) * batch, n - 1) + 1)
        target = tokens[positions, None]
        model_p, _ = random_model_rows(len(positions), vocab, seed=c)
        entropy = torch.linspace(0.0, 7.0, len(positions), dtype=torch.float64)  # every entropy bin
        p = full_rows(mixer, model_p, entropy, tokens, positions)
        assert p.dtype == torch.float64 and p.shape == (len(positions), vocab)
        assert (p >= 0).all()
        err = (p.sum(1) - 1).abs()
        assert err.max() <= 1e-9, (c, int(err.argmax()))
        # what is scored (target column only) is exactly what is audited (full row)
        scored = mixer.probabilities(model_p.gather(1, target), entropy, positions, target)[0]
        assert torch.equal(scored.squeeze(1), p.gather(1, target).squeeze(1)), c
        # and both follow p = (1 - alpha) p_model + alpha q, q and alpha's bin from the brute force
        # over the targets before each one
        for i, pos in enumerate(positions.tolist()):
            q, longest = brute.q(listed, pos, discount, vocab)
            assert pos > 1 or longest == 0
            longest_seen = max(longest_seen, longest)
            b = longest * mixer.ENTROPY_BINS + entropy_bin(float(entropy[i]))
            alpha = mixer.ALPHAS[b % len(mixer.ALPHAS)]
            expected = (1 - alpha) * model_p[i] + alpha * torch.from_numpy(q)
            torch.testing.assert_close(p[i], expected, rtol=0, atol=1e-12)
            brute.add(listed, pos, pos + 1)  # target pos is scored: now it counts
    assert longest_seen == order - 1


def test_alpha_is_zero_without_history_then_the_best_candidate_of_each_bin():
    vocab, n = 12, 601
    tokens = repetitive_stream(n, vocab, seed=5)
    mixer = make_mixer(tokens, vocab, 4)
    positions = torch.arange(301, 601)
    model_p, entropy = random_model_rows(len(positions), vocab, seed=5)
    target = tokens[positions, None]
    # nothing learned yet: alpha = 0 everywhere, so p is the model's, bit for bit
    p, q, bins = mixer.probabilities(model_p, entropy, positions, torch.arange(vocab).expand(len(positions), -1))
    assert torch.equal(p, model_p)
    # learn from the first half of the positions, score the second half
    first, second = slice(0, 150), slice(150, None)
    p_t = model_p.gather(1, target).squeeze(1)
    q_t = q.gather(1, target).squeeze(1)
    mixer.alpha_losses += mixer.alpha_loss_table(p_t[first], q_t[first], bins[first])
    expected_alpha = {}
    for b in set(bins[first].tolist()):
        rows = [i for i in range(150) if int(bins[i]) == b]
        nll = [sum(-np.log((1 - a) * float(p_t[i]) + a * float(q_t[i])) for i in rows) for a in mixer.ALPHAS]
        expected_alpha[b] = mixer.ALPHAS[int(np.argmin(nll))]
    assert any(a > 0 for a in expected_alpha.values()) and len(expected_alpha) >= 3
    again = mixer.probabilities(p_t[second, None], entropy[second], positions[second], target[second])[0].squeeze(1)
    for j, i in enumerate(range(150, len(positions))):
        alpha = expected_alpha.get(int(bins[i]), 0.0)  # a bin never seen keeps alpha = 0
        assert float(again[j]) == pytest.approx((1 - alpha) * float(p_t[i]) + alpha * float(q_t[i]), abs=1e-12)


# ----------------------------------------------------------------------------- 2. exact counts

# (vocab, NGRAM_ORDER, NGRAM_DISCOUNT, stream length, seed)
COUNT_CASES = [(2, 4, 0.75, 300, 0), (3, 10, 0.5, 400, 1), (5, 10, 0.0, 500, 2), (8, 3, 1.0, 600, 3),
               (8, 10, 0.75, 600, 4), (1024, 10, 0.75, 1500, 5), (1024, 5, 0.3, 1500, 6)]


@pytest.mark.parametrize("vocab, order, discount, n, seed", COUNT_CASES)
def test_q_equals_brute_force_counts_of_earlier_targets(vocab, order, discount, n, seed):
    tokens = repetitive_stream(n, vocab, seed)
    checks = torch.arange(1, n)
    if vocab > 64:  # mostly rare tokens, with a few very frequent ones: short and long repeats; the first and last 250 targets
        tokens = torch.where(torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.3, tokens % 7, tokens)
        checks = torch.cat((checks[:250], checks[-250:]))
    mixer = make_mixer(tokens, vocab, order, discount)
    assert brute_force_matches(mixer, BruteNgrams(order - 1), tokens, checks, discount) >= min(3, order - 1)  # long contexts really were used


@pytest.mark.parametrize("vocab, seed", [(3, 3), (3, 0), (6, 1), (64, 2)])
def test_q_with_document_floors_equals_brute_force_counts_inside_documents(vocab, seed):
    """TTT_MODE=lora's mixer: a target's counts cover every target before it, in stream order, but
    contexts and counted n-grams never reach before its document's start."""
    n, order, discount = 400, 6, 0.75
    tokens = repetitive_stream(n, vocab, seed)
    cuts = sorted(set(np.random.default_rng(seed).integers(1, n - 1, size=25).tolist()))
    starts, lengths = torch.tensor([0] + cuts), torch.diff(torch.tensor([0] + cuts + [n - 1]))
    floor = starts[torch.repeat_interleave(torch.arange(len(starts)), lengths)]  # of each target (index t - 1)
    mixer = make_mixer(tokens, vocab, order, discount, floor)
    assert brute_force_matches(mixer, BruteNgrams(order - 1, floor.tolist()), tokens, torch.arange(1, n), discount) >= 3


def test_ngrams_count_once_both_ends_are_scored_and_never_at_their_own_target():
    vocab = 4
    tokens = torch.tensor([0, 1, 2, 3, 0, 1, 2])  # targets 1..6
    mixer = make_mixer(tokens, vocab, 3, discount=0.0)  # no discount: plain relative frequencies
    q, longest = all_columns(mixer, tokens, torch.tensor([4, 5, 6]))
    # target 4 (context 2 3): (3) was never a context before it: unigram of targets 1..3
    assert longest[0] == 0 and torch.allclose(q[0], torch.tensor([1, 2, 2, 2], dtype=torch.float64) / 7)
    # target 5 (context 3 0): (3 0) is a context first at target 5 itself: not counted; (0) -> 1 once, at target 1
    assert longest[1] == 1 and q[1].tolist() == [0, 1, 0, 0]
    # target 6 (context 0 1): the 3-gram (0 1 2) ended at target 2, its context reaching back to token 0
    assert longest[2] == 2 and q[2].tolist() == [0, 0, 1, 0]
    # the target just before counts: context (0) was seen at targets 1 and 5 when target 6 is scored
    assert mixer.as_context[1].before(tokens[:1], torch.tensor([5])).tolist() == [2]
    assert mixer.as_context[1].before(tokens[:1], torch.tensor([4])).tolist() == [1]  # for target 5: only target 1
    # the first target sees nothing but the add-one unigram
    q0, longest0 = all_columns(mixer, tokens, torch.tensor([1]))
    assert longest0.tolist() == [0] and torch.allclose(q0[0], torch.full((4,), 0.25, dtype=torch.float64))


def test_two_contexts_sharing_8_of_9_tokens_get_different_counters():
    vocab = 64
    shared = list(range(10, 18))  # 8 tokens
    a, b, t1, t2 = 1, 2, 3, 4
    seen = [30, a] + shared + [t1] + [40, 41, 42] + [b] + shared + [t2] + [43, 44]
    # two streams, each the same history and then one query: the target after "a + shared", or after "b + shared"
    streams = [torch.tensor(seen + [a] + shared + [5]), torch.tensor(seen + [b] + shared + [6])]
    query = torch.tensor([len(seen) + 9])
    assert streams[0][query - 9:query].tolist() == [a] + shared and streams[1][query - 9:query].tolist() == [b] + shared
    mixers = [make_mixer(tokens, vocab, 10, discount=0.0) for tokens in streams]
    earlier = query - 1
    ids8 = [m.ids[8][query - 8] for m in mixers]
    ids9 = [m.ids[9][query - 9] for m in mixers]
    assert streams[0][query - 8:query].tolist() == streams[1][query - 8:query].tolist()  # the shared 8-token suffix: one context, seen twice
    for m, i8, i9 in zip(mixers, ids8, ids9):
        assert m.as_context[8].before(i8, earlier).tolist() == [2] and m.distinct[8].before(i8, earlier).tolist() == [2]
        assert m.as_context[9].before(i9, earlier).tolist() == [1]  # the 9-token contexts differ: each seen once
    q = [all_columns(m, tokens, query) for m, tokens in zip(mixers, streams)]
    assert [int(longest) for _, longest in q] == [9, 9]
    assert q[0][0][0].nonzero().flatten().tolist() == [t1] and q[0][0][0, t1] == 1
    assert q[1][0][0].nonzero().flatten().tolist() == [t2] and q[1][0][0, t2] == 1
    # with a discount each 9-token context hands D of its single count to the shared 8-token one
    q2 = [all_columns(make_mixer(tokens, vocab, 10, discount=0.5), tokens, query)[0][0] for tokens in streams]
    assert q2[0][t1] > q2[0][t2] > 0 and q2[1][t2] > q2[1][t1] > 0
    assert q2[0][t1] == q2[1][t2] and q2[0][t2] == q2[1][t1]  # the two contexts are symmetric


@pytest.mark.parametrize("documents", [False, True])
def test_q_of_a_target_does_not_depend_on_it_or_anything_after_it(documents):
    """Also with TTT_MODE=lora's document floors (documents starting at 0, 30, 41, 90 and 130)."""
    vocab, n = 8, 160
    tokens = repetitive_stream(n, vocab, seed=3)
    floor = None
    if documents:
        starts = torch.tensor([0, 30, 41, 90, 130])
        floor = starts[torch.searchsorted(starts, torch.arange(n - 1), right=True) - 1]  # of target t at t - 1
    base = make_mixer(tokens, vocab, 5, floor=floor)
    for pos in (1, 2, 5, 31, 40, 41, 59, 80, 81, 119, 131, 159):
        changed = tokens.clone()
        changed[pos:] = (changed[pos:] + 3) % vocab  # the target and everything after it
        other = make_mixer(changed, vocab, 5, floor=floor)  # counted from the changed stream
        q, longest = all_columns(base, tokens, torch.tensor([pos]))
        q2, longest2 = all_columns(other, changed, torch.tensor([pos]))
        assert torch.equal(q, q2) and torch.equal(longest, longest2), pos
        if pos > 1:  # the target just before does count: changing it changes q
            before = tokens.clone()
            before[pos - 1] = (before[pos - 1] + 1) % vocab
            assert not torch.equal(all_columns(make_mixer(before, vocab, 5, floor=floor), before, torch.tensor([pos]))[0], q), pos
    assert int(all_columns(base, tokens, torch.arange(121, 160))[1].max()) == 4


# ----------------------------------------------------------------------------- 3. Occurrences and ids

def test_occurrences_count_each_id_at_earlier_indices_only():
    rng = np.random.default_rng(0)
    size = 13
    ids = torch.from_numpy(rng.choice([0, 1, 5, 2**40, 2**40 + 1, 2**45 - 3], size=500))
    at = torch.from_numpy(rng.integers(0, size, size=500))
    occ = train_gpt.Occurrences(ids, at, size)
    queries = torch.tensor([0, 1, 5, 2**40, 2**40 + 1, 2**45 - 3, 2, 2**40 - 1, -1])
    for index in range(size + 1):
        got = occ.before(queries, torch.full_like(queries, index)).tolist()
        want = [int(((ids == i) & (at < index)).sum()) for i in queries.tolist()]
        assert got == want, index
    assert occ.before(queries, torch.zeros_like(queries)).tolist() == [0] * len(queries)
    assert occ.before(torch.tensor([-1, -1]), torch.tensor([5, size])).tolist() == [0, 0]  # -1: unseen


def test_ngram_ids_are_exact_for_every_length():
    tokens = repetitive_stream(3000, 1024, seed=3)
    tokens[::7] = 1023  # the largest token id
    mixer = make_mixer(tokens, 1024, 10)
    listed = tokens.tolist()
    assert len(mixer.ids) == 10  # ids of 1..9-grams are kept (contexts); 10-grams live on as keys only
    grams10 = {tuple(listed[a:a + 10]) for a in range(len(listed) - 9)}
    assert len(mixer.keys[10]) == len(grams10) and (mixer.keys[10] // 1024 < len(mixer.keys[9])).all()
    for k in range(1, 10):
        grams = [tuple(listed[a:a + k]) for a in range(len(listed) - k + 1)]
        ids = mixer.ids[k].tolist()
        assert len(ids) == len(grams)
        by_gram: dict = {}
        for g, i in zip(grams, ids):
            assert by_gram.setdefault(g, i) == i, k  # equal n-grams share an id
        assert len(set(by_gram.values())) == len(by_gram), k  # different n-grams never do
