"""Benchmark: tokenpo's trainer against TRL's `DPOTrainer`, same model, pairs and batches.

Usage (from the repository root, after scripts/setup):

    .venv/bin/python scripts/bench/train.py                    # both sets, 6-9 min on 2 cores
    .venv/bin/python scripts/bench/train.py --quick            # smoke run, 1-2 min; ratios: noise
    .venv/bin/python scripts/bench/train.py --steps 20 --batch-size 8 --sets long
    .venv/bin/python scripts/bench/train.py --row-tokens 0     # tokenpo: a pair per row
    python3 scripts/bench/train.py --device cuda --bf16 --model base --batch-size 32  # a GPU

Model: a transformers Llama (--model small: 4 layers, hidden 256; base: 12 layers, hidden
768) initialized at random from a config.json with the same seed on both sides, float32 (or
bf16 autocast with --bf16 on both sides), on the CPU (2 threads unless --threads) or the
GPU (--device cuda, where a step's time ends when the GPU has finished it); the reference is
the same initial weights. Pairs: the short structured JSON pairs (1-3 tokens
apart) and the long chat pairs of scripts/bench/prep.py, EOS appended to each completion,
`steps * batch_size` of them, so each side sees each pair once. Both run DPO (sigmoid, beta
0.1), AdamW at a constant lr with gradients clipped to 1, the same seed, batch size and steps:
- tokenpo: `tokenpo.prep` to Arrow IPC shards and the reference log-probs stored with
  `compute_ref_logps` (a one-time cost, timed apart and left out of tokens/s), then
  `tokenpo.train.loop.train` in the shared layout (one copy of the prompt and of the
  completions' common prefix per pair), pairs packed into rows of the trainer's default
  `data.row_tokens` unless --row-tokens says otherwise (0: a pair per row);
- TRL: `DPOTrainer` with an explicit reference model, its defaults otherwise, except
  `gradient_checkpointing=False`: TRL turns it on by default and tokenpo does not, so the two
  would not do the same work per token (--trl-checkpointing measures TRL's default;
  --checkpointing turns it on for both sides alike).

Each side trains in a process of its own (so its peak RSS is its own), the two started
together and run in lockstep: a step of one, then a step of the other, the order flipping
every step, so that other work on a shared machine slows both alike. A step is timed from the
go signal to the end of its optimizer step (data, forward, backward, optimizer and the
previous step's logging; not start-up, nor TRL's dataset tokenization). tokens/s = tokens /
seconds over the steps after the warm-up, tokens counted as TRL counts them: prompt + chosen
plus prompt + rejected per pair. The CPU-time speed-up is the same ratio from each process's
CPU seconds over those steps: a cross-check that other load disturbs less. Targets: >= 2x
TRL's tokens/s on the short JSON pairs, >= 1.3x on the chat pairs, peak RSS no higher than
TRL's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow.parquet as pq
import tomli_w
from prep import short_pair, write_set  # scripts/bench/prep.py, beside this script
from rich.console import Console
from rich.table import Table

from tokenpo.synthetic import train_bpe_tokenizer
from tokenpo.train.config import DataConfig

EOS = "<|endoftext|>"
SEED = 0
LEARNING_RATE = 5e-5
LLAMA = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "use_cache": False,
}
MODELS = {
    "small": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4},
    "base": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12},
}
"""--model: the Llama's sizes (heads of 64 dimensions)."""
SETS = {"short": ("short JSON", 2.0), "long": ("long chat", 1.3)}
"""Pair maker name in prep.py -> (label, target tokens/s ratio)."""
TRAINERS = ("tokenpo", "trl")


@dataclass(frozen=True, slots=True)
class Spec:
    """What a child process runs on: one pair set, the run's length and the shared files."""

    work: str
    pairs: str
    steps: int
    batch_size: int
    warmup: int
    threads: int = 2
    device: str = "cpu"
    bf16: bool = False
    row_tokens: int | None = None
    """tokenpo's data.row_tokens; None: the trainer's default, 0: a pair per row."""
    trl_checkpointing: bool = False
    tokenpo_checkpointing: bool = False

    @property
    def shards(self) -> Path:
        return Path(self.work) / f"{Path(self.pairs).stem}-shards"

    @property
    def model_config(self) -> Path:
        return Path(self.work) / "llama" / "config.json"

    @property
    def tokenizer(self) -> Path:
        return Path(self.work) / "tokenizer.json"


