"""GenEval's rules on constructed detections; every expected verdict is worked out from GenEval's
evaluate_images.py by hand (thresholds 0.3 / 0.9 counting, 16 objects, position threshold 0.1), every
expected `score` from Flow-GRPO's dense formula (test_geneval_dense.py tests that formula itself)."""

from __future__ import annotations

import json

import pytest
from rewardflow_geneval.metadata import MetadataError, parse_metadata, read_metadata_file
from rewardflow_geneval.rules import (
    Detection,
    Thresholds,
    colour_requests,
    evaluate,
    relative_position,
    select_objects,
)

# Lines copied from GenEval's prompts/evaluation_metadata.jsonl (the official format, read as is).
OFFICIAL_LINES = [
    '{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}',
    '{"tag": "two_object", "include": [{"class": "bottle", "count": 1}, {"class": "refrigerator", "count": 1}], '
    '"prompt": "a photo of a bottle and a refrigerator"}',
    '{"tag": "counting", "include": [{"class": "bus", "count": 3}], "exclude": [{"class": "bus", "count": 4}], '
    '"prompt": "a photo of three buses"}',
    '{"tag": "colors", "include": [{"class": "potted plant", "count": 1, "color": "purple"}], '
    '"prompt": "a photo of a purple potted plant"}',
    '{"tag": "position", "include": [{"class": "couch", "count": 1}, {"class": "bird", "count": 1, '
    '"position": ["left of", 0]}], "prompt": "a photo of a bird left of a couch"}',
    '{"tag": "color_attr", "include": [{"class": "dining table", "count": 1, "color": "yellow"}, '
    '{"class": "dog", "count": 1, "color": "pink"}], "prompt": "a photo of a yellow dining table and a pink dog"}',
]


def det(name: str, score: float, box: tuple[float, float, float, float] = (0, 0, 10, 10)) -> Detection:
    return Detection(name, score, box)


def judge(metadata: dict, detections: list[Detection], colors: dict | None = None, thresholds=None):
    spec = parse_metadata(metadata)
    thresholds = thresholds or Thresholds()
    objects = select_objects(detections, spec.tag, thresholds)
    return evaluate(objects, spec, colors, thresholds)


SINGLE = {"tag": "single_object", "include": [{"class": "dog", "count": 1}]}
THREE_BUSES = json.loads(OFFICIAL_LINES[2])


# ---------------------------------------------------------------- single_object and the 0.3 threshold


@pytest.mark.parametrize(("score", "passes"), [(0.31, True), (0.3, False), (0.29, False), (0.99, True)])
def test_single_object_needs_confidence_strictly_above_point_three(score: float, passes: bool) -> None:
    verdict = judge(SINGLE, [det("dog", score)])
    assert verdict.strict is passes
    assert verdict.score == (1.0 if passes else 0.0)


def test_single_object_ignores_other_classes_and_says_what_was_missing() -> None:
    verdict = judge(SINGLE, [det("cat", 0.95)])
    assert not verdict.strict
    assert verdict.reasons == ["expected at least 1 dog, found 0"]
    assert verdict.details()["detected"] == {"cat": 1}


def test_extra_objects_do_not_fail_an_include_clause() -> None:
    assert judge(SINGLE, [det("dog", 0.9), det("dog", 0.8), det("dog", 0.7)]).strict


# ---------------------------------------------------------------- counting: 0.9 threshold, exclude clause


def test_counting_exact_count_above_point_nine_passes() -> None:
    verdict = judge(THREE_BUSES, [det("bus", 0.95), det("bus", 0.92), det("bus", 0.91)])
    assert verdict.strict and verdict.score == 1.0


def test_counting_uses_point_nine_so_a_bus_at_exactly_point_nine_is_not_counted() -> None:
    verdict = judge(THREE_BUSES, [det("bus", 0.95), det("bus", 0.92), det("bus", 0.9), det("bus", 0.5)])
    assert not verdict.strict
    assert verdict.score == 1 - 1 / 3  # 2 of 3 buses; the exclude clause earns nothing
    assert verdict.reasons == ["expected at least 3 bus, found 2"]


def test_the_same_detections_count_at_point_three_for_other_tags() -> None:
    metadata = {"tag": "two_object", "include": [{"class": "bus", "count": 3}]}
    assert judge(metadata, [det("bus", 0.95), det("bus", 0.5), det("bus", 0.31)]).strict


def test_counting_one_too_many_fails_the_exclude_clause() -> None:
    verdict = judge(THREE_BUSES, [det("bus", 0.99)] * 4)
    assert not verdict.strict
    assert verdict.score == 1 - 1 / 3  # 4 of 3 buses
    assert verdict.reasons == ["expected fewer than 4 bus, found 4"]


def test_counting_one_too_many_below_the_counting_threshold_still_passes() -> None:
    assert judge(THREE_BUSES, [det("bus", 0.99)] * 3 + [det("bus", 0.85)]).strict


