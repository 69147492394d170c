"""Complementary loss: per-token weights w = max(0.1, 1 - alpha * B[x,y] / (T[x] + 1)) from bigram counts."""
from collections import Counter

import pytest
import torch

import train_gpt
from conftest import cpu_run, tiny_args


def expected_weights(pairs, x, y, alpha):
    """Hand computation: B = bigram counts, T = row totals, over all (prev, next) pairs added so far."""
    b = Counter()
    for xs, ys in pairs:
        b.update(zip(xs.flatten().tolist(), ys.flatten().tolist()))
    t = Counter()
    for (prev, _), n in b.items():
        t[prev] += n
    return torch.tensor([[max(0.1, 1 - alpha * b[(p, n)] / (t[p] + 1)) for p, n in zip(rx, ry)]
                         for rx, ry in zip(x.tolist(), y.tolist())])


def test_weights_are_one_before_any_counts():
    counts = train_gpt.BigramCounts(vocab_size=7, alpha=1.0, device="cpu")
    x = torch.tensor([[0, 1, 6], [6, 6, 2]])
    assert torch.equal(counts.weights(x, x.flip(1)), torch.ones(2, 3))


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_weights_match_formula_after_add(alpha):
    V = 5
    counts = train_gpt.BigramCounts(vocab_size=V, alpha=alpha, device="cpu")
    # micro-batch 1: 0->1 three times, 0->2 once, 3->4 once; micro-batch 2: 0->1 once more, 4->0 once
    x1, y1 = torch.tensor([[0, 0, 0], [0, 3, 0]]), torch.tensor([[1, 1, 2], [1, 4, 1]])
    x2, y2 = torch.tensor([[4, 0]]), torch.tensor([[0, 1]])
    pairs = [(x1, y1), (x2, y2)]
    counts.add(pairs)
    # by hand: B[0,1]=5, B[0,2]=1, T[0]=6 -> p(1|0)=5/7 ; B[3,4]=1, T[3]=1 -> 1/2 ; B[4,0]=1, T[4]=1 -> 1/2
    assert counts.counts.view(V, V)[0, 1] == 5 and counts.row_totals[0] == 6
    qx, qy = torch.tensor([[0, 0, 3, 4, 1, 2]]), torch.tensor([[1, 2, 4, 0, 0, 3]])
    got = counts.weights(qx, qy)
    hand = torch.tensor([[1 - alpha * 5 / 7, 1 - alpha * 1 / 7, 1 - alpha / 2, 1 - alpha / 2, 1.0, 1.0]]).clamp_min(0.1)
    torch.testing.assert_close(got, hand)
    torch.testing.assert_close(got, expected_weights(pairs, qx, qy, alpha))


def test_weights_are_floored_at_0_1():
    counts = train_gpt.BigramCounts(vocab_size=3, alpha=1.0, device="cpu")
    counts.add([(torch.zeros(1, 40, dtype=torch.long), torch.ones(1, 40, dtype=torch.long))])  # p(1|0) = 40/41
    w = counts.weights(torch.tensor([[0, 0]]), torch.tensor([[1, 2]]))
    assert w[0, 0].item() == pytest.approx(0.1)  # 1 - 40/41 < 0.1 -> floor
    assert w[0, 1].item() == 1.0


def test_counts_accumulate_over_adds():
    V = 4
    counts = train_gpt.BigramCounts(vocab_size=V, alpha=0.5, device="cpu")
    g = torch.Generator().manual_seed(0)
    history = []
    for _ in range(3):
        x, y = torch.randint(0, V, (2, 2, 16), generator=g)
        counts.add([(x, y)])
        history.append((x, y))
        qx, qy = torch.randint(0, V, (2, 2, 8), generator=g)
        torch.testing.assert_close(counts.weights(qx, qy), expected_weights(history, qx, qy, 0.5))


class RecordingCounts(train_gpt.BigramCounts):
    instances = []

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.weight_calls, self.add_calls = [], []
        RecordingCounts.instances.append(self)

    def weights(self, x, y):
        w = super().weights(x, y)
        self.weight_calls.append((x.clone(), y.clone(), w))
        return w

    def add(self, pairs):
        self.add_calls.append(len(pairs))
        super().add(pairs)


@pytest.mark.parametrize("alpha", ["0", "0.5"])
def test_training_uses_tracker_only_when_alpha_positive(alpha, monkeypatch, tiny_data, tiny_tokenizer):
    """COMPLEMENT_ALPHA=0 creates no tracker; otherwise each micro-step is weighted and each step's
    pairs are added after it (so step 1 is unweighted and step 2 sees step 1's counts)."""
    RecordingCounts.instances = []
    monkeypatch.setattr(train_gpt, "BigramCounts", RecordingCounts)
    args = tiny_args(DATA_PATH=tiny_data, TOKENIZER_PATH=tiny_tokenizer, VOCAB_SIZE=64, TRAIN_BATCH_TOKENS=1024,
                     ITERATIONS=2, WARMUP_STEPS=0, MAX_WALLCLOCK_SECONDS=0, COMPLEMENT_ALPHA=alpha)
    torch.manual_seed(0)
    model = train_gpt.GPT(args)
    steps = train_gpt.train(args, model, cpu_run())
    assert steps == 2
    if alpha == "0":
        assert RecordingCounts.instances == []
        return
    (tracker,) = RecordingCounts.instances
    assert tracker.alpha == 0.5 and tracker.add_calls == [8, 8]  # grad_accum = 8 micro-batches per step
    assert len(tracker.weight_calls) == 16
    first_step, second_step = tracker.weight_calls[:8], tracker.weight_calls[8:]
    assert all(torch.equal(w, torch.ones_like(w)) for _, _, w in first_step)
    assert any((w < 1).any() for _, _, w in second_step)
    step1_pairs = [(x, y) for x, y, _ in first_step]
    for x, y, w in second_step:
        torch.testing.assert_close(w, expected_weights(step1_pairs, x, y, 0.5))
