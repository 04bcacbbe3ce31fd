"""Evaluation: greedy generation scored against gold annotations, and pairwise accuracy.

result = evaluate("runs/tabpo/final", "test.jsonl", pairs="shards-test/")
result.structured.joint.f1        # label and span all right, micro-F1
result.pairwise.accuracy          # implicit reward ranks chosen over rejected

The parts work on their own: :func:`score_annotations` on parsed annotation lists,
:func:`generate_completions` on any model and tokenizer directory, :func:`pairwise_accuracy`
on any prepared directory.
"""

from tokenpo.eval.evaluation import EvalOptions, EvalProgress, EvalResult, EvalRow, evaluate
from tokenpo.eval.generation import Prompt, PromptTokenizer, generate_completions
from tokenpo.eval.pairwise import PairwiseScores, pairwise_accuracy
from tokenpo.eval.scoring import MicroF1, StructuredScores, align, score_annotations

__all__ = [
    "EvalOptions",
    "EvalProgress",
    "EvalResult",
    "EvalRow",
    "MicroF1",
    "PairwiseScores",
    "Prompt",
    "PromptTokenizer",
    "StructuredScores",
    "align",
    "evaluate",
    "generate_completions",
    "pairwise_accuracy",
    "score_annotations",
]
