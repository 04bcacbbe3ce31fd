"""Reading preference data: raw pair files and prepared shards."""

from tokenpo.data.pair_file import PairRecord, read_pair
from tokenpo.data.shards import read_prepared_row, read_shard

__all__ = ["PairRecord", "read_pair", "read_prepared_row", "read_shard"]
