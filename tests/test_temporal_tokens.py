"""Temporal tokens <0>..<999>: tokenizer, sinusoidal table, embedding growth and initialisation on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from vlmlab.models.backbone import BackboneSpec
from vlmlab.models.processor import offline_tokenizer
from vlmlab.models.temporal_tokens import (
    TEMPORAL_TOKENS,
    add_temporal_tokens,
    init_temporal_embeddings,
    sinusoidal_embeddings,
)
from vlmlab.models.tiny import VOCAB_SIZE
from vlmlab.tasks.grounding import TemporalFormat, format_span

TOKENIZER_LEN = 151_669  # the offline Qwen2 tokenizer, before the temporal tokens


@pytest.fixture(scope="module")
def tokenizer_and_ids():
    tokenizer = offline_tokenizer("qwen2_5_vl")
    assert len(tokenizer) == TOKENIZER_LEN
    return tokenizer, add_temporal_tokens(tokenizer)


def tiny_model(family: str = "qwen2_5_vl"):
    return BackboneSpec(family=family, tiny=True, dtype="float32", lora=None).load_base_model()


def test_token_list() -> None:
    assert len(TEMPORAL_TOKENS) == 1000
    assert TEMPORAL_TOKENS[:2] == ["<0>", "<1>"] and TEMPORAL_TOKENS[-1] == "<999>"


def test_add_temporal_tokens(tokenizer_and_ids) -> None:
    tokenizer, ids = tokenizer_and_ids
    assert ids == list(range(TOKENIZER_LEN, TOKENIZER_LEN + 1000))  # appended in order
    assert len(tokenizer) == TOKENIZER_LEN + 1000
    assert add_temporal_tokens(tokenizer) == ids  # idempotent
    for k in (0, 12, 100, 999):
        encoded = tokenizer.encode(f"<{k}>", add_special_tokens=False)
        assert encoded == [ids[k]]  # one token each; <100> is not <10> + "0>"
        assert tokenizer.decode(encoded) == f"<{k}>"
    answer = format_span(11.3, 15.0, 24.9, TemporalFormat(use_temporal_tokens=True))
    assert answer == "<answer><45> to <60></answer>"
    encoded = tokenizer.encode(answer, add_special_tokens=False)
    assert ids[45] in encoded and ids[60] in encoded
    # Normal (not special) tokens: generation decoding with skip_special_tokens keeps them.
    assert tokenizer.decode(encoded, skip_special_tokens=True) == answer
    assert tokenizer.encode("<12a>", add_special_tokens=False) != [ids[12]]


def test_sinusoidal_hand_values() -> None:
    table = sinusoidal_embeddings(3, 4)
    assert table.shape == (3, 4) and table.dtype == torch.float32
    # E[p, 2i] = sin(p / 10000^(2i/4)), E[p, 2i+1] = cos(...): frequencies 1 and 1/100.
    expected = torch.tensor(
        [
            [0.0, 1.0, 0.0, 1.0],
            [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
            [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)],
        ]
    )
    torch.testing.assert_close(table, expected)
    # Odd dim: the last column is a sine of frequency 10000^(-2/3).
    odd = sinusoidal_embeddings(2, 3)
    torch.testing.assert_close(odd[1], torch.tensor([math.sin(1), math.cos(1), math.sin(10000 ** (-2 / 3))]))
    assert sinusoidal_embeddings(0, 8).shape == (0, 8)
    with pytest.raises(ValueError):
        sinusoidal_embeddings(3, 0)


def test_init_sinusoidal_grows_embeddings_and_forward_works(tokenizer_and_ids) -> None:
    tokenizer, ids = tokenizer_and_ids
    model = tiny_model()
    input_before = model.get_input_embeddings().weight.detach().clone()
    output_before = model.get_output_embeddings().weight.detach().clone()
    assert input_before.shape[0] == VOCAB_SIZE < len(tokenizer)  # 151,936 < 152,669: must grow

    init_temporal_embeddings(model, ids, "sinusoidal", vocab_size=len(tokenizer))

    input_after = model.get_input_embeddings().weight
    output_after = model.get_output_embeddings().weight
    assert input_after.shape == (len(tokenizer), 64) and output_after.shape == (len(tokenizer), 64)
    assert model.config.get_text_config().vocab_size == len(tokenizer)
    torch.testing.assert_close(input_after[:TOKENIZER_LEN], input_before[:TOKENIZER_LEN])  # old rows kept
    table = sinusoidal_embeddings(1000, 64)
    for before, after in ((input_before, input_after), (output_before, output_after)):  # lm_head is untied
        expected = table * (before[:TOKENIZER_LEN].std() / table.std())
        torch.testing.assert_close(after[ids], expected)
        assert after[ids].std().item() == pytest.approx(before[:TOKENIZER_LEN].std().item(), rel=1e-4)
    torch.testing.assert_close(
        input_after[ids[0]], table[0] * (input_before[:TOKENIZER_LEN].std() / table.std())
    )

    text = "<|im_start|>assistant\n" + format_span(2.0, 5.0, 10.0, TemporalFormat(use_temporal_tokens=True))
    input_ids = torch.tensor([[*tokenizer.encode(text), ids[999]]])
    assert ids[20] in input_ids[0] and ids[50] in input_ids[0]
    out = model(input_ids=input_ids, labels=input_ids)
    assert out.logits.shape == (1, input_ids.shape[1], len(tokenizer))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.get_input_embeddings().weight.grad[ids[20]].abs().sum() > 0


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_init_mean_and_random(tokenizer_and_ids, family: str) -> None:
    tokenizer, ids = tokenizer_and_ids
    model = tiny_model(family)
    before = model.get_input_embeddings().weight.detach().clone()
    init_temporal_embeddings(model, ids, "mean", vocab_size=len(tokenizer))
    weight = model.get_input_embeddings().weight
    torch.testing.assert_close(weight[ids], before[:TOKENIZER_LEN].mean(0).expand(1000, -1))

    init_temporal_embeddings(model, ids, "random", vocab_size=len(tokenizer), seed=3)
    first = weight[ids].detach().clone()
    assert first.std().item() == pytest.approx(before[:TOKENIZER_LEN].std().item(), rel=0.05)
    init_temporal_embeddings(model, ids, "random", vocab_size=len(tokenizer), seed=3)
    torch.testing.assert_close(weight[ids], first)  # deterministic for a seed
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)  # no second growth
    out = model(input_ids=torch.tensor([[ids[0], ids[500], ids[999]]]))
    assert out.logits.shape[-1] == len(tokenizer)


def test_never_shrinks_and_checks_arguments() -> None:
    model = tiny_model()
    spare = list(range(151_700, 151_710))  # inside Qwen's spare rows: no growth needed
    init_temporal_embeddings(model, spare, "mean", vocab_size=151_710)
    assert model.get_input_embeddings().weight.shape[0] == VOCAB_SIZE
    with pytest.raises(ValueError, match="strategy"):
        init_temporal_embeddings(model, spare, "zeros")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no token ids"):
        init_temporal_embeddings(model, [], "mean")


def test_backbone_spec_wires_temporal_tokens_into_tokenizer_model_and_lora() -> None:
    from vlmlab.models.backbone import BackboneSpec
    from vlmlab.models.lora import LoRASettings

    spec = BackboneSpec(
        family="qwen2_5_vl", tiny=True, dtype="float32", temporal_tokens=True, lora=LoRASettings(r=2, alpha=4)
    )
    tokenizer = spec.load_processor().tokenizer
    ids = tokenizer.convert_tokens_to_ids(["<0>", "<999>"])
    model = spec.load_model()
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer) > max(ids)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("embed_tokens" in n for n in trainable) and any("lm_head" in n for n in trainable)
    without = BackboneSpec(family="qwen2_5_vl", tiny=True, dtype="float32").load_processor().tokenizer
    assert len(without) == 151_669 and without.convert_tokens_to_ids(
        "<12>"
    ) != tokenizer.convert_tokens_to_ids("<12>")
