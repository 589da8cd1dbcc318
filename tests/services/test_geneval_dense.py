"""Flow-GRPO's dense GenEval score (the service's primary `score`): hand-derived cases, then a differential
test against a second implementation written here straight from the formula of yifan123/reward-server
`evaluate_reward`, over thousands of random detection sets for metadata of every tag the generator writes."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from rewardflow_geneval.metadata import COLORS, TAGS, parse_metadata
from rewardflow_geneval.prompts import tag_space
from rewardflow_geneval.rules import (
    Detection,
    Thresholds,
    colour_requests,
    dense_credits,
    dense_score,
    dense_score_range,
    evaluate,
    relative_position,
    select_objects,
)

A_DOG = {"tag": "single_object", "include": [{"class": "dog", "count": 1}]}
THREE_BUSES = {"tag": "counting", "include": [{"class": "bus", "count": 3}], "exclude": [{"class": "bus", "count": 4}]}
COUCH = (0.0, 0.0, 100.0, 100.0)
LEFT_OF_COUCH = (-300.0, 0.0, -200.0, 100.0)
RIGHT_OF_COUCH = (200.0, 0.0, 300.0, 100.0)


def det(name: str, score: float = 0.95, box: tuple[float, float, float, float] = (0, 0, 10, 10)) -> Detection:
    return Detection(name, score, box)


def judge(metadata: dict, detections: list[Detection], colors: dict | None = None, thresholds=None):
    spec = parse_metadata(metadata)
    thresholds = thresholds or Thresholds()
    return evaluate(select_objects(detections, spec.tag, thresholds), spec, colors, thresholds)


def bird_left_of_couch(bird: dict | None = None, couch: dict | None = None) -> dict:
    return {
        "tag": "position",
        "include": [
            {"class": "couch", "count": 1, **(couch or {})},
            {"class": "bird", "count": 1, "position": ["left of", 0], **(bird or {})},
        ],
    }


# ---------------------------------------------------------------- count credit: unfloored, all kept objects


def test_three_dogs_for_a_dog_earn_minus_one_while_geneval_passes_it() -> None:
    verdict = judge(A_DOG, [det("dog")] * 3)
    assert verdict.credits == [-1.0]  # 1 - |1 - 3| / 1
    assert verdict.score == -1.0
    assert verdict.strict  # GenEval's own rule is "at least 1"


@pytest.mark.parametrize(
    ("found", "credit"), [(0, 0.0), (2, 1 - 1 / 3), (3, 1.0), (4, 1 - 1 / 3), (6, 0.0), (7, 1 - 4 / 3)]
)
def test_three_buses_credit_one_minus_the_miss_over_three_and_the_exclude_clause_earns_nothing(found, credit) -> None:
    verdict = judge(THREE_BUSES, [det("bus", 0.95)] * found + [det("bus", 0.85)] * 2)  # 0.85 < 0.9: not counted
    assert verdict.credits == [credit]
    assert verdict.score == credit


def test_the_floor_is_two_minus_max_objects_and_the_range_says_so() -> None:
    assert judge(A_DOG, [det("dog")] * 20).score == -14.0  # 16 kept of 20
    assert dense_score_range(16) == (-14.0, 1.0)
    assert judge(A_DOG, [det("dog")] * 20, thresholds=Thresholds(max_objects=4)).score == -2.0
    assert dense_score_range(4) == (-2.0, 1.0)
    assert dense_score_range(1) == (0.0, 1.0)  # one kept object: the count credit is 0 or 1


# ---------------------------------------------------------------- colour


def test_a_colour_clause_with_the_wrong_count_adds_a_single_zero() -> None:
    red_car = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}]}
    assert judge(red_car, []).credits == [0.0, 0.0]
    assert judge(red_car, [det("car")] * 2, {"car": ["red", "red"]}).credits == [0.0, 0.0]
    assert judge(red_car, [det("car")], {"car": ["red"]}).credits == [1.0, 1.0]
    assert judge(red_car, [det("car")], {"car": ["blue"]}).credits == [1.0, 0.0]


def test_a_colour_clause_partly_hit_earns_the_share_of_hits() -> None:
    two_red_cars = {"tag": "colors", "include": [{"class": "car", "count": 2, "color": "red"}]}
    verdict = judge(two_red_cars, [det("car", 0.9), det("car", 0.8)], {"car": ["red", "blue"]})
    assert verdict.credits == [1.0, 0.5]  # 1 - |2 - 1| / 2
    assert verdict.score == 0.75


def test_color_attr_with_one_colour_wrong() -> None:
    metadata = {
        "tag": "color_attr",
        "include": [
            {"class": "dining table", "count": 1, "color": "yellow"},
            {"class": "dog", "count": 1, "color": "pink"},
        ],
    }
    verdict = judge(metadata, [det("dining table"), det("dog")], {"dining table": ["yellow"], "dog": ["brown"]})
    assert verdict.credits == [1.0, 1.0, 1.0, 0.0]


# ---------------------------------------------------------------- position and its quirk


def test_a_right_position_earns_one() -> None:
    verdict = judge(bird_left_of_couch(), [det("couch", box=COUCH), det("bird", box=LEFT_OF_COUCH)])
    assert verdict.credits == [1.0, 1.0, 1.0]


def test_a_wrong_position_earns_zero_and_then_one() -> None:
    verdict = judge(bird_left_of_couch(), [det("couch", box=COUCH), det("bird", box=RIGHT_OF_COUCH)])
    assert verdict.credits == [1.0, 1.0, 0.0, 1.0]
    assert verdict.score == 0.75
    assert not verdict.strict


def test_a_missing_target_earns_a_single_zero() -> None:
    verdict = judge(bird_left_of_couch(), [det("bird", box=LEFT_OF_COUCH)])
    assert verdict.credits == [0.0, 1.0, 0.0]


def test_two_birds_for_a_bird_fail_the_count_and_add_one_zero_for_the_position() -> None:
    found = [det("couch", box=COUCH), det("bird", box=LEFT_OF_COUCH), det("bird", box=(-500.0, 0.0, -400.0, 100.0))]
    verdict = judge(bird_left_of_couch(), found)
    assert verdict.credits == [1.0, 0.0, 0.0]
    assert verdict.strict  # GenEval looks at the most confident bird only


def test_a_failed_colour_skips_the_position_credit() -> None:
    found = [det("couch", box=COUCH), det("bird", box=RIGHT_OF_COUCH)]
    metadata = bird_left_of_couch(bird={"color": "red"})
    assert judge(metadata, found, {"bird": ["blue"]}).credits == [1.0, 1.0, 0.0]
    assert judge(metadata, found, {"bird": ["red"]}).credits == [1.0, 1.0, 1.0, 0.0, 1.0]


def test_a_target_whose_colour_failed_is_missing() -> None:
    found = [det("couch", box=COUCH), det("bird", box=LEFT_OF_COUCH)]
    verdict = judge(bird_left_of_couch(couch={"color": "red"}), found, {"couch": ["blue"]})
    assert verdict.credits == [1.0, 0.0, 1.0, 0.0]


def test_the_wire_details_carry_the_credits_and_the_dense_score() -> None:
    details = judge(bird_left_of_couch(), [det("couch", box=COUCH), det("bird", box=RIGHT_OF_COUCH)]).details()
    assert json.loads(json.dumps(details))["credits"] == [1.0, 1.0, 0.0, 1.0]
    assert details["score"] == 0.75 and details["strict"] is False


# ---------------------------------------------------------------- differential test


def formula_credits(
    objects: dict[str, list[Detection]], metadata: dict[str, Any], colour_of: dict[int, str], seen: Counter
) -> list[float]:
    """The formula again, from the metadata dict and each detection's own colour; `seen` counts the branches."""
    out: list[float] = []
    good_groups: dict[int, list[Detection]] = {}
    for index, clause in enumerate(metadata["include"]):
        k = clause["count"]
        mine = objects.get(clause["class"], [])
        n = len(mine)
        out.append((k - abs(k - n)) / k)
        seen["negative count credit"] += out[-1] < 0
        wants_colour, wants_place = "color" in clause, "position" in clause
        if n != k:
            seen["wrong count"] += 1
            out.extend([0.0] if (wants_colour or wants_place) else [])
            continue
        if wants_colour:
            hits = sum(colour_of[d.ref] == clause["color"] for d in mine)
            out.append(hits / k)
            if hits < k:
                seen["colour missed"] += 1
                continue
        if wants_place:
            relation, target = clause["position"]
            if target not in good_groups:
                seen["no target"] += 1
                out.append(0.0)
                continue
            pairs = [(a, b) for a in mine for b in good_groups[target]]
            if any(relation not in relative_position(a.box, b.box) for a, b in pairs):
                seen["wrong place"] += 1
                out.extend([0.0, 1.0])
                continue
            seen["right place"] += 1
            out.append(1.0)
        good_groups[index] = mine
    return out


