"""The pairs stage without a model: the examples it reads and the rows it builds."""

from __future__ import annotations

import random
from pathlib import Path

from tokenpo.demo.stages import pair_rows, read_examples
from tokenpo.synthetic import (
    ConfusionStats,
    generate_task,
    make_negatives,
    pair_row,
    pairs_from_model_outputs,
    to_json,
    write_split,
)


def test_read_examples_marks_them_with_their_split(tmp_path: Path) -> None:
    task = generate_task(train=3, validation=4, test=0, seed=2)
    for split in ("train", "validation"):
        examples = read_examples(write_split(task, split, tmp_path / f"{split}.jsonl"), split)
        assert [(e.message, e.annotations) for e in examples] == [
            (e.message, e.annotations) for e in task.split(split)
        ]
        assert {example.split for example in examples} == {split}


def test_a_model_output_equal_to_a_perturbation_gives_one_pair() -> None:
    examples = generate_task(train=6, validation=0, test=0, seed=3).train
    golds = [example.annotations for example in examples]
    stats = ConfusionStats.from_predictions(zip(golds, golds, strict=True))
    rng = random.Random(7)
    perturbed = [(e, n) for e in examples for n in make_negatives(e, stats, rng=rng, count=2)]
    # The model got example 0 wrong exactly as its first perturbation, example 1 wrong in a
    # way no perturbation is (no annotation at all), the others right.
    outputs = [perturbed[0][1].text, "[]", *(to_json(gold) for gold in golds[2:])]
    rows = pair_rows(examples, outputs, stats, rng=random.Random(7), negatives=2)
    model_output = next(
        pair for pair in pairs_from_model_outputs(examples, outputs) if pair[0] is examples[1]
    )
    assert rows == [pair_row(example, negative) for example, negative in perturbed] + [
        pair_row(*model_output)
    ]
