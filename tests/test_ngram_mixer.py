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

def make_mixer(vocab: int, order: int, min_count: int, **alpha) -> train_gpt.NgramMixer:
    args = tiny_args(VOCAB_SIZE=vocab, NGRAM_ORDER=order, NGRAM_MIN_COUNT=min_count, **alpha)
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
    """Pure-Python reference: N(ctx) and N(ctx, v) over the targets added so far, every context
    length 1..max_context that fits before the target."""

    def __init__(self, max_context: int):
        self.max_context = max_context
        self.ctx: Counter = Counter()
        self.next: dict[tuple, Counter] = defaultdict(Counter)
        self.added: set[int] = set()

    def add(self, tokens: list[int], first: int, end: int):
        for t in range(max(first, 1), end):
            assert t not in self.added  # the test never adds a target twice
            self.added.add(t)
            for m in range(1, min(self.max_context, t) + 1):
                c = tuple(tokens[t - m:t])
                self.ctx[c] += 1
                self.next[c][tokens[t]] += 1

    def q(self, tokens: list[int], pos: int, min_count: int, vocab: int):
        """q over the vocabulary at the longest context seen >= min_count times, or None."""
        for m in range(min(self.max_context, pos), 0, -1):
            c = tuple(tokens[pos - m:pos])
            n = self.ctx[c]
            if n >= min_count:
                row = np.zeros(vocab)
                for v, k in self.next[c].items():
                    row[v] = k / n
                return row
        return None


def full_rows(mixer, model_p, entropy, tokens, positions):
    vocab = model_p.size(1)
    return mixer.probabilities(model_p, entropy, tokens, positions, torch.arange(vocab).expand(len(positions), -1))


def random_model_rows(n: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=g, dtype=torch.float64) * torch.rand(n, 1, generator=g, dtype=torch.float64) * 6
    p = torch.softmax(logits, dim=1)
    return p, -(p * p.log()).sum(1)


# ----------------------------------------------------------------------------- 1. normalization

