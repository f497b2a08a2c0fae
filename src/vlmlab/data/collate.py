"""Turn a list of :class:`Sample` into Qwen-VL processor tensors.

The chat template renders the text and the processor expands each vision placeholder into the
right number of vision tokens. Padding side is explicit on every call: right for teacher forcing
(SFT loss, classification), left for generation prompts so new tokens follow the prompt directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import ProcessorMixin
from transformers.video_utils import VideoMetadata

from vlmlab.data.sample import Sample
from vlmlab.models.facts import QWEN_CHAT, ChatFormat

IGNORE_INDEX = -100


@dataclass
class VisionLanguageBatch:
    """A collated batch.

    inputs: processor output for the full conversation (prompt + answer), right-padded:
        input_ids / attention_mask [B, L], pixel_values(_videos) [N_patches, D], *_grid_thw [N, 3], ...
    labels: [B, L] token targets, IGNORE_INDEX everywhere but assistant tokens (SFT), else None.
    prompt_inputs: the prompts alone with the generation prompt, left-padded [B, P] (generation), or None.
    class_labels: [B] class indices (classification), or None.
    """

    ids: list[str]
    inputs: dict[str, torch.Tensor] | None = None
    labels: torch.Tensor | None = None
    prompt_inputs: dict[str, torch.Tensor] | None = None
    class_labels: torch.Tensor | None = None
    answers: list[str | None] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def assistant_token_mask(input_ids: torch.Tensor, header_ids: list[int], end_id: int) -> torch.Tensor:
    """Mark the tokens the assistant wrote.

    input_ids: [B, L]. header_ids: the tokens that open an assistant turn. end_id: the end-of-turn token.
    Returns bool [B, L]: True from just after each assistant header up to and including its end
    token (the model must learn to stop), False elsewhere (system, user, vision, padding).
    """
    batch, length = input_ids.shape
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    n = len(header_ids)
    header = torch.tensor(header_ids, dtype=input_ids.dtype)
    for b in range(batch):
        row = input_ids[b]
        i = 0
        while i <= length - n:
            if torch.equal(row[i : i + n], header):
                start = i + n
                ends = (row[start:] == end_id).nonzero()
                stop = start + int(ends[0]) + 1 if len(ends) else length
                mask[b, start:stop] = True
                i = stop
            else:
                i += 1
    return mask


def vision_items(messages: list[dict[str, Any]]) -> tuple[list[Any], list[Any], list[VideoMetadata]]:
    """Images and videos of a conversation in the order the chat template emits them."""
    images, videos, metadata = [], [], []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            continue
        for item in content:
            if item.get("type") == "image" or "image" in item:
                images.append(item["image"])
            elif item.get("type") == "video" or "video" in item:
                frames = item["video"]
                videos.append(frames)
                fps = float(item.get("fps", 1.0))
                metadata.append(
                    VideoMetadata(
                        total_num_frames=len(frames), fps=fps, frames_indices=list(range(len(frames)))
                    )
                )
    return images, videos, metadata


@dataclass
class QwenVLCollator:
    """Shared encoding: chat template, then the processor with an explicit padding side.

    max_length: raise (naming the sample ids) when a sequence is longer; vision tokens cannot be
    truncated without breaking the model's inputs, so nothing is cut silently.
    chat: the chat template's markers (the model's, passed by :func:`vlmlab.run.build`).
    """

    processor: ProcessorMixin
    max_length: int | None = None
    chat: ChatFormat = QWEN_CHAT

    def encode(
        self,
        conversations: list[list[dict[str, Any]]],
        add_generation_prompt: bool,
        padding_side: str,
        ids: list[str],
    ) -> dict[str, torch.Tensor]:
        texts = self.processor.apply_chat_template(
            conversations, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        images, videos, metadata = [], [], []
        for conversation in conversations:
            i, v, m = vision_items(conversation)
            images += i
            videos += v
            metadata += m
        kwargs: dict[str, Any] = {}
        if videos:
            kwargs["videos"] = videos
            kwargs["videos_kwargs"] = {"do_sample_frames": False, "video_metadata": metadata}
        if images:
            kwargs["images"] = images
        encoded = self.processor(
            text=texts, padding=True, padding_side=padding_side, return_tensors="pt", **kwargs
        )
        if self.max_length is not None and encoded["input_ids"].shape[1] > self.max_length:
            lengths = encoded["attention_mask"].sum(1).tolist()
            too_long = [f"{i} ({n} tokens)" for i, n in zip(ids, lengths, strict=True) if n > self.max_length]
            raise ValueError(f"sequences longer than max_length={self.max_length}: {', '.join(too_long)}")
        return dict(encoded)

    def train(self, samples: list[Sample]) -> VisionLanguageBatch:
        """Collate a training batch (each method defines what it needs)."""
        raise NotImplementedError

    def eval(self, samples: list[Sample]) -> VisionLanguageBatch:
        """Collate a validation / test batch."""
        raise NotImplementedError

    def header_ids(self) -> tuple[list[int], int]:
        """(the tokens opening an assistant turn, the end-of-turn token)."""
        tokenizer = self.processor.tokenizer
        return self.chat.assistant_header_ids(tokenizer), self.chat.end_of_turn_id(tokenizer)


@dataclass
class SFTCollator(QwenVLCollator):
    """Generation SFT: the loss covers only assistant tokens; evaluation adds generation prompts."""

    def _full(self, samples: list[Sample]) -> VisionLanguageBatch:
        ids = [s.id for s in samples]
        missing = [s.id for s in samples if s.answer is None]
        if missing:
            raise ValueError(f"SFT needs an answer for every sample; missing for: {', '.join(missing)}")
        conversations = [[*s.messages, {"role": "assistant", "content": s.answer}] for s in samples]
        inputs = self.encode(conversations, add_generation_prompt=False, padding_side="right", ids=ids)
        header, end_id = self.header_ids()
        mask = assistant_token_mask(inputs["input_ids"], header, end_id) & inputs["attention_mask"].bool()
        labels = torch.where(mask, inputs["input_ids"], torch.full_like(inputs["input_ids"], IGNORE_INDEX))
        return VisionLanguageBatch(
            ids=ids,
            inputs=inputs,
            labels=labels,
            answers=[s.answer for s in samples],
            targets=[s.target for s in samples],
            metadata=[s.metadata for s in samples],
        )

    def train(self, samples: list[Sample]) -> VisionLanguageBatch:
        return self._full(samples)

    def eval(self, samples: list[Sample]) -> VisionLanguageBatch:
        batch = self._full(samples)
        batch.prompt_inputs = self.encode(
            [s.messages for s in samples], add_generation_prompt=True, padding_side="left", ids=batch.ids
        )
        return batch


@dataclass
class PromptCollator(QwenVLCollator):
    """GRPO: prompts alone with the generation prompt, left-padded; ``target`` is kept for rewards."""

    def _prompts(self, samples: list[Sample]) -> VisionLanguageBatch:
        ids = [s.id for s in samples]
        return VisionLanguageBatch(
            ids=ids,
            prompt_inputs=self.encode(
                [s.messages for s in samples], add_generation_prompt=True, padding_side="left", ids=ids
            ),
            answers=[s.answer for s in samples],
            targets=[s.target for s in samples],
            metadata=[s.metadata for s in samples],
        )

    def train(self, samples: list[Sample]) -> VisionLanguageBatch:
        return self._prompts(samples)

    def eval(self, samples: list[Sample]) -> VisionLanguageBatch:
        return self._prompts(samples)


@dataclass
class ClassificationCollator(QwenVLCollator):
    """Reward classification (the robot reward recipe): the prompt turns alone, no generation prompt, and class labels.

    padding_side: either works; the classifier pools the last non-padding token whatever the side.
    """

    padding_side: str = "right"

    def train(self, samples: list[Sample]) -> VisionLanguageBatch:
        ids = [s.id for s in samples]
        missing = [s.id for s in samples if s.label is None]
        if missing:
            raise ValueError(
                f"classification needs a label for every sample; missing for: {', '.join(missing)}"
            )
        inputs = self.encode(
            [s.messages for s in samples],
            add_generation_prompt=False,
            padding_side=self.padding_side,
            ids=ids,
        )
        return VisionLanguageBatch(
            ids=ids,
            inputs=inputs,
            class_labels=torch.tensor([s.label for s in samples], dtype=torch.long),
            targets=[s.target for s in samples],
            metadata=[s.metadata for s in samples],
        )

    def eval(self, samples: list[Sample]) -> VisionLanguageBatch:
        return self.train(samples)