# Children run `python train.py --run NAME SPEC_JSON`: stdin carries the parent's go signals,
# stdout the child's answers (a line per step, then its result as JSON), stderr the rest.
class Baton:
    """A child's side of the lockstep: it trains a step only when the parent says go."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.answers: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # what libraries print (TRL prints its logs) goes to stderr
        self.go = self.go_cpu = 0.0
        self.step_seconds: list[float] = []
        self.step_cpu_seconds: list[float] = []

    def wait(self) -> None:
        """Blocks until the parent says go (at the start, and after each step)."""
        if not sys.stdin.readline():
            raise SystemExit("the parent went away")
        self.go, self.go_cpu = time.perf_counter(), time.process_time()

    def step_done(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()  # the step is done when the GPU is
        self.step_seconds.append(time.perf_counter() - self.go)
        self.step_cpu_seconds.append(time.process_time() - self.go_cpu)
        print("done", file=self.answers)
        self.wait()

    def answer(self, result: dict[str, float]) -> None:
        print(json.dumps(result), file=self.answers)


def run_tokenpo(spec: Spec, baton: Baton) -> dict[str, float]:
    from tokenpo.train.config import load_config
    from tokenpo.train.loop import train

    reporter = TokenpoReporter(baton)
    train(load_config(write_run_config(spec)), reporter=reporter)
    return measured(spec, baton, reporter.tokens)


class TokenpoReporter:
    """A tokenpo :class:`~tokenpo.train.loop.Reporter` that passes the baton."""

    def __init__(self, baton: Baton) -> None:
        self.baton = baton
        self.tokens: list[int] = []

    def start(self, *, total_steps: int, first_step: int) -> None:
        self.baton.wait()

    def step(self, record: dict[str, Any]) -> None:
        # tokens_per_s counts tokens as TRL does, over the trainer's own step time.
        self.tokens.append(round(record["tokens_per_s"] * record["seconds_per_step"]))
        self.baton.step_done()

    def validation(self, record: dict[str, Any]) -> None:
        pass

    def message(self, text: str) -> None:
        pass


def write_run_config(spec: Spec) -> Path:
    """A run.toml, as tests/train/train_kit.py writes one, for the Llama on ``spec``'s pairs."""
    config = {
        "run": {
            "out_dir": str(spec.shards.with_name(spec.shards.name + "-run")),
            "seed": SEED,
            "device": spec.device,
        },
        "model": {
            "source": str(spec.model_config),
            "gpt": {},
            "activation_checkpointing": spec.tokenpo_checkpointing,
            "mixed_precision": "bf16" if spec.bf16 else "none",
        },
        "data": {
            "shards": str(spec.shards),
            "batch_size": spec.batch_size,
            "layout": "shared",
            **({} if spec.row_tokens is None else {"row_tokens": spec.row_tokens}),
        },
        "loss": {"name": "dpo", "beta": 0.1},
        "optim": {"lr": LEARNING_RATE, "grad_clip": 1.0},
        "schedule": {"max_steps": spec.steps, "kind": "constant"},
        "logging": {"every": 1},
    }
    path = spec.shards.with_name(spec.shards.name + "-run.toml")
    path.write_text(tomli_w.dumps(config))
    return path


def run_trl(spec: Spec, baton: Baton) -> dict[str, float]:
    from datasets import Dataset, disable_progress_bars
    from transformers import PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer

    from tokenpo.models import load_causal_lm

    disable_progress_bars()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(spec.tokenizer), eos_token=EOS, pad_token=EOS
    )
    args = DPOConfig(
        output_dir=str(Path(spec.work) / "trl"),
        per_device_train_batch_size=spec.batch_size,
        max_steps=spec.steps,
        loss_type=["sigmoid"],
        beta=0.1,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        gradient_checkpointing=spec.trl_checkpointing,
        max_length=None,
        use_cpu=spec.device == "cpu",
        bf16=spec.bf16,
        dataloader_num_workers=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=SEED,
    )
    trainer = DPOTrainer(
        model=load_causal_lm(spec.model_config, seed=SEED),
        ref_model=load_causal_lm(spec.model_config, seed=SEED),
        args=args,
        train_dataset=Dataset.from_list(pq.read_table(spec.pairs).to_pylist()),
        processing_class=tokenizer,
        callbacks=[_trl_callback(baton)],
    )
    trainer.train()
    # DPOTrainer logs the running total of attention-mask tokens as num_tokens.
    totals = [int(log["num_tokens"]) for log in trainer.state.log_history if "num_tokens" in log]
    tokens = [after - before for before, after in itertools.pairwise([0, *totals])]
    return measured(spec, baton, tokens)


