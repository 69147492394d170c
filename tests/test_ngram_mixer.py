"""The eval-time n-gram cache: ExactIndex (exact int64 key -> dense id map), NgramMixer counts
against a brute-force dict count, and normalization of the mixed distribution over the vocabulary."""
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

import train_gpt
from conftest import tiny_args

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors gain nothing from threads, and 2 threads on 2 busy cores can be many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- helpers

def make_mixer(vocab: int, order: int, discount: float = 0.75) -> train_gpt.NgramMixer:
    args = tiny_args(VOCAB_SIZE=vocab, NGRAM_ORDER=order, NGRAM_DISCOUNT=discount)
    return train_gpt.NgramMixer(args, CPU)


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
    context length 1..max_context that fits before the target, and the cache distribution q."""

    def __init__(self, max_context: int):
        self.max_context = max_context
        self.unigram: Counter = Counter()
        self.ctx: Counter = Counter()
        self.next: dict[tuple, Counter] = defaultdict(Counter)
        self.added: set[int] = set()

    def add(self, tokens: list[int], first: int, end: int):
        for t in range(max(first, 1), end):
            assert t not in self.added  # the test never adds a target twice
            self.added.add(t)
            self.unigram[tokens[t]] += 1
            for m in range(1, min(self.max_context, t) + 1):
                c = tuple(tokens[t - m:t])
                self.ctx[c] += 1
                self.next[c][tokens[t]] += 1

    def q(self, tokens: list[int], pos: int, discount: float, vocab: int) -> tuple[np.ndarray, int]:
        """Interpolated absolute discounting from add-one unigram up to the longest seen context;
        also that context's length (0: none seen)."""
        total = sum(self.unigram.values())
        row = np.array([(self.unigram[v] + 1) / (total + vocab) for v in range(vocab)])
        longest = 0
        for m in range(1, min(self.max_context, pos) + 1):
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
    return mixer.probabilities(model_p, entropy, tokens, positions, torch.arange(vocab).expand(len(positions), -1))[0]


def random_model_rows(n: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g, dtype=torch.float64) * torch.rand(n, 1, generator=g, dtype=torch.float64) * 6
    p = torch.softmax(logits, dim=1)
    return p, -(p * p.log()).sum(1)


def entropy_bin(entropy_nats: float) -> int:
    return min(int(entropy_nats / np.log(2)), train_gpt.NgramMixer.ENTROPY_BINS - 1)


# ----------------------------------------------------------------------------- 1. normalization

