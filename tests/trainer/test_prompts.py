"""Prompt sets and the grouped distributed prompt sampler (docs/algorithm.md, "Prompt grouping and same_latent")."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from rewardflow_trainer.prompts import (
    BUILTIN_PROMPT_SETS,
    GroupedPromptSampler,
    Prompt,
    eval_batches,
    load_prompts,
)


def test_builtin_sets_are_disjoint_and_tiny_has_eight():
    train, held_out = load_prompts("tiny"), load_prompts("tiny_eval")
    assert len(train) == 8 and all(p.metadata == {} for p in train)
    assert not {p.text for p in train} & {p.text for p in held_out}


def test_txt_file_skips_blank_lines_and_strips(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text('  a cat \n\nsign that says "hi"\n   \n')
    assert [p.text for p in load_prompts(str(path))] == ["a cat", 'sign that says "hi"']


def test_jsonl_keeps_every_other_field_as_metadata(tmp_path):
    record = {"tag": "counting", "include": [{"class": "dog", "count": 2}], "prompt": "a photo of two dogs"}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(record) + "\n\n" + json.dumps({"prompt": "a cat"}) + "\n")
    prompts = load_prompts(str(path))
    assert prompts[0] == Prompt("a photo of two dogs", {"tag": "counting", "include": [{"class": "dog", "count": 2}]})
    assert prompts[1] == Prompt("a cat", {})


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json}\n", "p.jsonl:1: expected one JSON object per line"), ('{"text": "x"}\n', "string 'prompt' field")],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_prompts(str(path))


def test_unknown_source_lists_the_builtin_sets():
    with pytest.raises(ValueError, match="tiny, tiny_eval"):
        load_prompts("imagenet")


def _all_ranks(prompts, m, k, b, n, seed, epoch):
    return [GroupedPromptSampler(prompts, m, k, b, n, r, seed).batches(epoch) for r in range(n)]


@st.composite
def _layouts(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    """(num_prompts, m, k, n, b) with m*k a multiple of n*b: drawn so, rather than filtered, so that most
    examples are valid (multi-rank ones included) and assume() only drops the rare empty choice."""
    n, b, k = draw(st.integers(1, 4)), draw(st.integers(1, 8)), draw(st.integers(1, 6))
    ms = [m for m in range(1, 13) if (m * k) % (n * b) == 0]
    assume(ms)
    m = draw(st.sampled_from(ms))
    return draw(st.integers(m, 12)), m, k, n, b


@settings(max_examples=60, deadline=None)
@given(layout=_layouts(), epoch=st.integers(0, 5))
@example(layout=(12, 12, 2, 4, 6), epoch=1)  # four ranks, six per batch: always among the cases
@example(layout=(5, 3, 4, 2, 3), epoch=0)  # two ranks, fewer prompts than slots
def test_ranks_together_see_m_prompts_exactly_k_times(layout, epoch):
    num_prompts, m, k, n, b = layout
    assume(m <= num_prompts and (m * k) % (n * b) == 0)
    prompts = [Prompt(f"p{i}", {"i": i}) for i in range(num_prompts)]
    per_rank = _all_ranks(prompts, m, k, b, n, seed=7, epoch=epoch)
    counts = Counter(text for batches in per_rank for batch in batches for text in batch.prompts)
    assert len(counts) == m and set(counts.values()) == {k}
    assert all(len(batch) == b for batches in per_rank for batch in batches)
    assert len({len(batches) for batches in per_rank}) == 1  # every rank runs the same number of batches
    for batches in per_rank:
        for batch in batches:
            assert [md["i"] for md in batch.metadata] == batch.prompt_ids
            assert batch.prompts == [f"p{i}" for i in batch.prompt_ids]


def test_ranks_slice_one_shared_order_and_epochs_differ():
    prompts = [Prompt(f"p{i}") for i in range(10)]
    a = GroupedPromptSampler(prompts, 6, 4, 3, num_replicas=2, rank=0, seed=1)
    b = GroupedPromptSampler(prompts, 6, 4, 3, num_replicas=2, rank=1, seed=1)
    order = a.epoch_order(3).tolist()
    assert order == b.epoch_order(3).tolist()  # ranks agree without communicating
    interleaved = [i for x, y in zip(a.batches(3), b.batches(3), strict=True) for i in x.prompt_ids + y.prompt_ids]
    assert interleaved == order  # chunk of n*b: rank 0 takes the first b, rank 1 the next b
    assert a.batches_per_epoch == 4 and a.epoch_order(4).tolist() != order
    assert GroupedPromptSampler(prompts, 6, 4, 3, 2, 0, seed=2).epoch_order(3).tolist() != order


def test_sampler_rejects_impossible_grouping():
    prompts = [Prompt("a"), Prompt("b")]
    with pytest.raises(ValueError, match=r"num_groups = 3: expected 1\.\.2"):
        GroupedPromptSampler(prompts, 3, 2, 1)
    with pytest.raises(ValueError, match="must be a multiple of world_size\\*batch_size = 2\\*3"):
        GroupedPromptSampler(prompts, 2, 2, 3, num_replicas=2)
    with pytest.raises(ValueError, match="rank = 2"):
        GroupedPromptSampler(prompts, 2, 2, 1, num_replicas=2, rank=2)


def test_eval_batches_cover_each_prompt_once_across_ranks():
    prompts = [Prompt(t) for t in BUILTIN_PROMPT_SETS["tiny"]]
    shards = [eval_batches(prompts, batch_size=3, num_replicas=3, rank=r) for r in range(3)]
    seen = sorted(i for shard in shards for batch in shard for i in batch.prompt_ids)
    assert seen == list(range(8)) and all(len(batch) <= 3 for shard in shards for batch in shard)
    assert [b.prompt_ids for b in eval_batches(prompts, 2, limit=3)] == [[0, 1], [2]]
