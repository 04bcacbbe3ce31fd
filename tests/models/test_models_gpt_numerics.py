"""The built-in GPT against transformers' Llama holding the same weights, and its mask handling."""

from __future__ import annotations

import pytest
import torch
from models_testkit import VOCAB, llama_twin, prefix_sharing_batch, small_gpt
from torch._dynamo.utils import counters
from torch.nn import functional
from torch.nn.attention.flex_attention import create_block_mask

from tokenpo.exceptions import InputError
from tokenpo.models.gpt import _compiled_flex_attention

# (num_key_value_heads, tie_word_embeddings): multi-head, grouped-query and multi-query.
LAYOUTS = [(4, False), (2, False), (1, True), (2, True)]
LAYOUT_IDS = ["mha", "gqa", "mqa-tied", "gqa-tied"]
TOLERANCE = {"atol": 1e-5, "rtol": 0.0}


@pytest.mark.parametrize(("kv_heads", "tied"), LAYOUTS, ids=LAYOUT_IDS)
def test_logits_match_llama_without_mask(kv_heads: int, tied: bool) -> None:
    gpt = small_gpt(num_key_value_heads=kv_heads, tie_word_embeddings=tied)
    llama = llama_twin(gpt)
    input_ids = torch.randint(0, VOCAB, (3, 11))
    with torch.no_grad():
        expected = llama(input_ids=input_ids).logits
        got = gpt(input_ids=input_ids).logits
    torch.testing.assert_close(got, expected, **TOLERANCE)


@pytest.mark.parametrize(("kv_heads", "tied"), LAYOUTS, ids=LAYOUT_IDS)
def test_logits_match_llama_with_prefix_sharing_mask(kv_heads: int, tied: bool) -> None:
    gpt = small_gpt(num_key_value_heads=kv_heads, tie_word_embeddings=tied)
    llama = llama_twin(gpt)
    batch = prefix_sharing_batch([(4, 3, 5), (2, 6, 1), (5, 2, 2)])
    inputs = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "position_ids": batch.position_ids,
    }
    with torch.no_grad():
        expected = llama(**inputs).logits
        got = gpt(**inputs).logits
        expected_hidden = llama.get_decoder()(**inputs).last_hidden_state
        got_hidden = gpt.get_decoder()(**inputs).last_hidden_state
    real = batch.real()
    # Padding rows differ on purpose (the GPT lets them attend to themselves).
    torch.testing.assert_close(got[real], expected[real], **TOLERANCE)
    torch.testing.assert_close(got_hidden[real], expected_hidden[real], **TOLERANCE)


def test_prefix_sharing_equals_two_separate_sequences() -> None:
    gpt = small_gpt(num_key_value_heads=2)
    batch = prefix_sharing_batch([(4, 3, 5), (2, 6, 1)])
    with torch.no_grad():
        shared = gpt(batch.input_ids, batch.attention_mask, batch.position_ids).logits
        for row, (prefix, first, second) in enumerate(batch.segments):
            alone_first = gpt(torch.tensor([prefix + first])).logits[0]
            alone_second = gpt(torch.tensor([prefix + second])).logits[0]
            split = len(prefix) + len(first)
            torch.testing.assert_close(shared[row, :split], alone_first, **TOLERANCE)
            torch.testing.assert_close(
                shared[row, split : split + len(second)], alone_second[len(prefix) :], **TOLERANCE
            )


def test_padding_rows_attend_to_themselves_and_stay_finite() -> None:
    gpt = small_gpt()
    batch = prefix_sharing_batch([(3, 2, 2), (1, 1, 1)])
    with torch.no_grad():
        logits = gpt(batch.input_ids, batch.attention_mask, batch.position_ids).logits
    assert torch.isfinite(logits).all()
    row, column = 1, batch.input_ids.shape[1] - 1  # a padding slot
    assert not batch.real()[row, column]
    with torch.no_grad():
        alone = gpt(
            batch.input_ids[row : row + 1, column : column + 1],
            position_ids=batch.position_ids[row : row + 1, column : column + 1],
        ).logits
    torch.testing.assert_close(logits[row, column], alone[0, 0], **TOLERANCE)


