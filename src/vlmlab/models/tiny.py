"""Tiny random-initialised Qwen-VL configs: real vocabulary and special-token ids, toy widths.

About 19.6 M parameters (mostly the 151,936 x 64 embeddings); forward+backward ~45 ms on 2 CPU threads.
"""

from __future__ import annotations

from transformers import PretrainedConfig, Qwen2_5_VLConfig, Qwen3VLConfig

from vlmlab.models.processor import MERGE_SIZE, PATCH_SIZE, TEMPORAL_PATCH_SIZE, Family

VOCAB_SIZE = 151_936  # the released Qwen2.5-VL-3B / Qwen3-VL embedding size (tokenizer has 151,669)
SPECIAL_TOKEN_IDS = dict(
    image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653
)
EOS_TOKEN_ID = 151645  # <|im_end|>
PAD_TOKEN_ID = 151643  # <|endoftext|>


def tiny_config(family: Family) -> PretrainedConfig:
    text = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        eos_token_id=EOS_TOKEN_ID,
        pad_token_id=PAD_TOKEN_ID,
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        patch_size=PATCH_SIZE[family],
        spatial_merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
    )
    if family == "qwen2_5_vl":
        vision["fullatt_block_indexes"] = [1]
        vision["window_size"] = 56
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **SPECIAL_TOKEN_IDS)
    elif family == "qwen3_vl":
        text["head_dim"] = 32
        text["rope_parameters"]["mrope_interleaved"] = True
        vision["deepstack_visual_indexes"] = [1]
        vision["num_position_embeddings"] = 256
        config = Qwen3VLConfig(text_config=text, vision_config=vision, **SPECIAL_TOKEN_IDS)
    else:
        raise ValueError(f"unknown model family {family!r}; expected 'qwen2_5_vl' or 'qwen3_vl'")
    config.eos_token_id = EOS_TOKEN_ID
    config.pad_token_id = PAD_TOKEN_ID
    return config
