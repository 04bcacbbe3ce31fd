"""Forward + backward time of every loss next to dpo, on the same inputs, in one run.

    .venv/bin/python scripts/bench/losses.py                      # B=64, T=512, CPU, float32
    .venv/bin/python scripts/bench/losses.py --device cuda --dtype bfloat16

Each round times every loss once, in turn (after one untimed call of the same loss, so caches
are warm), so drift (thermal, other load) hits all of them alike; the table gives the median
over rounds and the ratio to dpo's median. tdpo needs
``[B, T, V]`` logits, so it runs in a second table at its own (smaller) shape next to dpo at
that shape. tbpo_q's value head is a ``H -> 1`` matmul over every token; ``--hidden`` sets H.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table

from tokenpo.losses import LossOutput, PairLogps, available, build, trainable_module

Step = Callable[[PairLogps], LossOutput]


@dataclass(frozen=True, kw_only=True, slots=True)
class Shape:
    """The size of a benchmark batch."""

    batch: int
    """B, pairs."""
    tokens: int
    """T, completion tokens per side."""
    vocab: int = 0
    """V, vocabulary size; 0 leaves the logits out."""
    hidden: int = 0
    """H, hidden size; 0 leaves the hidden states out."""


def make_batch(shape: Shape, *, dtype: torch.dtype, device: torch.device) -> PairLogps:
    """Random pairs with ragged lengths, references, weights, diffs and difficulty."""
    generator = torch.Generator(device="cpu").manual_seed(0)

    def rand(*size: int, scale: float = 1.0, grad: bool = False) -> torch.Tensor:
        value = (torch.rand(*size, generator=generator) * scale).to(device, dtype)
        return value.requires_grad_(grad)

    def lengths_mask() -> torch.Tensor:
        lengths = torch.randint(shape.tokens // 2, shape.tokens + 1, (shape.batch, 1))
        return (torch.arange(shape.tokens) < lengths).to(device)

    size = (shape.batch, shape.tokens)
    logits: dict[str, torch.Tensor] = {}
    if shape.vocab:
        for name in ("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected"):
            logits[f"{name}_logits"] = rand(*size, shape.vocab, scale=4.0, grad="policy" in name)
    hidden: dict[str, torch.Tensor] = {}
    if shape.hidden:
        hidden = {f"{side}_hidden": rand(*size, shape.hidden) for side in ("chosen", "rejected")}
    return PairLogps(
        policy_chosen=-rand(*size, scale=3.0).requires_grad_(),
        policy_rejected=-rand(*size, scale=3.0).requires_grad_(),
        chosen_mask=lengths_mask(),
        rejected_mask=lengths_mask(),
        ref_chosen=-rand(*size, scale=3.0),
        ref_rejected=-rand(*size, scale=3.0),
        chosen_weight=0.5 + rand(*size),
        rejected_weight=0.5 + rand(*size),
        chosen_diff=rand(*size) < 0.1,
        rejected_diff=rand(*size) < 0.1,
        difficulty=rand(shape.batch),
        **logits,
        **hidden,
    )


def build_for(name: str, shape: Shape, device: torch.device) -> Step:
    """The loss ``name`` with default parameters (mixdpo around dpo), on ``device``."""
    params: dict[str, object] = {"hidden_size": shape.hidden} if name == "tbpo_q" else {}
    loss = build(name, **params)
    module = trainable_module(loss)
    if module is not None:
        module.to(device)
    return loss


def time_losses(
    steps: dict[str, Step], batch: PairLogps, *, rounds: int, warmup: int
) -> dict[str, float]:
    """Median seconds of forward + backward of each step, interleaved round by round."""
    leaves = [t for t in _tensors(batch) if t.requires_grad]
    on_cuda = batch.policy_chosen.is_cuda

    def synchronize() -> None:
        if on_cuda:
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(warmup + rounds):
        for name, step in steps.items():
            # An untimed call first, so no loss pays for the caches its predecessor evicted
            # (tbpo_q streams [B, T, H] hidden states through them).
            for timed in (False, True):
                for leaf in leaves:
                    leaf.grad = None
                synchronize()
                start = time.perf_counter()
                step(batch).loss.backward()
                synchronize()
                if timed and round_index >= warmup:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _tensors(batch: PairLogps) -> list[torch.Tensor]:
    values = (getattr(batch, name) for name in batch.__dataclass_fields__)
    return [value for value in values if isinstance(value, torch.Tensor)]


def print_table(console: Console, title: str, medians: dict[str, float]) -> None:
    """One row per loss: median milliseconds and ratio to dpo."""
    table = Table(title=title)
    table.add_column("loss")
    table.add_column("fwd+bwd ms", justify="right")
    table.add_column("ratio to dpo", justify="right")
    for name, seconds in medians.items():
        table.add_row(name, f"{seconds * 1e3:.3f}", f"{seconds / medians['dpo']:.2f}")
    console.print(table)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="B (default 64)")
    parser.add_argument("--tokens", type=int, default=512, help="T (default 512)")
    parser.add_argument("--hidden", type=int, default=1024, help="H for tbpo_q (default 1024)")
    parser.add_argument("--tdpo-batch", type=int, default=8, help="B for tdpo (default 8)")
    parser.add_argument("--tdpo-tokens", type=int, default=128, help="T for tdpo (default 128)")
    parser.add_argument("--vocab", type=int, default=32_000, help="V for tdpo (default 32000)")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    console = Console(width=100)
    where = (
        f"{args.device}, {args.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )

    shape = Shape(batch=args.batch, tokens=args.tokens, hidden=args.hidden)
    names = [name for name in available() if name != "tdpo"]
    steps = {name: build_for(name, shape, device) for name in names}
    medians = time_losses(
        steps, make_batch(shape, dtype=dtype, device=device), rounds=args.rounds, warmup=args.warmup
    )
    print_table(console, f"B={shape.batch} T={shape.tokens} H={shape.hidden} ({where})", medians)

    tdpo_shape = Shape(batch=args.tdpo_batch, tokens=args.tdpo_tokens, vocab=args.vocab)
    tdpo_steps = {name: build_for(name, tdpo_shape, device) for name in ("dpo", "tdpo")}
    tdpo_batch = make_batch(tdpo_shape, dtype=dtype, device=device)
    tdpo_medians = time_losses(tdpo_steps, tdpo_batch, rounds=max(args.rounds // 3, 3), warmup=1)
    title = f"tdpo: B={tdpo_shape.batch} T={tdpo_shape.tokens} V={tdpo_shape.vocab} ({where})"
    print_table(console, title, tdpo_medians)


if __name__ == "__main__":
    main()
