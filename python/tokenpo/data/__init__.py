"""Reading preference data: raw pair files and, later, prepared shards."""

from tokenpo.data.pair_file import PairRecord, read_pair

__all__ = ["PairRecord", "read_pair"]
