"""Tiny Qwen2-VL judges written to a directory like real checkpoints (tokenizer, image processor, weights).

`write_tiny_qwen2vl(dir)` has random weights: its answers are noise (DeQA reads its logits). With
`answer="Final Score: 4"` the language model is rewired into a bigram chain so that greedy decoding writes exactly
that answer, then <|im_end|>, whatever the images and the question: attention and MLP outputs are zeroed (the last
hidden state is the last token's embedding) and lm_head maps each token of the chain to the next one. The vision
tower, the image-token merge and M-RoPE still run. No download: the byte-level BPE is trained here on the judges'
own words.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>")
TAGS = ("<Score>", "</Score>", "<Thought>", "</Thought>")
"""Whole tokens here (real tokenizers split them), so a scripted answer never repeats a token."""
CORPUS = (
    "You are given a text caption and a generated image based on that caption. Final Score: 1 2 3 4 5 3.5",
    "Image 1 is better. Image 2 is better. Both images are equally good. Text Caption: a photo of a cat",
    "Your role is to evaluate the aesthetic quality score of given images. Bad Poor Fair Good Excellent",
    "USER: How would you rate the quality of this image? ASSISTANT: The quality of the image is",
    "excellent good fair poor bad system user assistant red car tree dog sea",
)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PATCH, MERGE = 14, 2
CHAIN_GAIN = 40.0
"""Logit of the scripted next token (others stay within a few units: random lm_head rows of std 0.02)."""


def tiny_tokenizer(corpus: Sequence[str] = CORPUS, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `corpus` with Qwen2-VL's special tokens and the judges' tags as added tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(list(corpus) * 4, trainer)
    tokenizer.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )


def tiny_config(tokenizer: PreTrainedTokenizerFast) -> Qwen2VLConfig:
    """Qwen2-VL with a 2-layer, 64-wide language model (head_dim 32) and a 1-block vision tower."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL}
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2}
    vision |= {"patch_size": PATCH, "spatial_merge_size": MERGE, "temporal_patch_size": 2, "in_chans": 3}
    return Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|endoftext|>"],  # no video token: never in a judge's prompt
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )


def answer_chain(tokenizer: PreTrainedTokenizerFast, answer: str) -> list[int]:
    """Token ids greedy decoding must walk: the generation prompt's last token, the answer, then <|im_end|>."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
    )
    start = tokenizer(prompt, add_special_tokens=False)["input_ids"][-1]
    chain = [start, *tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    states = chain[:-1]
    if len(set(states)) != len(states):
        repeated = sorted({tokenizer.convert_ids_to_tokens(t) for t in states if states.count(t) > 1})
        raise ValueError(f"answer {answer!r} repeats tokens {repeated}; a bigram chain needs each token once")
    return chain


@torch.no_grad()
def script_answer(model: Qwen2VLForConditionalGeneration, chain: list[int]) -> None:
    """Rewire the language model so that after chain[i] the greedy next token is chain[i+1]."""
    language = model.model.language_model
    for layer in language.layers:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    states = chain[:-1]
    width = language.embed_tokens.weight.shape[1]
    if len(states) > width:
        raise ValueError(f"a scripted answer has at most {width - 1} tokens, got {len(states) - 1}")
    basis, _ = torch.linalg.qr(torch.randn(width, len(states)))  # orthonormal columns: no cross-talk
    for i, state in enumerate(states):
        language.embed_tokens.weight[state] = basis[:, i]
        # The final RMSNorm scales a unit vector by sqrt(width): lm_head row . hidden = CHAIN_GAIN.
        model.lm_head.weight[chain[i + 1]] += basis[:, i] * CHAIN_GAIN / width**0.5


def write_tiny_qwen2vl(directory: Path, answer: str | None = None, seed: int = 0, max_tokens: int = 16) -> Path:
    """Write a tiny Qwen2-VL judge to `directory` (loadable by the in-process backend) and return it.

    Images are resized by the processor to at most `max_tokens` merged vision tokens (28x28 pixels each).
    """
    directory = Path(directory)
    tokenizer = tiny_tokenizer()
    chain = answer_chain(tokenizer, answer) if answer is not None else None
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(tiny_config(tokenizer)).eval()
    if chain is not None:
        script_answer(model, chain)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    side = PATCH * MERGE
    processor = Qwen2VLImageProcessorPil(min_pixels=side * side * 4, max_pixels=side * side * max_tokens)
    processor.save_pretrained(directory)
    return directory