@pytest.mark.parametrize("discount", [0.0, 0.75, 1.0])
@pytest.mark.parametrize("order", [2, 3, 10])
def test_mixed_rows_sum_to_one_and_follow_the_documented_formula(order, discount):
    vocab, n = 16, 400
    tokens = repetitive_stream(n, vocab, seed=order * 10 + int(discount * 4))
    positions = torch.arange(1, n)
    model_p, _ = random_model_rows(n - 1, vocab, seed=1)
    entropy = torch.linspace(0.0, 7.0, n - 1, dtype=torch.float64)  # every entropy bin
    mixer = make_mixer(vocab, order, discount)
    brute = BruteNgrams(order - 1)
    target = tokens[positions, None]
    listed = tokens.tolist()
    for fill, piece in (("empty", None), ("partial", (0, n // 2)), ("full", (n // 2, n))):
        if piece:
            mixer.add(tokens, *piece)
            brute.add(listed, *piece)
        # a learned alpha per bin: bin b prefers candidate b % 20 (all 20 candidates, 0 and 0.95 included)
        bins = mixer.alpha_losses.size(0)
        mixer.alpha_losses.zero_()
        mixer.alpha_losses[torch.arange(bins), torch.arange(bins) % len(mixer.ALPHAS)] = -1.0
        p = full_rows(mixer, model_p, entropy, tokens, positions)
        assert p.dtype == torch.float64 and p.shape == (n - 1, vocab)
        assert (p >= 0).all()
        err = (p.sum(1) - 1).abs()
        assert err.max() <= 1e-9, (fill, int(err.argmax()))
        # what is scored (target column only) is exactly what is audited (full row)
        scored = mixer.probabilities(model_p.gather(1, target), entropy, tokens, positions, target)[0]
        assert torch.equal(scored.squeeze(1), p.gather(1, target).squeeze(1)), fill
        # and both follow p = (1 - alpha) p_model + alpha q with q and alpha's bin from the brute force
        longest_seen = 0
        for i, pos in enumerate(positions.tolist()):
            q, longest = brute.q(listed, pos, discount, vocab)
            longest_seen = max(longest_seen, longest)
            b = longest * mixer.ENTROPY_BINS + entropy_bin(float(entropy[i]))
            alpha = mixer.ALPHAS[b % len(mixer.ALPHAS)]
            expected = (1 - alpha) * model_p[i] + alpha * torch.from_numpy(q)
            torch.testing.assert_close(p[i], expected, rtol=0, atol=1e-12)
        assert longest_seen == (0 if fill == "empty" else order - 1), fill


def test_alpha_is_zero_without_history_then_the_best_candidate_of_each_bin():
    vocab, n = 12, 600
    tokens = repetitive_stream(n, vocab, seed=5)
    mixer = make_mixer(vocab, 4)
    mixer.add(tokens, 0, 300)
    positions = torch.arange(300, n)
    model_p, entropy = random_model_rows(len(positions), vocab, seed=5)
    target = tokens[positions, None]
    # nothing learned yet: alpha = 0 everywhere, so p is the model's, bit for bit
    p, q, bins = mixer.probabilities(model_p, entropy, tokens, positions, torch.arange(vocab).expand(len(positions), -1))
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
    again = mixer.probabilities(p_t[second, None], entropy[second], tokens, positions[second], target[second])[0].squeeze(1)
    for j, i in enumerate(range(150, len(positions))):
        alpha = expected_alpha.get(int(bins[i]), 0.0)  # a bin never seen keeps alpha = 0
        assert float(again[j]) == pytest.approx((1 - alpha) * float(p_t[i]) + alpha * float(q_t[i]), abs=1e-12)


# ----------------------------------------------------------------------------- 2. exact counts

# (vocab, NGRAM_ORDER, NGRAM_DISCOUNT, stream length, seed)
COUNT_CASES = [(2, 4, 0.75, 300, 0), (3, 10, 0.5, 400, 1), (5, 10, 0.0, 500, 2), (8, 3, 1.0, 600, 3), (8, 10, 0.75, 600, 4),
               (1024, 10, 0.75, 1500, 5), (1024, 5, 0.3, 1500, 6)]


@pytest.mark.parametrize("vocab, order, discount, n, seed", COUNT_CASES)
def test_q_equals_brute_force_counts_after_piecewise_adds(vocab, order, discount, n, seed):
    tokens = repetitive_stream(n, vocab, seed)
    if vocab > 64:  # mostly rare tokens, with a few very frequent ones: short and long repeats
        tokens = torch.where(torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.3, tokens % 7, tokens)
    listed = tokens.tolist()
    rng = np.random.default_rng(seed)
    cuts = [0] + sorted(rng.choice(np.arange(2, n - 1), size=5, replace=False).tolist()) + [n]
    mixer = make_mixer(vocab, order, discount)
    brute = BruteNgrams(order - 1)
    positions = torch.arange(1, n)
    columns = torch.arange(vocab).expand(len(positions), -1)
    checks = range(len(cuts) - 1) if vocab <= 64 else (2, len(cuts) - 2)
    for piece, (first, end) in enumerate(zip(cuts[:-1], cuts[1:])):
        mixer.add(tokens, first, end)
        brute.add(listed, first, end)
        if piece not in checks:
            continue
        q, longest = mixer.cache_probabilities(tokens, positions, columns)
        for i, pos in enumerate(positions.tolist()):
            expected, expected_longest = brute.q(listed, pos, discount, vocab)
            assert int(longest[i]) == expected_longest, (piece, pos)
            np.testing.assert_allclose(q[i].numpy(), expected, rtol=1e-12, atol=1e-15, err_msg=f"{piece} {pos}")
    # long contexts really were used: some position has a seen context longer than 2 tokens
    assert int(longest.max()) >= min(3, order - 1)


def all_columns(mixer, tokens, positions):
    return mixer.cache_probabilities(tokens, positions, torch.arange(mixer.vocab).expand(len(positions), -1))


def test_ngrams_straddling_two_adds_are_counted_once():
    vocab, n = 4, 200
    tokens = repetitive_stream(n, vocab, seed=7)
    positions = torch.arange(1, n)
    whole = make_mixer(vocab, 6)
    whole.add(tokens, 0, n)
    expected_q, expected_longest = all_columns(whole, tokens, positions)
    for cuts in ([0, 50, 51, 52, 120, n], [0, 1, 2, 3, n], list(range(0, n + 1, 1))[:-1] + [n]):
        pieces = make_mixer(vocab, 6)
        for first, end in zip(cuts[:-1], cuts[1:]):
            pieces.add(tokens, first, end)
        q, longest = all_columns(pieces, tokens, positions)
        assert torch.equal(q, expected_q) and torch.equal(longest, expected_longest)
        # total counts of each length = number of targets that n-gram or context fits before: nothing doubled
        for k in range(1, 7):
            assert int(pieces.as_ngram[k].sum()) == n - max(1, k - 1)  # k-grams ending at targets 1..n-1
            assert int(pieces.distinct[k - 1].sum() if k > 1 else 0) == (int((pieces.as_ngram[k] > 0).sum()) if k > 1 else 0)
            if k < 6:
                assert int(pieces.as_context[k].sum()) == n - k  # contexts of k tokens: targets k..n-1
    # an n-gram whose context lies in one piece and its target in the next counts once
    a = make_mixer(vocab, 3, discount=0.0)  # no discount: q is the plain relative frequency of the longest context
    stream = torch.tensor([0, 1, 2, 3, 0, 1])
    a.add(stream, 0, 2)  # target 1 (context 0)
    a.add(stream, 2, 4)  # targets 2 (context 0 1) and 3 (context 1 2): contexts reach back into piece 1
    q, longest = all_columns(a, stream, torch.tensor([2]))
    assert q[0].tolist() == [0, 0, 1, 0] and longest.tolist() == [2]  # after (0, 1) came 2, once
    assert int(a.as_context[2].sum()) == 2 and int(a.as_ngram[3].sum()) == 2  # (0 1) before 2, (1 2) before 3


def test_two_contexts_sharing_8_of_9_tokens_get_different_counters():
    vocab = 64
    shared = list(range(10, 18))  # 8 tokens
    a, b, t1, t2 = 1, 2, 3, 4
    stream = [30, a] + shared + [t1] + [40, 41, 42] + [b] + shared + [t2] + [43, 44] + [a] + shared + [5] + [b] + shared + [6]
    tokens = torch.tensor(stream)
    query_a = len(stream) - 11  # the target after the second "a + shared"
    query_b = len(stream) - 1   # the target after the second "b + shared"
    assert stream[query_a - 9:query_a] == [a] + shared and stream[query_b - 9:query_b] == [b] + shared
    mixer = make_mixer(vocab, 10, discount=0.0)
    mixer.add(tokens, 0, query_a)  # both 9-token contexts seen once each, nothing after
    positions = torch.tensor([query_a, query_b])
    ids = mixer.ngram_ids(tokens, positions - 1, 9, add=False)  # the contexts of the two queries
    assert len(ids) == 10
    assert ids[8][0] == ids[8][1] >= 0  # the shared 8-token suffix is one context, seen twice
    assert int(mixer.as_context[8][ids[8][0]]) == 2 and int(mixer.distinct[8][ids[8][0]]) == 2
    assert ids[9][0] >= 0 and ids[9][1] >= 0 and ids[9][0] != ids[9][1]  # the 9-token contexts differ
    assert int(mixer.as_context[9][ids[9][0]]) == 1 and int(mixer.as_context[9][ids[9][1]]) == 1
    q, longest = all_columns(mixer, tokens, positions)
    assert longest.tolist() == [9, 9]
    assert q[0].nonzero().flatten().tolist() == [t1] and q[0, t1] == 1
    assert q[1].nonzero().flatten().tolist() == [t2] and q[1, t2] == 1
    # with a discount each 9-token context hands D of its single count to the shared 8-token one
    mixer2 = make_mixer(vocab, 10, discount=0.5)
    mixer2.add(tokens, 0, query_a)
    q2, _ = all_columns(mixer2, tokens, positions)
    assert q2[0, t1] > q2[0, t2] > 0 and q2[1, t2] > q2[1, t1] > 0
    assert q2[0, t1] == q2[1, t2] and q2[0, t2] == q2[1, t1]  # the two contexts are symmetric


def test_contexts_and_q_do_not_read_the_target_and_lookups_never_add():
    vocab, n = 8, 120
    tokens = repetitive_stream(n, vocab, seed=3)
    mixer = make_mixer(vocab, 5)
    mixer.add(tokens, 0, 60)
    positions = torch.arange(1, n)
    columns = torch.arange(vocab).expand(n - 1, -1)
    before = mixer.ngram_ids(tokens, positions - 1, 4, add=False)  # contexts of 1..4 tokens
    q_before, longest_before = mixer.cache_probabilities(tokens, positions, columns)
    index_sizes = [ix.size for ix in mixer.index[2:]]
    for pos in (5, 40, 59, 60, 80, 119):  # changing tokens pos.. leaves everything about target pos alone
        changed = tokens.clone()
        changed[pos:] = (changed[pos:] + 3) % vocab
        again = mixer.ngram_ids(changed, torch.tensor([pos - 1]), 4, add=False)
        assert [int(level[0]) for level in again[1:]] == [int(level[pos - 1]) for level in before[1:]]
        q, longest = mixer.cache_probabilities(changed, torch.tensor([pos]), columns[:1])
        assert torch.equal(q[0], q_before[pos - 1]) and int(longest[0]) == int(longest_before[pos - 1])
    for k in range(1, 5):
        assert (before[k][:k - 1] == -1).all() and (before[k][k - 1:59] >= 0).all()  # seen contexts have ids
    assert int(longest_before.max()) == 4
    assert [ix.size for ix in mixer.index[2:]] == index_sizes  # lookups never add


# ----------------------------------------------------------------------------- 3. ExactIndex

def keys_with_home(index: train_gpt.ExactIndex, slot: int, count: int, start: int = 0) -> list[int]:
    cand = torch.arange(start, start + 200_000)
    hits = cand[index._home(cand) == slot][:count].tolist()
    assert len(hits) == count
    return hits


@pytest.mark.parametrize("slot", [0, 7, 15])
def test_exact_index_keys_sharing_a_home_slot(slot):
    index = train_gpt.ExactIndex(CPU, capacity=16)
    keys = keys_with_home(index, slot, 8, start=1000)
    others = keys_with_home(index, slot, 12, start=500_000)[8:]  # same home, never added
    got = index.add(torch.tensor(keys[::-1]))  # one call, all racing for one slot
    assert index.keys.numel() == 16  # load 8/16: no rebuild, so the keys really collided
    assert got.tolist() == list(range(8))[::-1]  # new ids in sorted key order
    assert index.lookup(torch.tensor(keys)).tolist() == list(range(8))
    assert index.lookup(torch.tensor(others)).tolist() == [-1] * 4
    at_home = index.keys[slot].item()
    assert at_home in keys and sorted(index.keys[index.keys != -1].tolist()) == sorted(keys)
    # the keys fill the run of slots after their home (wrapping around the end of the table)
    occupied = (index.keys != -1).nonzero().flatten().tolist()
    assert occupied == sorted((slot + i) % 16 for i in range(8))


def test_exact_index_same_home_one_at_a_time_with_duplicates():
    index = train_gpt.ExactIndex(CPU, capacity=16)
    keys = keys_with_home(index, 3, 6)
    ids = {}
    for k in keys:
        got = index.add(torch.tensor([k, k, k]))
        ids[k] = int(got[0])
        assert got.tolist() == [ids[k]] * 3  # duplicates in one call share the id
        assert index.add(torch.tensor([k])).tolist() == [ids[k]]  # a second add returns the same id
    assert sorted(ids.values()) == list(range(6)) and index.size == 6
    mixed = torch.tensor([keys[2], keys[0], keys[2], 999_999_937, keys[5], 999_999_937])
    got = index.add(mixed)
    assert got.tolist() == [ids[keys[2]], ids[keys[0]], ids[keys[2]], 6, ids[keys[5]], 6]
    assert index.size == 7


def test_exact_index_keys_differing_only_in_high_bits():
    index = train_gpt.ExactIndex(CPU, capacity=16)
    low = 12345
    keys = [low] + [low | (1 << b) for b in range(32, 63)] + [(1 << 62) | (1 << 61), (1 << 63) - 1, (1 << 63) - 2]
    got = index.add(torch.tensor(keys))
    assert len(set(got.tolist())) == len(keys)
    assert sorted(got.tolist()) == list(range(len(keys)))
    assert index.lookup(torch.tensor(keys)).tolist() == got.tolist()
    absent = [low | (1 << b) | (1 << (b - 1)) for b in range(33, 63)]
    assert index.lookup(torch.tensor(absent)).tolist() == [-1] * len(absent)
    assert index.lookup(torch.tensor([low + 1, 0, low - (1 << 40)])).tolist() == [-1, -1, -1]


def test_exact_index_growth_keeps_ids_dense_stable_and_distinct():
    index = train_gpt.ExactIndex(CPU, capacity=16)
    reference: dict[int, int] = {}
    rng = np.random.default_rng(0)
    capacities = {index.keys.numel()}
    for call in range(40):
        size = int(rng.integers(1, 120))
        fresh = rng.integers(0, 1 << 62, size=size)
        old = rng.choice(list(reference), size=min(len(reference), 50)) if reference else np.array([], dtype=np.int64)
        batch = np.concatenate([fresh, fresh[: size // 3], old])  # duplicates within the call, known keys
        rng.shuffle(batch)
        new_sorted = sorted(set(batch.tolist()) - set(reference))
        for k in new_sorted:
            reference[k] = len(reference)
        got = index.add(torch.from_numpy(batch))
        assert got.tolist() == [reference[k] for k in batch.tolist()], call
        assert index.size == len(reference)
        assert 2 * index.size <= index.keys.numel()
        capacities.add(index.keys.numel())
    assert len(capacities) >= 4  # several rebuilds happened
    all_keys = torch.tensor(list(reference))
    ids = index.lookup(all_keys)
    assert ids.tolist() == list(reference.values())  # stable across every rebuild
    assert sorted(ids.tolist()) == list(range(len(reference)))  # dense, distinct
    absent = torch.from_numpy(rng.integers(0, 1 << 62, size=2000))
    absent = absent[~torch.isin(absent, all_keys)]
    assert (index.lookup(absent) == -1).all()
    # one call far larger than the table
    big = train_gpt.ExactIndex(CPU, capacity=16)
    keys = torch.randperm(20_000)[:5000] * 7919
    got = big.add(keys)
    assert torch.equal(got, torch.argsort(torch.argsort(keys)))  # ids follow sorted key order
    assert torch.equal(big.lookup(keys), got) and big.size == 5000


def test_exact_index_empty_calls():
    index = train_gpt.ExactIndex(CPU, capacity=16)
    empty = torch.zeros(0, dtype=torch.long)
    assert index.add(empty).numel() == 0 and index.lookup(empty).numel() == 0 and index.size == 0
    assert index.lookup(torch.tensor([0, 1, 5])).tolist() == [-1, -1, -1]


def test_mixer_only_gives_exact_index_keys_it_supports(monkeypatch):
    """ExactIndex takes keys >= 0 (-1 marks an empty slot): the mixer's keys, built from ids and
    tokens of a full 1024-token vocabulary at order 10, never leave that domain."""
    seen = []
    for method in ("add", "lookup"):
        original = getattr(train_gpt.ExactIndex, method)

        def recording(self, keys, _original=original):
            seen.append(int(keys.min()) if keys.numel() else 0)
            return _original(self, keys)
        monkeypatch.setattr(train_gpt.ExactIndex, method, recording)
    mixer = make_mixer(1024, 10)
    tokens = repetitive_stream(3000, 1024, seed=3)
    mixer.add(tokens, 1, 2000)
    model_p, entropy = random_model_rows(500, 1024, seed=4)
    positions = torch.arange(2000, 2500)
    mixer.probabilities(model_p, entropy, tokens, positions, torch.arange(1024).expand(500, -1))
    assert len(seen) > 20 and min(seen) >= 0
