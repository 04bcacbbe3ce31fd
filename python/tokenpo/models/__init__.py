"""Building, running and exporting causal LMs: the built-in GPT and any transformers model.

model = load_causal_lm("gpt", gpt={"hidden_size": 64}, vocab_size=tokenizer_size, seed=0)
model = load_causal_lm("runs/sft/final")          # a Hugging Face model directory
export_hf(model, config=model.config, out_dir=Path("runs/sft/export"))
"""

from tokenpo.models.export import export_hf
from tokenpo.models.generation import KVCache, greedy_generate
from tokenpo.models.gpt import GPT, GPTDecoder
from tokenpo.models.gpt_config import GPTConfig
from tokenpo.models.loading import BUILTIN_GPT, load_causal_lm, model_family

__all__ = [
    "BUILTIN_GPT",
    "GPT",
    "GPTConfig",
    "GPTDecoder",
    "KVCache",
    "export_hf",
    "greedy_generate",
    "load_causal_lm",
    "model_family",
]
