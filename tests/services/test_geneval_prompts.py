"""The GenEval-style prompt generator: GenEval's templates, seeded, disjoint splits, metadata the rules accept."""

from __future__ import annotations

import json

import pytest
from rewardflow_geneval.metadata import TAGS, parse_metadata
from rewardflow_geneval.prompts import color_attr, counting, generate, main, position, quotas, single_object, two_object

# Lines of GenEval's prompts/evaluation_metadata.jsonl: our templates must reproduce them exactly.
OFFICIAL = [
    '{"tag": "single_object", "include": [{"class": "apple", "count": 1}], "prompt": "a photo of an apple"}',
    '{"tag": "two_object", "include": [{"class": "sink", "count": 1}, {"class": "sports ball", "count": 1}], '
    '"prompt": "a photo of a sink and a sports ball"}',
    '{"tag": "counting", "include": [{"class": "bus", "count": 3}], "exclude": [{"class": "bus", "count": 4}], '
    '"prompt": "a photo of three buses"}',
    '{"tag": "position", "include": [{"class": "vase", "count": 1}, {"class": "couch", "count": 1, '
    '"position": ["below", 0]}], "prompt": "a photo of a couch below a vase"}',
    '{"tag": "color_attr", "include": [{"class": "traffic light", "count": 1, "color": "orange"}, '
    '{"class": "toilet", "count": 1, "color": "white"}], '
    '"prompt": "a photo of an orange traffic light and a white toilet"}',
]


def test_templates_reproduce_geneval_lines_exactly() -> None:
    built = [
        single_object("apple"),
        two_object("sink", "sports ball"),
        counting("bus", 3),
        position("couch", "vase", "below"),
        color_attr("traffic light", "orange", "toilet", "white"),
    ]
    assert [json.dumps(entry) for entry in built] == OFFICIAL


def test_splits_are_disjoint_distinct_valid_and_cover_every_tag() -> None:
    train, test = generate(3000, 300, seed=0)
    assert len(train) == 3000 and len(test) == 300
    train_prompts = {e["prompt"] for e in train}
    test_prompts = {e["prompt"] for e in test}
    assert len(train_prompts) == 3000 and len(test_prompts) == 300
    assert not train_prompts & test_prompts
    for entry in train + test:
        assert parse_metadata(entry).prompt == entry["prompt"]
    assert {e["tag"] for e in train} == set(TAGS) == {e["tag"] for e in test}
    assert not any(e["tag"] == "colors" and e["include"][0]["class"] == "person" for e in train + test)


def test_same_seed_same_prompts_other_seed_other_prompts() -> None:
    assert generate(500, 50, seed=3) == generate(500, 50, seed=3)
    assert generate(500, 50, seed=3)[0] != generate(500, 50, seed=4)[0]


def test_small_tags_give_their_share_to_the_others() -> None:
    shares = quotas(6000, {"single_object": 80, "counting": 240, "colors": 790, "two_object": 6320, "position": 25280})
    assert shares["single_object"] == 80 and shares["counting"] == 240 and shares["colors"] == 790
    assert sum(shares.values()) == 6000
    with pytest.raises(ValueError, match="only 80"):
        quotas(81, {"single_object": 80})


def test_excluded_prompts_never_appear() -> None:
    banned = frozenset({"a photo of an apple", "a photo of three buses"})
    # 80 + 240 prompts exist for these two tags; 2 are banned, so 318 is everything that is left
    train, test = generate(270, 48, seed=0, tags=("single_object", "counting"), exclude_prompts=banned)
    assert (len(train), len(test)) == (270, 48)
    assert not banned & {e["prompt"] for e in train + test}
    with pytest.raises(ValueError, match="only 318"):
        generate(270, 49, seed=0, tags=("single_object", "counting"), exclude_prompts=banned)


def test_cli_writes_files_the_trainer_reads_with_metadata(tmp_path, capsys) -> None:
    official = tmp_path / "evaluation_metadata.jsonl"
    official.write_text("\n".join(OFFICIAL) + "\n")
    assert main(["--out", str(tmp_path / "geneval"), "--n", "400", "--n-test", "40", "--exclude", str(official)]) == 0
    assert "train_metadata.jsonl: 400 prompts" in capsys.readouterr().out
    from rewardflow_trainer.prompts import load_prompts

    prompts = load_prompts(str(tmp_path / "geneval" / "train_metadata.jsonl"))
    assert len(prompts) == 400
    assert all("prompt" not in p.metadata and parse_metadata(p.metadata).tag == p.metadata["tag"] for p in prompts)
    test_prompts = {p.text for p in load_prompts(str(tmp_path / "geneval" / "test_metadata.jsonl"))}
    assert not test_prompts & {p.text for p in prompts}
    assert not {json.loads(line)["prompt"] for line in OFFICIAL} & (test_prompts | {p.text for p in prompts})