def _trl_callback(baton: Baton) -> Any:
    from transformers import TrainerCallback

    class PassBaton(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, *_args: Any, **_kwargs: Any) -> None:
            baton.wait()

        def on_step_end(self, *_args: Any, **_kwargs: Any) -> None:
            baton.step_done()

    return PassBaton()


def measured(spec: Spec, baton: Baton, tokens: list[int]) -> dict[str, float]:
    """tokens per second of wall and of CPU time over the steps after the warm-up, and this
    process's peak RSS."""
    import torch

    if len(baton.step_seconds) != spec.steps or len(tokens) != spec.steps:
        raise SystemExit(f"{len(baton.step_seconds)} steps timed, {len(tokens)} counted")
    timed = sum(tokens[spec.warmup :])
    seconds = sum(baton.step_seconds[spec.warmup :])
    return {
        "tokens_per_s": timed / seconds,
        "tokens_per_cpu_s": timed / sum(baton.step_cpu_seconds[spec.warmup :]),
        "seconds_per_step": seconds / (spec.steps - spec.warmup),
        "tokens_per_pair": sum(tokens) / (spec.steps * spec.batch_size),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if spec.device == "cuda" else 0,
        "threads": torch.get_num_threads(),
    }


CHILDREN = {"tokenpo": run_tokenpo, "trl": run_trl}


def child_main(name: str, spec_json: str) -> None:
    import torch

    spec = Spec(**json.loads(spec_json))
    torch.set_num_threads(spec.threads)
    baton = Baton(spec.device)
    baton.answer(CHILDREN[name](spec, baton))


# The parent's side.
class Child:
    """A running child process and its log file."""

    def __init__(self, name: str, spec: Spec) -> None:
        self.name = name
        self.log = Path(spec.work) / f"{name}-{Path(spec.pairs).stem}.log"
        command = [sys.executable, __file__, "--run", name, json.dumps(asdict(spec))]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def answer(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            sys.exit(f"{self.name} failed:\n{self.log.read_text()[-4000:]}")
        return line

    def result(self) -> dict[str, float]:
        result = dict(json.loads(self.answer()))
        self.process.wait()
        return result


def run_setup(spec: Spec) -> dict[str, float]:
    """tokenpo's one-time work, in the parent: prep, then the stored reference log-probs."""
    import torch
    import transformers.models.llama.modeling_llama  # noqa: F401  (imports are not the pass)

    import tokenpo
    from tokenpo.train.ref_logps import RefLogpsOptions, compute_ref_logps

    torch.set_num_threads(spec.threads)
    started = time.perf_counter()
    options = tokenpo.PrepOptions(format="ipc", eos_token=EOS)
    tokenpo.prep([Path(spec.pairs)], spec.tokenizer, spec.shards, options)
    prepped = time.perf_counter()
    reference = RefLogpsOptions(seed=SEED, device=spec.device)  # type: ignore[arg-type]
    compute_ref_logps(spec.shards, spec.model_config, reference)
    return {"prep_s": prepped - started, "ref_s": time.perf_counter() - prepped}


def lockstep(spec: Spec) -> dict[str, dict[str, float]]:
    """Both trainers' results; they train one step at a time in turn (ABBA order)."""
    children = [Child(name, spec) for name in TRAINERS]
    for step in range(spec.steps):
        for child in children if step % 2 == 0 else children[::-1]:
            child.go()
            child.answer()
    for child in children:
        child.go()  # finish: save, export, report
    return {child.name: child.result() for child in children}


def make_model_files(work: Path, model: str) -> None:
    """The tokenizer prep.py trains, and a Llama config.json of size ``model`` for it."""
    rng = random.Random(0)
    corpus = [json.dumps(short_pair(rng)) for _ in range(5000)]
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=4000)
    tokenizer.save(str(work / "tokenizer.json"))
    eos = tokenizer.token_to_id(EOS)
    heads = MODELS[model]["hidden_size"] // 64
    config = {
        **LLAMA,
        **MODELS[model],
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": eos,
    }
    (work / "llama").mkdir()
    (work / "llama" / "config.json").write_text(json.dumps(config, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps on each side")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of tokens/s")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 steps of 4 pairs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on each side")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="both sides")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides")
    parser.add_argument("--model", choices=MODELS, default="small", help="the Llama's size")
    parser.add_argument(
        "--row-tokens",
        type=int,
        help="tokenpo: pack pairs into rows this long (0: a pair per row; default: the trainer's)",
    )
    parser.add_argument("--trl-checkpointing", action="store_true", help="TRL's default")
    parser.add_argument(
        "--checkpointing",
        action="store_true",
        help="activation checkpointing on both sides (TRL's default, and tokenpo's option)",
    )
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS), help="pair sets")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--run", nargs=2, metavar=("NAME", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        child_main(*args.run)
        return
    if args.quick:
        args.steps, args.batch_size, args.warmup = 3, 4, 1
    if not 0 <= args.warmup < args.steps:
        parser.error("--warmup must be at least 0 and less than --steps")
    compare(Console(width=None if sys.stdout.isatty() else 120), args)