def random_detections(rng: np.random.Generator, metadata: dict[str, Any]) -> tuple[list[Detection], dict[int, str]]:
    """Detections of the metadata's classes (and one other): often the asked count, all confident, sometimes
    any number with confidences around both thresholds; random boxes; each detection's colour, the asked
    one most of the time."""
    counts = {c["class"]: c["count"] for c in metadata["include"]}
    asked = [c.get("color") for c in metadata["include"] if c.get("color")]
    detections, colour_of = [], {}
    for name in [*sorted(counts), "person"]:
        exact = name in counts and rng.random() < 0.6
        n = counts[name] if exact else int(rng.integers(0, 20 if rng.random() < 0.15 else 5))
        for _ in range(n):
            ref = len(detections)
            score = float(rng.uniform(0.91, 1)) if exact else float(rng.choice([0.25, 0.5, 0.92, rng.uniform(0.2, 1)]))
            x, y = rng.uniform(0, 500, size=2)
            w, h = rng.uniform(5, 80, size=2)
            detections.append(Detection(name, score, (x, y, x + w, y + h), ref))
            colour_of[ref] = str(rng.choice(asked)) if asked and rng.random() < 0.7 else str(rng.choice(COLORS))
    return detections, colour_of


def random_metadata(rng: np.random.Generator, trial: int) -> dict[str, Any]:
    """The generator's metadata, each tag in turn; every seventh a position prompt the generator never writes,
    with counts up to 3 and colours on some clauses, so that colour and position meet in one clause."""
    if trial % 7 < len(TAGS):
        return tag_space(TAGS[trial % 7])[1](rng)
    metadata = tag_space("position")[1](rng)
    for clause in metadata["include"]:
        clause["count"] = int(rng.integers(1, 4))
        if rng.random() < 0.6:
            clause["color"] = str(rng.choice(COLORS))
    return metadata


