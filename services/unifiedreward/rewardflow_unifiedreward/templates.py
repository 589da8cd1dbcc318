"""The judge's prompts, as data. `{prompt}` is the image's caption; nothing else is filled in.

POINTWISE is the question Flow-GRPO sends to UnifiedReward-7b-v1.5 through sglang (rewards.py,
unifiedreward_score_sglang): the answer ends with 'Final Score: <1-5>'. Its leading '<image>\\n' is the LLaVA
image marker that request carries in its text beside the image_url part; it is sent on the served backend only
(an in-process Qwen2-VL places the image from the message part itself).

PAIRWISE is UnifiedReward's own pair-ranking question for image generation (qwen_pair_rank_image_generation.py):
two images, then the text; the answer says 'Image 1 is better.', 'Image 2 is better.' or 'Both images are
equally good.'.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JudgeTemplate:
    """A question with a `{prompt}` slot, and the text the served backend puts before it."""

    text: str
    served_prefix: str = ""

    def render(self, prompt: str, served: bool) -> str:
        """The question for `prompt` (str.replace, not format: a caption may hold braces)."""
        return (self.served_prefix if served else "") + self.text.replace("{prompt}", prompt)


POINTWISE = JudgeTemplate(
    served_prefix="<image>\n",
    text=(
        "You are given a text caption and a generated image based on that caption. Your task is to evaluate this "
        "image based on two key criteria:\n"
        "1. Alignment with the Caption: Assess how well this image aligns with the provided caption. Consider the "
        "accuracy of depicted objects, their relationships, and attributes as described in the caption.\n"
        "2. Overall Image Quality: Examine the visual quality of this image, including clarity, detail "
        "preservation, color accuracy, and overall aesthetic appeal.\n"
        "Based on the above criteria, assign a score from 1 to 5 after 'Final Score:'.\n"
        "Your task is provided as follows:\n"
        "Text Caption: [{prompt}]"
    ),
)

PAIRWISE = JudgeTemplate(
    text=(
        "You are given a text caption and two generated images based on that caption. Your task is to evaluate "
        "and compare these images based on two key criteria:\n"
        "1. Alignment with the Caption: Assess how well each image aligns with the provided caption. Consider the "
        "accuracy of depicted objects, their relationships, and attributes as described in the caption.\n"
        "2. Overall Image Quality: Examine the visual quality of each image, including clarity, detail "
        "preservation, color accuracy, and overall aesthetic appeal.\n"
        "Compare both images using the above criteria and select the one that better aligns with the caption "
        "while exhibiting superior visual quality.\n"
        'Provide a clear conclusion such as "Image 1 is better.", "Image 2 is better." and "Both images are '
        'equally good."\n'
        "Your task is provided as follows:\n"
        "Text Caption: [{prompt}]"
    ),
)
