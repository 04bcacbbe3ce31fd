"""The embedded token-critical annotation task used by the demo and the tests."""

from tokenpo.synthetic.example import EXAMPLE_PAIR, ExamplePair, example_corpus, train_bpe_tokenizer

__all__ = ["EXAMPLE_PAIR", "ExamplePair", "example_corpus", "train_bpe_tokenizer"]