def test_max_objects_caps_detections_per_class_at_sixteen() -> None:
    metadata = {
        "tag": "counting",
        "include": [{"class": "apple", "count": 1}],
        "exclude": [{"class": "apple", "count": 17}],
    }
    verdict = judge(metadata, [det("apple", 0.95)] * 20)
    assert verdict.details()["detected"] == {"apple": 16}
    assert verdict.strict  # 16 < 17: GenEval never sees the 17th


def test_overlap_suppression_is_off_by_default_and_works_when_set() -> None:
    same_place = [
        det("cup", 0.9, (0, 0, 100, 100)),
        det("cup", 0.8, (1, 1, 101, 101)),
        det("cup", 0.7, (300, 0, 400, 90)),
    ]
    assert len(select_objects(same_place, "two_object", Thresholds())["cup"]) == 3
    kept = select_objects(same_place, "two_object", Thresholds(max_overlap=0.5))["cup"]
    assert [d.score for d in kept] == [0.9, 0.7]


# ---------------------------------------------------------------- two_object


TWO = json.loads(OFFICIAL_LINES[1])


def test_two_objects_both_present_pass() -> None:
    assert judge(TWO, [det("bottle", 0.6), det("refrigerator", 0.4)]).strict


def test_two_objects_with_one_missing_fail_with_half_credit() -> None:
    verdict = judge(TWO, [det("bottle", 0.6), det("refrigerator", 0.2)])
    assert not verdict.strict
    assert verdict.score == 0.5
    assert verdict.reasons == ["expected at least 1 refrigerator, found 0"]


# ---------------------------------------------------------------- colors


RED_CAR = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}]}


def test_colour_is_asked_only_for_the_most_confident_objects() -> None:
    spec = parse_metadata(RED_CAR)
    objects = select_objects([det("car", 0.5), det("car", 0.8), det("bus", 0.9)], spec.tag, Thresholds())
    requests = colour_requests(objects, spec)
    assert list(requests) == ["car"]
    assert [d.score for d in requests["car"]] == [0.8]


def test_right_colour_passes_wrong_colour_fails() -> None:
    assert judge(RED_CAR, [det("car", 0.8)], {"car": ["red"]}).strict
    verdict = judge(RED_CAR, [det("car", 0.8)], {"car": ["blue"]})
    assert not verdict.strict
    assert verdict.score == 0.5  # the count holds, the colour does not
    assert verdict.reasons == ["expected 1 red car, found 0 red (colours: 1 blue)"]


def test_a_second_red_object_below_the_top_count_does_not_help() -> None:
    metadata = {"tag": "colors", "include": [{"class": "car", "count": 2, "color": "red"}]}
    verdict = judge(metadata, [det("car", 0.9), det("car", 0.8), det("car", 0.7)], {"car": ["red", "blue", "red"]})
    assert not verdict.strict


def test_colour_of_a_missing_object_is_an_unmet_check() -> None:
    verdict = judge(RED_CAR, [], {})
    assert verdict.score == 0.0
    assert len(verdict.checks) == 2


def test_missing_colours_for_a_found_object_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="colors"):
        judge(RED_CAR, [det("car", 0.8)], {})


# ---------------------------------------------------------------- color_attr


COLOR_ATTR = json.loads(OFFICIAL_LINES[5])


def test_color_attr_both_colours_right_passes_one_wrong_fails_with_three_quarters() -> None:
    found = [det("dining table", 0.7), det("dog", 0.9)]
    assert judge(COLOR_ATTR, found, {"dining table": ["yellow"], "dog": ["pink"]}).strict
    verdict = judge(COLOR_ATTR, found, {"dining table": ["yellow"], "dog": ["brown"]})
    assert not verdict.strict
    assert verdict.score == 0.75


def test_color_attr_swapped_colours_fail_both_colour_checks() -> None:
    verdict = judge(
        COLOR_ATTR, [det("dining table", 0.7), det("dog", 0.9)], {"dining table": ["pink"], "dog": ["yellow"]}
    )
    assert verdict.score == 0.5


# ---------------------------------------------------------------- position

COUCH = (0.0, 0.0, 100.0, 100.0)  # centre (50, 50), size 100 x 100


def position_metadata(relation: str) -> dict:
    return {
        "tag": "position",
        "include": [{"class": "couch", "count": 1}, {"class": "bird", "count": 1, "position": [relation, 0]}],
    }


@pytest.mark.parametrize(
    ("bird_box", "relation"),
    [
        ((-300.0, 0.0, -200.0, 100.0), "left of"),
        ((200.0, 0.0, 300.0, 100.0), "right of"),
        ((0.0, -300.0, 100.0, -200.0), "above"),  # y grows downwards: smaller y is above
        ((0.0, 200.0, 100.0, 300.0), "below"),
    ],
)
def test_each_relation_holds_and_its_opposite_fails(bird_box, relation) -> None:
    opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[relation]
    found = [det("couch", 0.9, COUCH), det("bird", 0.9, bird_box)]
    assert relative_position(bird_box, COUCH) == {relation}
    assert judge(position_metadata(relation), found).strict
    verdict = judge(position_metadata(opposite), found)
    assert not verdict.strict
    assert verdict.credits == [1.0, 1.0, 0.0, 1.0]  # couch, bird, the failed relation's 0.0 then 1.0
    assert verdict.score == 3 / 4
    assert verdict.reasons == [f"expected bird {opposite} couch, found bird {relation} couch"]