@pytest.mark.parametrize("min_count", [1, 2])
@pytest.mark.parametrize("order", [2, 3, 10])
def test_mixed_rows_sum_to_one_and_target_column_equals_full_row(order, min_count):
    vocab, n = 16, 400
    tokens = repetitive_stream(n, vocab, seed=order * 10 + min_count)
    positions = torch.arange(1, n)
    model_p, _ = random_model_rows(n - 1, vocab, seed=1)
    # entropies across the whole range of alpha (ALPHA_CENTER=3): alpha goes from ~0.2 to ~0.75
    entropy = torch.linspace(0.0, 7.0, n - 1, dtype=torch.float64)
    mixer = make_mixer(vocab, order, min_count)
    brute = BruteNgrams(order - 1)
    args = mixer.args
    target = tokens[positions, None]
    for fill, piece in (("empty", None), ("partial", (0, n // 2)), ("full", (n // 2, n))):
        if piece:
            mixer.add(tokens, *piece)
            brute.add(tokens.tolist(), *piece)
        p = full_rows(mixer, model_p, entropy, tokens, positions)
        assert p.dtype == torch.float64 and p.shape == (n - 1, vocab)
        assert (p >= 0).all()
        err = (p.sum(1) - 1).abs()
        assert err.max() <= 1e-9, (fill, int(err.argmax()))
        # what is scored (target column only) is exactly what is audited (full row)
        scored = mixer.probabilities(model_p.gather(1, target), entropy, tokens, positions, target)
        assert torch.equal(scored.squeeze(1), p.gather(1, target).squeeze(1)), fill
        # and both follow p = (1 - alpha) p_model + alpha q, alpha = 0 where no context qualifies
        mixed_rows = 0
        for i, pos in enumerate(positions.tolist()):
            q = brute.q(tokens.tolist(), pos, min_count, vocab)
            if q is None:
                assert torch.equal(p[i], model_p[i]), (fill, pos)
                continue
            mixed_rows += 1
            alpha = args.alpha_base + args.alpha_range * torch.sigmoid(2 * (entropy[i] - args.alpha_center))
            expected = (1 - alpha) * model_p[i] + alpha * torch.from_numpy(q)
            torch.testing.assert_close(p[i], expected, rtol=0, atol=1e-12)
        if fill == "empty":
            assert mixed_rows == 0 and torch.equal(p, model_p)
        else:
            assert mixed_rows > 0, fill


# ----------------------------------------------------------------------------- 2. exact counts

# (vocab, NGRAM_ORDER, NGRAM_MIN_COUNT, stream length, seed)
COUNT_CASES = [(2, 4, 1, 300, 0), (3, 10, 2, 400, 1), (5, 10, 1, 500, 2), (8, 3, 2, 600, 3), (8, 10, 3, 600, 4),
               (1024, 10, 1, 1500, 5), (1024, 5, 2, 1500, 6)]


@pytest.mark.parametrize("vocab, order, min_count, n, seed", COUNT_CASES)
def test_q_equals_brute_force_counts_after_piecewise_adds(vocab, order, min_count, n, seed):
    tokens = repetitive_stream(n, vocab, seed)
    if vocab > 64:  # mostly rare tokens, with a few very frequent ones: short and long repeats
        tokens = torch.where(torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.3, tokens % 7, tokens)
    listed = tokens.tolist()
    rng = np.random.default_rng(seed)
    cuts = [0] + sorted(rng.choice(np.arange(2, n - 1), size=5, replace=False).tolist()) + [n]
    # alpha = 1 wherever a context qualifies, so p = q there and p = model_p elsewhere; model_p = 0
    # on every other row (q read directly), a random distribution on the rest
    mixer = make_mixer(vocab, order, min_count, ALPHA_BASE=1, ALPHA_RANGE=0)
    brute = BruteNgrams(order - 1)
    positions = torch.arange(1, n)
    model_p, entropy = random_model_rows(n - 1, vocab, seed)
    model_p[::2] = 0
    checks = range(len(cuts) - 1) if vocab <= 64 else (2, len(cuts) - 2)
    for piece, (first, end) in enumerate(zip(cuts[:-1], cuts[1:])):
        mixer.add(tokens, first, end)
        brute.add(listed, first, end)
        if piece not in checks:
            continue
        got = full_rows(mixer, model_p, entropy, tokens, positions)
        hits = 0
        for i, pos in enumerate(positions.tolist()):
            q = brute.q(listed, pos, min_count, vocab)
            if q is None:
                assert torch.equal(got[i], model_p[i]), (piece, pos)
            else:
                hits += 1
                assert np.array_equal(got[i].numpy(), q), (piece, pos)
        assert hits > 0
    # long contexts really were used: some position backs off to a context longer than 2 tokens
    deep = [pos for pos in positions.tolist()
            if any(brute.ctx[tuple(listed[pos - m:pos])] >= min_count for m in range(3, min(order - 1, pos) + 1))]
    assert deep or order <= 3


def test_ngrams_straddling_two_adds_are_counted_once():
    vocab, n = 4, 200
    tokens = repetitive_stream(n, vocab, seed=7)
    positions = torch.arange(1, n)
    model_p, entropy = random_model_rows(n - 1, vocab, seed=7)
    whole = make_mixer(vocab, 6, 1)
    whole.add(tokens, 0, n)
    results = []
    for cuts in ([0, 50, 51, 52, 120, n], [0, 1, 2, 3, n], list(range(0, n + 1, 1))[:-1] + [n]):
        pieces = make_mixer(vocab, 6, 1)
        for first, end in zip(cuts[:-1], cuts[1:]):
            pieces.add(tokens, first, end)
        results.append(full_rows(pieces, model_p, entropy, tokens, positions))
        # total counts at each level = number of targets whose context of that length fits: nothing doubled
        for m in range(5):
            assert int(pieces.context_counts[m].sum()) == n - 1 - m == int(pieces.pair_counts[m].sum())
    expected = full_rows(whole, model_p, entropy, tokens, positions)
    for got in results:
        assert torch.equal(got, expected)
    # an n-gram whose context lies in one piece and its target in the next counts once
    a = make_mixer(vocab, 3, 1, ALPHA_BASE=1, ALPHA_RANGE=0)
    stream = torch.tensor([0, 1, 2, 3, 0, 1])
    a.add(stream, 0, 2)  # target 1 (context 0)
    a.add(stream, 2, 4)  # targets 2 (context 0 1) and 3 (context 1 2): contexts reach back into piece 1
    p = full_rows(a, torch.zeros(1, vocab, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), stream, torch.tensor([2]))
    assert p[0].tolist() == [0, 0, 1, 0]  # after (0, 1) came 2, once
    assert int(a.context_counts[1].sum()) == 2 and int(a.pair_counts[1].sum()) == 2


def test_two_contexts_sharing_8_of_9_tokens_get_different_counters():
    vocab = 64
    shared = list(range(10, 18))  # 8 tokens
    a, b, t1, t2 = 1, 2, 3, 4
    stream = [30, a] + shared + [t1] + [40, 41, 42] + [b] + shared + [t2] + [43, 44] + [a] + shared + [5] + [b] + shared + [6]
    tokens = torch.tensor(stream)
    query_a = len(stream) - 11  # the target after the second "a + shared"
    query_b = len(stream) - 1   # the target after the second "b + shared"
    assert stream[query_a - 9:query_a] == [a] + shared and stream[query_b - 9:query_b] == [b] + shared
    mixer = make_mixer(vocab, 10, 1, ALPHA_BASE=1, ALPHA_RANGE=0)
    mixer.add(tokens, 0, query_a)  # both 9-token contexts seen once each, nothing after
    positions = torch.tensor([query_a, query_b])
    ids = mixer.context_ids(tokens, positions, add=False)
    assert len(ids) == 9
    assert ids[7][0] == ids[7][1] >= 0  # the shared 8-token suffix is one context, seen twice
    assert int(mixer.context_counts[7][ids[7][0]]) == 2
    assert ids[8][0] >= 0 and ids[8][1] >= 0 and ids[8][0] != ids[8][1]  # the 9-token contexts differ
    assert int(mixer.context_counts[8][ids[8][0]]) == 1 and int(mixer.context_counts[8][ids[8][1]]) == 1
    p = full_rows(mixer, torch.zeros(2, vocab, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), tokens, positions)
    assert p[0].nonzero().flatten().tolist() == [t1] and p[0, t1] == 1
    assert p[1].nonzero().flatten().tolist() == [t2] and p[1, t2] == 1
    # with NGRAM_MIN_COUNT=2 both back off to the shared 8-token context: half t1, half t2
    mixer2 = make_mixer(vocab, 10, 2, ALPHA_BASE=1, ALPHA_RANGE=0)
    mixer2.add(tokens, 0, query_a)
    p2 = full_rows(mixer2, torch.zeros(2, vocab, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), tokens, positions)
    for row in p2:
        assert row[t1] == row[t2] == 0.5 and row.sum() == 1


def test_context_ids_do_not_read_the_target_and_lookups_never_add():
    vocab, n = 8, 120
    tokens = repetitive_stream(n, vocab, seed=3)
    mixer = make_mixer(vocab, 5, 1)
    mixer.add(tokens, 0, 60)
    positions = torch.arange(1, n)
    before = mixer.context_ids(tokens, positions, add=False)
    index_sizes = [ix.size for ix in mixer.context_index]
    for pos in (5, 40, 59, 80, 119):  # changing tokens pos.. leaves the contexts of target pos alone
        changed = tokens.clone()
        changed[pos:] = (changed[pos:] + 3) % vocab
        again = mixer.context_ids(changed, torch.tensor([pos]), add=False)
        assert [int(level[0]) for level in again] == [int(level[pos - 1]) for level in before]
    for m, level in enumerate(before):
        assert (level[:m] == -1).all()  # targets 1..m have no context of m+1 tokens
    assert (before[1][58:] >= -1).all() and (before[1][:58] >= 0)[1:].all()  # seen contexts have ids
    assert [ix.size for ix in mixer.context_index] == index_sizes  # lookups never add


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
    mixer = make_mixer(1024, 10, 1)
    tokens = repetitive_stream(3000, 1024, seed=3)
    mixer.add(tokens, 1, 2000)
    model_p, entropy = random_model_rows(500, 1024, seed=4)
    positions = torch.arange(2000, 2500)
    mixer.probabilities(model_p, entropy, tokens, positions, torch.arange(1024).expand(500, -1))
    assert len(seen) > 20 and min(seen) >= 0
