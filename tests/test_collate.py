"""The collator: only assistant tokens carry labels; padding sides are explicit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmlab.data.collate import IGNORE_INDEX, SFTCollator, assistant_token_mask
from vlmlab.data.sample import Sample

HEADER = [7, 8, 9]  # stands for <|im_start|> assistant \n
END = 5  # stands for <|im_end|>


def test_mask_covers_assistant_text_and_its_end_token_only() -> None:
    #          system/user ....  | header | a  b  END | \n | pad
    ids = torch.tensor([[1, 2, 5, 3, 7, 8, 9, 11, 12, 5, 3, 0, 0]])
    expected = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert assistant_token_mask(ids, HEADER, END)[0].int().tolist() == expected


def test_mask_handles_several_turns_and_a_truncated_answer() -> None:
    ids = torch.tensor([[7, 8, 9, 11, 5, 1, 7, 8, 9, 12, 13]])  # second answer has no end token
    assert assistant_token_mask(ids, HEADER, END)[0].int().tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1]


def test_mask_ignores_partial_headers() -> None:
    ids = torch.tensor([[7, 8, 1, 9, 11, 5]])
    assert not assistant_token_mask(ids, HEADER, END).any()


def video_sample(sample_id: str, answer: str, frames: int = 4) -> Sample:
    video = np.full((frames, 56, 56, 3), 128, dtype=np.uint8)
    return Sample(
        id=sample_id,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": video, "fps": 1.0},
                    {"type": "text", "text": "Describe the volume."},
                ],
            }
        ],
        target={"report": answer},
        answer=answer,
    )


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_sft_labels_decode_to_the_answer_and_end_token(family: str, tiny_processors: dict) -> None:
    processor = tiny_processors[family]
    collator = SFTCollator(processor)
    samples = [
        video_sample("a", "Findings: no lesion."),
        video_sample("b", "Findings: two lesions. Right: one."),
    ]
    batch = collator.train(samples)
    assert batch.inputs["input_ids"].shape == batch.labels.shape
    assert batch.prompt_inputs is None
    for row, sample in enumerate(samples):
        label_ids = batch.labels[row][batch.labels[row] != IGNORE_INDEX]
        assert processor.tokenizer.decode(label_ids) == sample.answer + "<|im_end|>"
    # right padding for teacher forcing: the shorter row ends with padding
    assert batch.inputs["attention_mask"][0, -1] == 0 and batch.inputs["attention_mask"][0, 0] == 1
    video_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert (batch.inputs["input_ids"] == video_id).any()
    assert not ((batch.inputs["input_ids"] == video_id) & (batch.labels != IGNORE_INDEX)).any()


def test_eval_batch_adds_left_padded_generation_prompts(tiny_processors: dict) -> None:
    processor = tiny_processors["qwen2_5_vl"]
    batch = SFTCollator(processor).eval([video_sample("a", "x"), video_sample("b", "y", frames=8)])
    prompt = batch.prompt_inputs
    assert prompt["attention_mask"][0, 0] == 0 and prompt["attention_mask"][:, -1].all()  # left padded
    text = processor.tokenizer.decode(prompt["input_ids"][1])
    assert text.endswith("<|im_start|>assistant\n") and "y" not in text.split("assistant")[-1]


def test_too_long_sequences_are_named(tiny_processors: dict) -> None:
    collator = SFTCollator(tiny_processors["qwen2_5_vl"], max_length=10)
    with pytest.raises(ValueError, match=r"longer than max_length=10: a \("):
        collator.train([video_sample("a", "x")])


def test_sft_requires_answers(tiny_processors: dict) -> None:
    sample = video_sample("a", "x")
    sample.answer = None
    with pytest.raises(ValueError, match="missing for: a"):
        SFTCollator(tiny_processors["qwen2_5_vl"]).train([sample])


def test_prompt_collator_keeps_targets_and_left_pads(tiny_processors: dict) -> None:
    from vlmlab.data.collate import PromptCollator

    samples = [video_sample("a", "x"), video_sample("b", "y", frames=8)]
    samples[0].target = {"timestamp": [1.0, 2.0]}
    batch = PromptCollator(tiny_processors["qwen3_vl"]).train(samples)
    assert batch.inputs is None and batch.labels is None
    assert batch.targets[0] == {"timestamp": [1.0, 2.0]}
    assert batch.prompt_inputs["attention_mask"][:, -1].all()
    assert (
        tiny_processors["qwen3_vl"]
        .tokenizer.decode(batch.prompt_inputs["input_ids"][0])
        .endswith("assistant\n")
    )


@pytest.mark.parametrize("side", ["left", "right"])
def test_classification_collator_returns_labels(side: str, tiny_processors: dict) -> None:
    from vlmlab.data.collate import ClassificationCollator

    samples = [video_sample("a", "x"), video_sample("b", "y", frames=8)]
    samples[0].label, samples[1].label = 2, 0
    batch = ClassificationCollator(tiny_processors["qwen2_5_vl"], padding_side=side).train(samples)
    assert batch.class_labels.tolist() == [2, 0]
    padded_row = batch.inputs["attention_mask"][0]
    assert (padded_row[0] == 0) if side == "left" else (padded_row[-1] == 0)
    samples[1].label = None
    with pytest.raises(ValueError, match="missing for: b"):
        ClassificationCollator(tiny_processors["qwen2_5_vl"]).train(samples)