THRESHOLD_CHOICES = (Thresholds(), Thresholds(max_objects=3), Thresholds(max_overlap=0.5))


def test_dense_score_equals_the_formula_on_random_detection_sets() -> None:
    rng = np.random.default_rng(20250611)
    seen: Counter = Counter()
    tags = Counter()
    for trial in range(4200):
        metadata = random_metadata(rng, trial)
        spec = parse_metadata(metadata)
        thresholds = THRESHOLD_CHOICES[int(rng.integers(len(THRESHOLD_CHOICES)))]
        detections, colour_of = random_detections(rng, metadata)
        objects = select_objects(detections, spec.tag, thresholds)
        colours = {name: [colour_of[d.ref] for d in dets] for name, dets in colour_requests(objects, spec).items()}
        expected = formula_credits(objects, metadata, colour_of, seen)
        verdict = evaluate(objects, spec, colours, thresholds)
        context = f"trial {trial}: {metadata}, found {[(n, len(d)) for n, d in objects.items()]}"
        assert verdict.credits == dense_credits(objects, spec, colours, thresholds.position), context
        assert len(verdict.credits) == len(expected), context
        assert np.allclose(verdict.credits, expected, rtol=0, atol=1e-12), context
        reference_mean = math.fsum(expected) / len(expected)
        assert abs(verdict.score - reference_mean) <= 1e-12, context
        assert verdict.score == dense_score(verdict.credits)
        low, high = dense_score_range(thresholds.max_objects)
        assert low <= verdict.score <= high, context
        tags[spec.tag] += 1
    assert set(tags) == set(TAGS) and tags["position"] == 1200
    # every branch of the formula was exercised, each many times
    for branch in ("negative count credit", "wrong count", "colour missed", "no target", "wrong place", "right place"):
        assert seen[branch] >= 50, (branch, seen)
