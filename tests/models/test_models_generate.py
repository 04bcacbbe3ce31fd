"""GPT.generate: batched greedy decoding with a KV cache against a plain full-forward loop."""

from __future__ import annotations

import pytest
import torch
from models_testkit import VOCAB, small_gpt

from tokenpo.exceptions import InputError
from tokenpo.models import GPT


def greedy_without_cache(gpt: GPT, prompt: list[int], max_new_tokens: int) -> list[int]:
    """The oracle: one prompt alone, the whole sequence re-run at every step."""
    sequence = list(prompt)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = gpt(torch.tensor([sequence])).logits
            sequence.append(int(logits[0, -1].argmax()))
    return sequence[len(prompt) :]


def random_prompts(lengths: list[int], seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=generator).tolist() for n in lengths]


@pytest.mark.parametrize(("kv_heads", "tied"), [(4, False), (2, True)], ids=["mha", "gqa-tied"])
def test_cached_batch_equals_the_full_forward_loop(kv_heads: int, tied: bool) -> None:
    gpt = small_gpt(seed=1, num_key_value_heads=kv_heads, tie_word_embeddings=tied)
    prompts = random_prompts([1, 7, 3, 12])
    got = gpt.generate(prompts, max_new_tokens=8, eos_token_id=None)
    assert got == [greedy_without_cache(gpt, prompt, 8) for prompt in prompts]
    assert len({token for row in got for token in row}) > 8  # not a degenerate repetition


def attention_without_empty_row_handling(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """Plain softmax attention: a query row that may see no key gets NaN, as some GPU
    kernels give it (CPU SDPA returns zeros there)."""
    scores = query @ key.transpose(-1, -2) / query.shape[-1] ** 0.5
    if is_causal:
        length = scores.shape[-1]
        attn_mask = torch.ones(length, length, dtype=torch.bool).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(-1) @ value


def test_left_padded_generation_survives_kernels_that_give_empty_rows_nan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A left-padding position may attend nothing: such kernels give it NaN, and 0 x NaN from
    # there reaches every real token of the row in the next layer, unless the GPT opens the
    # diagonal of empty rows (it does; without that, this fails).
    monkeypatch.setattr(
        "tokenpo.models.gpt.functional.scaled_dot_product_attention",
        attention_without_empty_row_handling,
    )
    gpt = small_gpt(seed=1, num_hidden_layers=2)
    prompts = random_prompts([2, 9, 5])
    got = gpt.generate(prompts, max_new_tokens=6, eos_token_id=None)
    assert got == [greedy_without_cache(gpt, prompt, 6) for prompt in prompts]


def test_each_row_stops_before_its_first_eos() -> None:
    gpt = small_gpt(seed=2)
    prompts = random_prompts([4, 9, 2], seed=3)
    full = [greedy_without_cache(gpt, prompt, 6) for prompt in prompts]
    eos = full[0][2]  # a token that row 0 produces third, so it stops early
    got = gpt.generate(prompts, max_new_tokens=6, eos_token_id=eos)
    expected = [row[: row.index(eos)] if eos in row else row for row in full]
    assert got == expected
    assert len(got[0]) == full[0].index(eos) <= 2


def test_generation_stops_once_every_row_has_ended() -> None:
    gpt = small_gpt(seed=2)
    prompt = random_prompts([3], seed=5)[0]
    eos = greedy_without_cache(gpt, prompt, 1)[0]
    calls = 0

    def count(*_: object) -> None:
        nonlocal calls
        calls += 1

    handle = gpt.register_forward_hook(count)
    try:
        assert gpt.generate([prompt, prompt], max_new_tokens=50, eos_token_id=eos) == [[], []]
    finally:
        handle.remove()
    assert calls == 1  # the prefill only


def test_mode_and_grad_mode_are_restored() -> None:
    gpt = small_gpt().train()
    gpt.generate([[1, 2]], max_new_tokens=2, eos_token_id=None)
    assert gpt.training
    assert torch.is_grad_enabled()
    gpt.eval()
    gpt.generate([[1, 2]], max_new_tokens=2, eos_token_id=None)
    assert not gpt.training


def test_bfloat16_weights_generate_with_a_cache_of_the_same_dtype() -> None:
    gpt = small_gpt().to(torch.bfloat16)
    got = gpt.generate(random_prompts([2, 5]), max_new_tokens=4, eos_token_id=None)
    assert [len(row) for row in got] == [4, 4]


def test_nothing_to_generate() -> None:
    gpt = small_gpt()
    assert gpt.generate([[1], [2, 3]], max_new_tokens=0, eos_token_id=None) == [[], []]
    assert gpt.generate([], max_new_tokens=3, eos_token_id=None) == []


@pytest.mark.parametrize(
    ("prompts", "max_new_tokens", "message"),
    [
        ([[1, 2], []], 3, r"prompt 1 must be a non-empty list of token ids"),
        ([[1, VOCAB]], 3, rf"prompt 0 holds token {VOCAB}, outside the vocabulary \[0, {VOCAB}\)"),
        ([[1], [-1]], 3, r"prompt 1 holds token -1"),
        ([[1.5]], 3, r"prompt 0 holds torch.float32 values, not token ids"),
        ([[1]], -1, r"max_new_tokens must be >= 0, got -1"),
    ],
)
def test_bad_requests_are_refused_with_the_row(
    prompts: list[list[int]], max_new_tokens: int, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        small_gpt().generate(prompts, max_new_tokens=max_new_tokens, eos_token_id=None)
