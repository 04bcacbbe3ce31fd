"""Prefix sharing and packing give the log-probs of each sequence run on its own.

The oracle runs every prompt + completion alone, unpadded, through the model's own forward
and reads the log-probs off ``log_softmax``; the padded and the shared layouts (with and
without packing) must agree with it to 1e-5 in float32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaForCausalLM

from tiny_models import TINY_LLAMA_SIZES, tiny_llama_config
from tokenpo.data.collate import collate
from tokenpo.data.dataset import PairRows, Ragged
from tokenpo.exceptions import InputError
from tokenpo.losses import ValueHead
from tokenpo.models import GPT, GPTConfig
from tokenpo.train.forward import CompletionScorer, block_mask

VOCAB = 40


def ragged(rows: list[list[float]], dtype: type[np.generic]) -> Ragged:
    lengths = [len(row) for row in rows]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.array([value for row in rows for value in row], dtype=dtype)
    return Ragged(values=values, offsets=offsets)


def shared_prefix(chosen: list[int], rejected: list[int]) -> int:
    length = 0
    for left, right in zip(chosen, rejected, strict=False):
        if left != right:
            break
        length += 1
    return length


def make_rows(pairs: list[tuple[list[int], list[int], list[int]]]) -> PairRows:
    prompts, chosen, rejected = (list(column) for column in zip(*pairs, strict=True))
    return PairRows(
        pair_id=[f"pair-{index}" for index in range(len(pairs))],
        prompt_ids=ragged(prompts, np.uint32),
        chosen_ids=ragged(chosen, np.uint32),
        rejected_ids=ragged(rejected, np.uint32),
        chosen_weight=ragged([[1.0] * len(row) for row in chosen], np.float32),
        rejected_weight=ragged([[1.0] * len(row) for row in rejected], np.float32),
        chosen_diff=ragged([[0] * len(row) for row in chosen], np.uint8),
        rejected_diff=ragged([[0] * len(row) for row in rejected], np.uint8),
        shared_prefix_len=np.array(
            [shared_prefix(c, r) for c, r in zip(chosen, rejected, strict=True)], dtype=np.int64
        ),
        difficulty=np.zeros(len(pairs), dtype=np.float32),
        ref_chosen=None,
        ref_rejected=None,
    )


@pytest.fixture(scope="module", params=["llama", "gpt"])
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    """A transformers Llama built from a config, and the built-in GPT (with GQA both)."""
    torch.manual_seed(0)
    sizes = {**TINY_LLAMA_SIZES, "max_position_embeddings": 128}
    if request.param == "gpt":
        return GPT.from_config(GPTConfig(vocab_size=VOCAB, **sizes)).eval()
    return LlamaForCausalLM(tiny_llama_config(VOCAB, **sizes, attn_implementation="sdpa")).eval()


def alone_logps(model: torch.nn.Module, prompt: list[int], completion: list[int]) -> torch.Tensor:
    sequence = torch.tensor([prompt + completion])
    logits = model(input_ids=sequence).logits[0].float().log_softmax(-1)
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return logits[positions, torch.tensor(completion)]


def token_lists(min_size: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(1, VOCAB - 1), min_size=min_size, max_size=7)


@st.composite
def pair_batches(draw: st.DrawFn) -> list[tuple[list[int], list[int], list[int]]]:
    pairs = []
    for _ in range(draw(st.integers(1, 4))):
        prompt = draw(token_lists(1))
        common = draw(st.lists(st.integers(1, VOCAB - 1), max_size=5))
        chosen = common + draw(token_lists(0))
        rejected = common + draw(token_lists(0))
        chosen = chosen or [2]
        rejected = rejected or [3]
        if chosen == rejected:
            rejected = [*rejected, 1]
        pairs.append((prompt, chosen, rejected))
    return pairs


@settings(max_examples=25, deadline=None)
@given(pairs=pair_batches(), row_tokens=st.sampled_from([None, 12, 40]))
def test_every_layout_matches_sequences_run_alone(
    model: torch.nn.Module,
    pairs: list[tuple[list[int], list[int], list[int]]],
    row_tokens: int | None,
) -> None:
    rows = make_rows(pairs)
    scorer = CompletionScorer(model)
    with torch.no_grad():
        shared = scorer.score(collate(rows, layout="shared", row_tokens=row_tokens))
        padded = scorer.score(collate(rows, layout="padded"))
        for index, (prompt, chosen, rejected) in enumerate(pairs):
            for scores, name in ((shared, "shared"), (padded, "padded")):
                expected_chosen = alone_logps(model, prompt, chosen)
                expected_rejected = alone_logps(model, prompt, rejected)
                torch.testing.assert_close(
                    scores.chosen[index, : len(chosen)],
                    expected_chosen,
                    atol=1e-5,
                    rtol=0,
                    msg=lambda m, name=name: f"{name} chosen: {m}",
                )
                torch.testing.assert_close(
                    scores.rejected[index, : len(rejected)],
                    expected_rejected,
                    atol=1e-5,
                    rtol=0,
                    msg=lambda m, name=name: f"{name} rejected: {m}",
                )
                assert torch.all(scores.chosen[index, len(chosen) :] == 0)


def test_shared_layout_spends_fewer_tokens_and_packs_rows() -> None:
    pairs = [([5, 6, 7], [1, 2, 3, 4], [1, 2, 3, 9])] * 3
    rows = make_rows(pairs)
    padded = collate(rows, layout="padded")
    shared = collate(rows, layout="shared")
    packed = collate(rows, layout="shared", row_tokens=16)
    assert padded.tokens == 3 * (2 * 3 + 4 + 4)
    assert shared.tokens == packed.tokens == 3 * (3 + 4 + 4 - 3)
    assert shared.input_ids.shape == (3, 8)
    assert packed.input_ids.shape == (2, 16)  # two pairs of 8 tokens, then one
    # The rejected suffix continues the positions of the shared prefix.
    assert shared.position_ids[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 6]


def alone_values(
    model: torch.nn.Module, head: ValueHead, prompt: list[int], completion: list[int]
) -> torch.Tensor:
    """The value head at the last hidden state predicting each completion token."""
    sequence = torch.tensor([prompt + completion])
    states = model.get_decoder()(input_ids=sequence).last_hidden_state[0]
    return head(states[len(prompt) - 1 : len(prompt) + len(completion) - 1])


@pytest.mark.parametrize("layout", ["shared", "padded"])
def test_logits_grid_and_values_agree_with_sequences_run_alone(
    model: torch.nn.Module, layout: str
) -> None:
    pairs = [([3, 4], [5, 6, 7], [5, 8]), ([9], [1], [2, 3, 4, 5])]
    scorer = CompletionScorer(model)
    batch = collate(make_rows(pairs), layout=layout)
    head = ValueHead(32, width=8)
    for parameter in head.parameters():  # the output layer starts at zero
        torch.nn.init.normal_(parameter)
    with torch.no_grad():
        plain = scorer.score(batch)
        full = scorer.score(batch, logits=True, value_head=head)
        torch.testing.assert_close(full.chosen, plain.chosen, atol=1e-6, rtol=0)
        torch.testing.assert_close(full.rejected, plain.rejected, atol=1e-6, rtol=0)
        assert full.chosen_logits is not None
        assert full.chosen_logits.shape == (2, 4, VOCAB)
        assert full.chosen_value is not None
        assert full.rejected_value is not None
        for index, (prompt, chosen, rejected) in enumerate(pairs):
            for values, completion, mask in (
                (full.chosen_value, chosen, batch.chosen_mask),
                (full.rejected_value, rejected, batch.rejected_mask),
            ):
                expected = alone_values(model, head, prompt, completion)
                torch.testing.assert_close(values[index, : len(completion)], expected)
                assert not values[index, len(completion) :].any()  # 0 on padding
                assert mask[index].sum() == len(completion)


def test_a_chosen_only_batch_scores_the_chosen_side_alike(model: torch.nn.Module) -> None:
    pairs = [([3, 4], [5, 6, 7], [5, 8]), ([9], [1], [2, 3, 4, 5]), ([1, 2, 3], [4], [6])]
    rows = make_rows(pairs)
    scorer = CompletionScorer(model)
    chosen_only = collate(rows.chosen_only(), row_tokens=64)
    assert chosen_only.tokens == sum(len(prompt) + len(chosen) for prompt, chosen, _ in pairs)
    assert not chosen_only.rejected_mask.any()
    with torch.no_grad():
        full = scorer.score(collate(rows)).chosen
        only = scorer.score(chosen_only)
    width = max(len(chosen) for _, chosen, _ in pairs)  # the rejected side no longer counts
    assert only.chosen.shape == (len(pairs), width)
    torch.testing.assert_close(only.chosen, full[:, :width], atol=1e-5, rtol=0)
    assert torch.all(only.rejected == 0)


def test_gradients_match_between_layouts(model: torch.nn.Module) -> None:
    rows = make_rows([([3, 4, 5], [6, 7, 8, 9], [6, 7, 2]), ([1, 2], [3], [4, 5])])
    scorer = CompletionScorer(model)
    grads = []
    for layout in ("shared", "padded"):
        model.zero_grad()
        scores = scorer.score(collate(rows, layout=layout))
        (scores.chosen.sum() - 2 * scores.rejected.sum()).backward()
        grads.append(
            torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        )
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_empty_prompt_is_an_error_naming_the_pair() -> None:
    with pytest.raises(InputError, match="'pair-0' has an empty prompt"):
        collate(make_rows([([], [1, 2], [1, 3])]))


def test_packing_needs_the_shared_layout() -> None:
    with pytest.raises(InputError, match="shared layout only"):
        collate(make_rows([([1], [1, 2], [1, 3])]), layout="padded", row_tokens=8)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_the_block_mask_the_gpt_uses_on_gpu_gives_the_bool_masks_states() -> None:
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, num_key_value_heads=2
    )
    gpt = GPT.from_config(config).eval()
    rows = make_rows([([3, 4, 5], [6, 7, 8, 9], [6, 7, 2]), ([1, 2], [3], [4, 5])] * 3)
    batch = collate(rows, row_tokens=20)
    assert batch.attention_mask is not None
    decoder = gpt.get_decoder()
    with torch.no_grad():
        dense = decoder(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).last_hidden_state
        flex = decoder(
            input_ids=batch.input_ids,
            attention_mask=block_mask(batch.attention_mask),
            position_ids=batch.position_ids,
        ).last_hidden_state
    real = batch.input_ids != 0
    torch.testing.assert_close(flex[real], dense[real], atol=1e-5, rtol=0)
