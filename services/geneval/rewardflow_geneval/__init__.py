"""rewardflow_geneval: the GenEval reward service (Mask2Former + CLIP colours through transformers, no mmdet).

`rules` is the pure rule engine, `metadata` GenEval's vocabulary and metadata format, `prompts` the
training-prompt generator; the models live in `detector`, `colors` and `scorer` (imported on demand,
so the rule engine and the prompt generator do not pull in torch). `shapes` is the procedural shapes
world and `shapes_detector` its exact detector (numpy and scipy only).
"""