def compare(console: Console, args: argparse.Namespace) -> None:
    results: dict[str, dict[str, dict[str, float]]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        make_model_files(work, args.model)
        for kind in args.sets:
            pairs = work / f"{kind}.parquet"
            write_set(pairs, args.steps * args.batch_size, kind, seed=1)
            spec = Spec(
                work=str(work),
                pairs=str(pairs),
                steps=args.steps,
                batch_size=args.batch_size,
                warmup=args.warmup,
                threads=args.threads,
                device=args.device,
                bf16=args.bf16,
                row_tokens=args.row_tokens,
                trl_checkpointing=args.trl_checkpointing or args.checkpointing,
                tokenpo_checkpointing=args.checkpointing,
            )
            results[kind] = {"setup": run_setup(spec), **lockstep(spec)}
            console.log(f"{SETS[kind][0]}: done")
    console.print(result_table(args, results))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "results": results}, default=str))
    default_rows = DataConfig(shards="-").row_tokens
    row_tokens = default_rows if args.row_tokens is None else args.row_tokens
    tokenpo_rows = f"rows of {row_tokens} tokens" if row_tokens else "a pair per row"
    console.print(
        f"tokenpo: shared layout, {tokenpo_rows}, reference log-probs stored beforehand (prep +"
        f" ref, one-time, not in tokens/s), activation checkpointing "
        f"{'on' if args.checkpointing else 'off'}. TRL: reference model run every step, gradient "
        f"checkpointing {'on' if args.trl_checkpointing or args.checkpointing else 'off'}. "
        f"CPU-time speed-up: the "
        f"same ratio from each process's CPU seconds, less sensitive to other load. "
        f"{os.cpu_count()} cores, 1-minute load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after."
    )


def result_table(args: argparse.Namespace, results: dict[str, Any]) -> Table:
    gpu = args.device == "cuda"
    title = (
        f"train: tokenpo vs TRL DPOTrainer, {args.model} Llama, {args.steps} steps of "
        f"{args.batch_size} pairs (tokens/s over the last {args.steps - args.warmup}), "
        f"{'bf16 autocast' if args.bf16 else 'float32'}, "
        + (f"GPU: {_gpu_name()}" if gpu else f"torch threads: {args.threads}")
    )
    table = Table(title=title)
    columns: tuple[str, ...] = ("set", "tok/pair", "tokenpo tok/s", "TRL tok/s", "speed-up")
    columns += ("target",)
    columns += ("CPU-time speed-up", "tokenpo RSS", "TRL RSS")
    columns += ("tokenpo GPU mem", "TRL GPU mem", "prep+ref s") if gpu else ("prep+ref s",)
    for column in columns:
        table.add_column(column, justify="right", style="bold" if column == "speed-up" else None)
    for kind, result in results.items():
        label, target = SETS[kind]
        ours, theirs, setup = (result[name] for name in (*TRAINERS, "setup"))
        if round(ours["tokens_per_pair"], 3) != round(theirs["tokens_per_pair"], 3):
            label += " (token counts differ!)"
        if {ours["threads"], theirs["threads"]} != {args.threads}:
            label += " (thread counts differ!)"
        table.add_row(
            label,
            f"{theirs['tokens_per_pair']:.0f}",
            f"{ours['tokens_per_s']:,.0f}",
            f"{theirs['tokens_per_s']:,.0f}",
            f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x",
            f">= {target}x",
            f"{ours['tokens_per_cpu_s'] / theirs['tokens_per_cpu_s']:.2f}x",
            f"{ours['peak_rss_gib']:.2f} GiB",
            f"{theirs['peak_rss_gib']:.2f} GiB",
            *(
                (f"{ours['peak_gpu_gib']:.2f} GiB", f"{theirs['peak_gpu_gib']:.2f} GiB")
                if gpu
                else ()
            ),
            f"{setup['prep_s']:.1f} + {setup['ref_s']:.1f}",
        )
    return table


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name()


if __name__ == "__main__":
    main()