def test_position_threshold_shrinks_the_offset_by_a_tenth_of_both_sizes() -> None:
    # offset 25 px, 0.1 x (100 + 100) = 20: revised 5 / 25 = 0.2 < 0.5 -> no relation
    assert relative_position((25.0, 0.0, 125.0, 100.0), COUCH) == set()
    # offset 60 px: revised 40 / 60 = 0.67 > 0.5 -> right of
    assert relative_position((60.0, 0.0, 160.0, 100.0), COUCH) == {"right of"}
    # with threshold 0.25: revised max(60 - 50, 0) / 60 = 0.17 -> nothing
    assert relative_position((60.0, 0.0, 160.0, 100.0), COUCH, threshold=0.25) == set()


def test_diagonal_offsets_give_two_relations_or_one() -> None:
    # offset (100, 100): revised (80, 80) / 141.4 = 0.57 each -> both
    assert relative_position((100.0, 100.0, 200.0, 200.0), COUCH) == {"right of", "below"}
    # offset (100, 60): revised (80, 40) / 116.6 = (0.69, 0.34) -> right of only
    assert relative_position((100.0, 60.0, 200.0, 160.0), COUCH) == {"right of"}


def test_identical_boxes_have_no_relation_and_fail_the_position_check() -> None:
    verdict = judge(position_metadata("left of"), [det("couch", 0.9, COUCH), det("bird", 0.9, COUCH)])
    assert not verdict.strict
    assert verdict.reasons == ["expected bird left of couch, found bird overlapping couch"]


def test_position_without_its_target_fails_both_clauses() -> None:
    verdict = judge(position_metadata("left of"), [det("bird", 0.9, (-300.0, 0.0, -200.0, 100.0))])
    assert not verdict.strict
    assert verdict.score == 1 / 3
    assert verdict.reasons == ["expected at least 1 couch, found 0", "no couch matched to place bird left of"]


def test_position_uses_only_the_most_confident_bird() -> None:
    found = [
        det("couch", 0.9, COUCH),
        det("bird", 0.9, (-300.0, 0.0, -200.0, 100.0)),
        det("bird", 0.5, (300.0, 0.0, 400.0, 100.0)),
    ]
    assert judge(position_metadata("left of"), found).strict


# ---------------------------------------------------------------- metadata


def test_official_metadata_lines_parse_as_is(tmp_path) -> None:
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text("\n".join(OFFICIAL_LINES) + "\n")
    entries = read_metadata_file(path)
    assert [e["tag"] for e in entries] == [
        "single_object", "two_object", "counting", "colors", "position", "color_attr"
    ]  # fmt: skip
    spec = parse_metadata(entries[4])
    assert spec.include[1].position == ("left of", 0)
    assert spec.exclude == ()


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"include": [{"class": "dog", "count": 1}]}, "tag"),
        ({"tag": "shapes", "include": [{"class": "dog", "count": 1}]}, "tag"),
        ({"tag": "single_object"}, "include"),
        ({"tag": "single_object", "include": []}, "include"),
        ({"tag": "single_object", "include": "dog"}, "include"),
        ({"tag": "single_object", "include": [{"class": "unicorn", "count": 1}]}, "include[0].class"),
        ({"tag": "single_object", "include": [{"count": 1}]}, "include[0].class"),
        ({"tag": "single_object", "include": [{"class": "dog", "count": 0}]}, "include[0].count"),
        ({"tag": "single_object", "include": [{"class": "dog", "count": "2"}]}, "include[0].count"),
        ({"tag": "single_object", "include": [{"class": "dog", "count": True}]}, "include[0].count"),
        ({"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "teal"}]}, "include[0].color"),
        (
            {"tag": "position", "include": [{"class": "dog", "count": 1, "position": ["left of", 0]}]},
            "include[0].position",
        ),
        (
            {
                "tag": "position",
                "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["near", 0]}],
            },
            "include[1].position",
        ),
        (
            {"tag": "counting", "include": [{"class": "dog", "count": 2}], "exclude": [{"class": "dog"}]},
            "exclude[0].count",
        ),
    ],
)
def test_malformed_metadata_names_the_field(metadata: dict, field: str) -> None:
    with pytest.raises(MetadataError) as info:
        parse_metadata(metadata)
    assert info.value.field == field


def test_metadata_file_errors_name_the_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        OFFICIAL_LINES[0] + '\n{"tag": "single_object", "include": [{"class": "dog", "count": -1}], "prompt": "x"}\n'
    )
    with pytest.raises(ValueError, match=r"bad.jsonl:2: include\[0\].count"):
        read_metadata_file(path)