def test_backward_reaches_every_parameter_with_finite_gradients() -> None:
    gpt = small_gpt(num_key_value_heads=2, tie_word_embeddings=True).train()
    batch = prefix_sharing_batch([(3, 2, 2), (1, 1, 1)])
    logits = gpt(batch.input_ids, batch.attention_mask, batch.position_ids).logits
    targets = batch.input_ids.roll(-1, dims=1)
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    (losses * batch.real()).sum().backward()
    for name, parameter in gpt.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_block_mask_gives_the_bool_mask_results_on_cpu() -> None:
    # On CPU flex_attention runs unfused (and warns so); GPUs get the compiled kernel.
    gpt = small_gpt(num_key_value_heads=2)
    batch = prefix_sharing_batch([(4, 3, 5), (2, 6, 1)])
    dense = batch.attention_mask

    def may_attend(row: torch.Tensor, head: torch.Tensor, query: torch.Tensor, key: torch.Tensor):
        return dense[row, 0, query, key]

    rows, width = batch.input_ids.shape
    block_mask = create_block_mask(may_attend, rows, None, width, width, device="cpu")
    with torch.no_grad():
        expected = gpt(batch.input_ids, dense, batch.position_ids).logits
        got = gpt(batch.input_ids, block_mask, batch.position_ids).logits
    real = batch.real()
    torch.testing.assert_close(got[real], expected[real], **TOLERANCE)


@pytest.mark.slow
# torch 2.11 (the GPU image's) warns from inside inductor's CPU path; 2.15 does not.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_flex_attention_does_not_recompile_for_each_batch_shape() -> None:
    # Packed batches differ in rows and length at every step, each with a BlockMask of its
    # own. The GPU's compiled kernel is checked here through inductor's CPU flex-attention
    # template (same dynamo guards): a compile per shape would fill dynamo's cache and fall
    # back to the unfused kernel. Forward only (the CPU template has no backward), and a mask
    # that captures no tensor (the CPU template miscompiles one that does, as the trainer's
    # does: tests/train/test_train_cuda.py checks that one on a GPU).
    torch._dynamo.reset()
    counters.clear()
    attention = _compiled_flex_attention()
    shapes = [(4, 128), (3, 200), (5, 256), (2, 96), (6, 300), (3, 77), (2, 160), (4, 384)]
    for rows, length in shapes:
        query, key, value = (torch.randn(rows, 2, length, 16) for _ in range(3))
        mask = create_block_mask(
            lambda row, head, q, k: k <= q, rows, None, length, length, device="cpu"
        )
        got = attention(query, key, value, block_mask=mask)
        expected = functional.scaled_dot_product_attention(query, key, value, is_causal=True)
        torch.testing.assert_close(got, expected, **TOLERANCE)
    assert counters["stats"]["unique_graphs"] <= 4, dict(counters["stats"])


def test_decoder_and_output_embeddings_give_the_logits() -> None:
    gpt = small_gpt()
    batch = prefix_sharing_batch([(2, 2, 2)])
    with torch.no_grad():
        hidden = gpt.get_decoder()(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).last_hidden_state
        logits = gpt(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).logits
        last = gpt(batch.input_ids, batch.attention_mask, batch.position_ids, logits_to_keep=2)
    assert hidden.shape == (*batch.input_ids.shape, gpt.config.hidden_size)
    assert gpt.get_decoder() is gpt.model
    assert isinstance(gpt.model.layers, torch.nn.ModuleList)
    assert gpt.get_output_embeddings() is gpt.lm_head
    torch.testing.assert_close(gpt.get_output_embeddings()(hidden), logits)
    torch.testing.assert_close(last.logits, logits[:, -2:])


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.ones(1, 1, 5, 5), r"must be a bool tensor \[2, 1, 5, 5\].*got torch.float32"),
        (torch.ones(2, 5, 5, dtype=torch.bool), r"got torch.bool \[2, 5, 5\]"),
        (torch.ones(3, 1, 5, 5, dtype=torch.bool), r"got torch.bool \[3, 1, 5, 5\]"),
        (torch.ones(2, 1, 5, 4, dtype=torch.bool), r"got torch.bool \[2, 1, 5, 4\]"),
    ],
)
def test_a_mask_of_the_wrong_shape_or_dtype_is_refused(mask: torch.Tensor, message: str) -> None:
    gpt = small_gpt()
    with pytest.raises(InputError, match=message):
        gpt(torch.zeros(2, 5, dtype=torch.long), mask)
