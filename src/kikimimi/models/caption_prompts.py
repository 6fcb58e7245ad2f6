"""Token ids around the audio prefix: the question as a prompt, the answer with its end token, decoded text.

A caption is the answer to :data:`CAPTION_QUESTION`; ``ask`` puts the user's question in the same place, so one
model does both. The language model sees ``[prefix K] [prompt tokens] [answer tokens] [eos]``; the loss reads only
the answer positions (the others are labelled :data:`IGNORE_INDEX`).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["CAPTION_QUESTION", "IGNORE_INDEX", "answer_ids", "clean_decoded", "prompt_ids"]

#: the question a caption answers (training and ``caption``)
CAPTION_QUESTION = "Describe this sound."
#: label value ignored by the loss (prompt, prefix and padding positions)
IGNORE_INDEX = -100


def prompt_ids(tokenizer: Any, question: str) -> list[int]:
    """Token ids of ``question`` as a user turn followed by the start of the assistant's answer.

    The tokenizer's chat template when it has one (SmolLM2-Instruct), else ``"Question: … Answer:"``.
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = f"Question: {question} Answer:"
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """Token ids of an answer followed by the end token (the tokenizer's eos)."""
    ids = list(tokenizer((" " if not getattr(tokenizer, "chat_template", None) else "") + answer,
                         add_special_tokens=False)["input_ids"])
    return ids + [int(tokenizer.eos_token_id)]


def clean_decoded(text: str) -> str:
    """Decoded answer text: stripped, no spaces before punctuation or around hyphens (word-level tokenizers
    space them)."""
    text = re.sub(r"(\w)\s+-\s+(\w)", r"\1-\2", text)  # "hi - hat" → "hi-hat"
    return re.sub(r"\s+([.,!?;:'])", r"\1", text).strip()
