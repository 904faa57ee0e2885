"""Why ``blip2core.small_batch_linear`` exists: ``nn.Linear``'s ``x @ W.T`` against the same product
written ``(W @ x.T).T`` (``transposed_linear``, what ``SmallBatchLinear`` runs), float32 on the CPU, for the weight shapes
of BLIP-2's language models (OPT-125m and OPT-2.7B) and the row counts generation runs (1: greedy
decoding; 5: a 5-beam search; 32: the Q-Former's queries; 40: 8 questions x 5 beams; 257: as many
rows as one image's ViT-B tokens, where ``SmallBatchLinear`` keeps ``F.linear``).

    .venv/bin/python benchmarks/linear_layouts.py [--rows 1,2,5,8,16,32,40,64,128,257] [--repeats 7] [--misalign]

``--misalign``: each weight starts 4 bytes past a 64-byte boundary, as memory-mapped safetensors
weights do (oneMKL takes other code paths for unaligned data).

Each shape is timed over several distinct weights (more bytes than the CPU's caches, as in a real
forward pass, except where one weight is already larger); the two forms alternate
(``benchmarks.timing.interleaved``), medians kept. Prints milliseconds per layer and the speed-up
of ``(W @ x.T).T`` (> 1: faster), and the largest relative difference of the outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also run as a script: benchmarks.* importable
from benchmarks.machine import cpu_summary  # noqa: E402
from benchmarks.timing import median_seconds  # noqa: E402
from blip2core.small_batch_linear import transposed_linear  # noqa: E402

#: (label, out_features, in_features)
SHAPES = (
    ("OPT-125m attention 768x768", 768, 768),
    ("OPT-125m fc1 3072x768", 3072, 768),
    ("OPT-125m fc2 768x3072", 768, 3072),
    ("OPT-125m head 50272x768", 50272, 768),
    ("OPT-2.7B attention 2560x2560", 2560, 2560),
    ("OPT-2.7B fc1 10240x2560", 10240, 2560),
    ("OPT-2.7B fc2 2560x10240", 2560, 10240),
)
CACHE_BYTES = 64 << 20  # weights per shape: at least this much, so each call reads from memory


def placed(weight: torch.Tensor, misalign: bool) -> torch.Tensor:
    """``weight`` itself, or (``misalign``) a copy starting 4 bytes past a 64-byte boundary."""
    if not misalign:
        return weight
    storage = torch.empty(weight.numel() + 16)
    skip = (16 - storage.data_ptr() % 64 // 4) % 16 + 1  # float32 elements to a boundary, then one more
    copy = storage[skip:skip + weight.numel()].view_as(weight)
    copy.copy_(weight)
    assert copy.data_ptr() % 64 == 4
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1,2,5,8,16,32,40,64,128,257")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--misalign", action="store_true", help="weights 4 bytes past a 64-byte boundary")
    args = parser.parse_args()
    rows_list = [int(r) for r in args.rows.split(",")]
    print(f"{cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"command: python benchmarks/linear_layouts.py --rows {args.rows} --repeats {args.repeats}"
          + (" --misalign" if args.misalign else "") + "\n")
    print(f"{'weight':32} {'rows':>5} {'x @ W.T ms':>11} {'(W @ x.T).T ms':>15} {'speed-up':>9} {'max rel diff':>13}")
    torch.manual_seed(0)
    with torch.inference_mode():
        for label, out_features, in_features in SHAPES:
            count = max(1, CACHE_BYTES // (out_features * in_features * 4))
            weights = [placed(torch.randn(out_features, in_features) / in_features**0.5, args.misalign)
                       for _ in range(count)]
            biases = [torch.randn(out_features) for _ in range(count)]
            for rows in rows_list:
                x = torch.randn(rows, in_features)
                times = median_seconds({
                    "linear": lambda: [F.linear(x, w, b) for w, b in zip(weights, biases)],
                    "other": lambda: [transposed_linear(x, w, b) for w, b in zip(weights, biases)],
                }, args.repeats)
                reference = F.linear(x, weights[0], biases[0])
                diff = ((transposed_linear(x, weights[0], biases[0]) - reference).abs().max() / reference.abs().max()).item()
                linear_ms, other_ms = times["linear"] * 1e3 / count, times["other"] * 1e3 / count
                print(f"{label:32} {rows:>5} {linear_ms:>11.3f} {other_ms:>15.3f} {linear_ms / other_ms:>8.2f}x "
                      f"{diff:>13.1e}", flush=True)


if __name__ == "__main__":
    main()
