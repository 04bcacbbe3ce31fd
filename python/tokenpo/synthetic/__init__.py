"""The embedded token-critical annotation task used by the demo and the tests.

:mod:`~tokenpo.synthetic.task` generates the messages, their gold annotations and a
tokenizer; :mod:`~tokenpo.synthetic.negatives` builds confusion-aware rejected annotations;
:mod:`~tokenpo.synthetic.example` holds one built-in pair for quick checks.
"""

from tokenpo.synthetic.example import EXAMPLE_PAIR, ExamplePair, example_corpus, train_bpe_tokenizer
from tokenpo.synthetic.negatives import (
    DEFAULT_MIX,
    ConfusionStats,
    Negative,
    Strategy,
    align,
    count_wrong_fields,
    make_negatives,
    pair_row,
    pairs_from_model_outputs,
    strategy_weights,
)
from tokenpo.synthetic.task import (
    SCHEMA,
    Annotation,
    Example,
    Schema,
    TaskData,
    completion_for,
    generate_task,
    parse_annotations,
    prompt_for,
    split_rows,
    to_json,
    train_task_tokenizer,
    write_rows,
    write_split,
)

__all__ = [
    "DEFAULT_MIX",
    "EXAMPLE_PAIR",
    "SCHEMA",
    "Annotation",
    "ConfusionStats",
    "Example",
    "ExamplePair",
    "Negative",
    "Schema",
    "Strategy",
    "TaskData",
    "align",
    "completion_for",
    "count_wrong_fields",
    "example_corpus",
    "generate_task",
    "make_negatives",
    "pair_row",
    "pairs_from_model_outputs",
    "parse_annotations",
    "prompt_for",
    "split_rows",
    "strategy_weights",
    "to_json",
    "train_bpe_tokenizer",
    "train_task_tokenizer",
    "write_rows",
    "write_split",
]
