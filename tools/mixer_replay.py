"""Replay the n-gram mixer over a run's per-token dump, on CPU, without the model.

    python tools/mixer_replay.py DUMP.npz [--rule ours|reference] [--discount 0.75] [--min-count 2]

DUMP.npz is what `EVAL_DUMP_NLL` wrote (its `model_nll_bits` and `entropy_bits` are the model's
own part of each scored target). The val tokens and the mixer's settings (NGRAM_ORDER,
NGRAM_DISCOUNT, TTT_CHUNK_TOKENS, VAL_MAX_TOKENS, ...) come from the usual env vars, so use those
of the run. Chunk by chunk (alpha is learned from earlier TTT_CHUNK_TOKENS chunks) it mixes the
model's probability of each target with the cache, as evaluate() does, and prints the model's BPB
and the mixed BPB.

  --rule ours       train_gpt.NgramMixer itself: with the run's settings it reproduces the run's
                    final_ngram_ttt (mixer on the TTT pass) or ngram_only (TTT off) when
                    EVAL_STRIDE divides TTT_CHUNK_TOKENS (then evaluate()'s rounds are the chunks).
  --rule reference  the reference's recipe made valid: the longest context seen at least
                    --min-count times, q(v) = N(ctx, v) / N(ctx), alpha = 0.20 + 0.55
                    sigmoid(2 (H - 3)) from the model's entropy H (nats), alpha = 0 where no
                    context qualifies. Same exact counts of every earlier target.

Try other NGRAM_DISCOUNT values or rules here before spending GPU time.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_gpt as tg  # noqa: E402


def reference_q(mixer: tg.NgramMixer, tokens, positions, min_count: int):
    """q(target) at the longest context seen >= min_count times, and whether one qualified."""
    earlier = positions - 1  # targets before each position's
    q = torch.zeros(len(positions), dtype=torch.float64)
    found = torch.zeros(len(positions), dtype=torch.bool)
    for m in range(1, mixer.order):
        context = torch.where(positions >= m, mixer.ids[m][(positions - m).clamp_min(0)], -1)
        seen = mixer.as_context[m].before(context, earlier)
        ok = seen >= min_count
        keys, known = context * mixer.vocab + tokens[positions], mixer.keys[m + 1]
        at = torch.searchsorted(known, keys).clamp_max(len(known) - 1)
        followed = torch.where(known[at] == keys, at, -1)
        count = mixer.as_ngram[m + 1].before(followed, earlier).double()
        q = torch.where(ok, count / seen.clamp_min(1), q)
        found |= ok
    return q, found


def replay(dump, tokens: torch.Tensor, args, rule: str, min_count: int) -> tuple[float, float]:
    """(model BPB, mixed BPB) over the dumped targets."""
    n = len(dump["model_nll_bits"])
    model_p = torch.from_numpy(np.exp2(-dump["model_nll_bits"].astype(np.float64)))
    entropy = torch.from_numpy(dump["entropy_bits"].astype(np.float64) * math.log(2))
    n_bytes = float(dump["bytes"].astype(np.float64).sum())
    mixer = tg.NgramMixer(args, tokens[:n + 1])  # as evaluate(): a target's counts cover every target before it
    mixed_bits = 0.0
    for start in range(0, n, args.ttt_chunk_tokens):
        positions = torch.arange(start + 1, min(start + args.ttt_chunk_tokens, n) + 1)
        p, e = model_p[positions - 1], entropy[positions - 1]
        if rule == "ours":
            mixed, q, bins = mixer.probabilities(p[:, None], e, positions, tokens[positions, None])
            mixer.alpha_losses += mixer.alpha_loss_table(p, q.squeeze(1), bins)
            mixed = mixed.squeeze(1)
        else:
            q, found = reference_q(mixer, tokens, positions, min_count)
            alpha = (0.20 + 0.55 * torch.sigmoid(2 * (e - 3.0))) * found
            mixed = (1 - alpha) * p + alpha * q
        mixed_bits += float(-torch.log2(mixed).sum())
    return float(-torch.log2(model_p).sum()) / n_bytes, mixed_bits / n_bytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dump", type=Path, help="the .npz written by EVAL_DUMP_NLL")
    parser.add_argument("--rule", choices=("ours", "reference"), default="ours")
    parser.add_argument("--discount", type=float, help="NGRAM_DISCOUNT for --rule ours (default: the env's)")
    parser.add_argument("--min-count", type=int, default=2, help="NGRAM_MIN_COUNT of --rule reference")
    cli = parser.parse_args(argv)
    try:
        args = tg.Hyperparameters()
        if args.ttt_enabled and args.ttt_mode == "lora":
            raise tg.UserError("TTT_MODE=lora: this tool replays the stream's chunks (TTT_MODE=chunk, or TTT off); "
                               "a lora run's mixer counts inside documents (train_gpt.lora_mixer)")
        if cli.discount is not None:
            args.ngram_discount = cli.discount
        dump = np.load(cli.dump)
        missing = {"model_nll_bits", "entropy_bits", "bytes"} - set(dump.files)
        if missing:
            raise tg.UserError(f"{cli.dump} lacks {sorted(missing)}: write it with EVAL_DUMP_NLL of this version")
        tokens = tg.load_val_tokens(args)
        if len(tokens) - 1 < len(dump["bytes"]):
            raise tg.UserError(f"the val set has {len(tokens) - 1} targets, the dump {len(dump['bytes'])}: use the run's DATA_PATH and VAL_MAX_TOKENS")
    except (tg.UserError, OSError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    model_bpb, mixed_bpb = replay(dump, tokens, args, cli.rule, cli.min_count)
    setting = f"NGRAM_DISCOUNT={args.ngram_discount}" if cli.rule == "ours" else f"min_count={cli.min_count}"
    print(f"mixer_replay rule:{cli.rule} {setting} NGRAM_ORDER={args.ngram_order} TTT_CHUNK_TOKENS={args.ttt_chunk_tokens} "
          f"targets:{len(dump['bytes'])} model_bpb:{model_bpb:.8f} mixed_bpb:{mixed_bpb:.8f} gain:{model_bpb - mixed_bpb:+.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
