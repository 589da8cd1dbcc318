"""Judge answers for the served-backend and parser tests, in the formats the reference prompts ask for.

These are written here (no UnifiedReward output could be recorded on this machine: no real judge runs on it);
each follows the answer format the prompt requests or a way a real answer departs from it.
"""

from __future__ import annotations

# caption -> the UnifiedReward pointwise answer the test server gives, and the rating a reader must find.
POINTWISE: dict[str, tuple[str, float | None]] = {
    "a red car": ("Final Score: 4", 4.0),
    "a photo of a cat": (
        "The image shows a tabby cat sitting on a windowsill, which matches the caption. The fur is detailed and "
        "the lighting is natural, though the background is slightly noisy.\nFinal Score: 4.5",
        4.5,
    ),
    "a big tree": ("Alignment with the caption is weak: no tree is visible.\nFinal Score:1", 1.0),
    "a dog on the sea": ("Final Score: 5\n\nThe dog and the sea are both clearly depicted.", 5.0),
    "two scores": ("Final Score: 2\nOn reflection, Final Score: 3", 2.0),  # the first one counts (reference)
    # Answers a reader must refuse (the reference scored each of them 0):
    "no score": ("The image is a good match for the caption, with vivid colours.", None),
    "lower case": ("final score: 4", None),
    "out of range": ("Final Score: 7", None),
    "half above five": ("Final Score: 5.5", None),
    "not a number": ("Final Score: N/A", None),
    "empty": ("", None),
}

PAIRWISE: dict[str, int | None] = {
    "Image 1 is better.": 1,
    "Image 2 is better.": 2,
    "Both images are equally good.": 0,
    "After comparing both, image 2 is better because its colours match the caption.": 2,
    "Image 1 is superior in alignment.": 1,
    "Image 1 is better. Image 2 is better.": None,
    "I cannot decide.": None,
    "": None,
}

QWENVL: dict[str, int | None] = {
    "<Thought>\nSharp, well exposed, balanced composition.\n</Thought>\n<Score>4</Score>": 4,
    "<Thought>blurry</Thought><Score> 2 </Score>": 2,
    "<Score>5</Score>": 5,
    "<Thought>\nok\n</Thought>\n<Score>X</Score>": None,
    "<Score>0</Score>": None,
    "<Score>9</Score>": None,
    "Score: 4": None,
    "<Score>4": None,
}
