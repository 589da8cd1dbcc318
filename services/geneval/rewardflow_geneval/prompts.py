"""GenEval-style training prompts with their metadata (JSONL), seeded, with a held-out split.

`python -m rewardflow_geneval.prompts --out DIR --n 5000 --seed 0` writes DIR/train_metadata.jsonl and
DIR/test_metadata.jsonl (the names the trainer's sd3_geneval preset reads), one GenEval metadata
object per line with its prompt, in the format of GenEval's evaluation_metadata.jsonl. The splits
share no prompt; `--exclude evaluation_metadata.jsonl` also keeps the benchmark's own prompts out.
`--world shapes` draws from the shapes world's vocabulary instead of COCO's: it has only 126 distinct
prompts (3 single_object, 6 two_object, 9 counting, 12 colors, 24 position, 72 color_attr), so
e.g. `--n 105 --n-test 21` takes all of them.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rewardflow_geneval.metadata import COCO, TAGS, WORLDS, World, read_metadata_file

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
ENUMERATE_BELOW = 20_000
"""Tags with fewer possible prompts than this are enumerated and drawn without replacement."""


# The templates below follow djghosh13/geneval prompts/create_prompts.py (our code, same wording).
def with_article(name: str) -> str:
    """'an apple', 'a dog' (GenEval's rule: 'an' before a vowel letter)."""
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def plural(name: str) -> str:
    """GenEval's plural rule: 'es' after a final 's', else 's' ('buses', 'dogs'; 'skises', as GenEval writes it)."""
    return f"{name}es" if name[-1] == "s" else f"{name}s"


def colourable(world: World) -> tuple[str, ...]:
    """The classes colour prompts may name: GenEval writes no "[colour] person" prompt for COCO."""
    return tuple(name for name in world.objects if world != COCO or name != "person")


def single_object(name: str) -> dict[str, Any]:
    return {
        "tag": "single_object",
        "include": [{"class": name, "count": 1}],
        "prompt": f"a photo of {with_article(name)}",
    }


def two_object(a: str, b: str) -> dict[str, Any]:
    return {
        "tag": "two_object",
        "include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
        "prompt": f"a photo of {with_article(a)} and {with_article(b)}",
    }


def counting(name: str, count: int) -> dict[str, Any]:
    return {
        "tag": "counting",
        "include": [{"class": name, "count": count}],
        "exclude": [{"class": name, "count": count + 1}],
        "prompt": f"a photo of {NUMBERS[count]} {plural(name)}",
    }


def colors(name: str, colour: str) -> dict[str, Any]:
    return {
        "tag": "colors",
        "include": [{"class": name, "count": 1, "color": colour}],
        "prompt": f"a photo of {with_article(colour)} {name}",
    }


def position(a: str, b: str, relation: str) -> dict[str, Any]:
    return {
        "tag": "position",
        "include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}],
        "prompt": f"a photo of {with_article(a)} {relation} {with_article(b)}",
    }


def color_attr(a: str, colour_a: str, b: str, colour_b: str) -> dict[str, Any]:
    return {
        "tag": "color_attr",
        "include": [{"class": a, "count": 1, "color": colour_a}, {"class": b, "count": 1, "color": colour_b}],
        "prompt": f"a photo of {with_article(colour_a)} {a} and {with_article(colour_b)} {b}",
    }


def _pairs(names: Sequence[str]) -> Iterator[tuple[str, str]]:
    return itertools.permutations(names, 2)


def tag_space(
    tag: str, max_count: int = 4, world: World = COCO
) -> tuple[int, Callable[[np.random.Generator], dict[str, Any]]]:
    """(how many distinct prompts the tag has, a function drawing one at random), as GenEval draws them."""
    pick, paint, where = world.objects, colourable(world), world.positions
    n, c, k = len(pick), len(paint), len(world.colors)
    if tag == "single_object":
        return n, lambda rng: single_object(pick[rng.integers(n)])
    if tag == "two_object":
        return n * (n - 1), lambda rng: two_object(*(pick[i] for i in rng.choice(n, 2, replace=False)))
    if tag == "counting":
        return n * (max_count - 1), lambda rng: counting(pick[rng.integers(n)], int(rng.integers(2, max_count + 1)))
    if tag == "colors":
        return c * k, lambda rng: colors(paint[rng.integers(c)], world.colors[rng.integers(k)])
    if tag == "position":
        return n * (n - 1) * len(where), lambda rng: position(
            *(pick[i] for i in rng.choice(n, 2, replace=False)), where[rng.integers(len(where))]
        )
    if tag == "color_attr":

        def draw(rng: np.random.Generator) -> dict[str, Any]:
            a, b = (paint[i] for i in rng.choice(c, 2, replace=False))
            ca, cb = (world.colors[i] for i in rng.choice(k, 2, replace=False))
            return color_attr(a, ca, b, cb)

        return c * (c - 1) * k * (k - 1), draw
    raise ValueError(f"tag {tag!r}: expected one of {', '.join(TAGS)}")


def _enumerate(tag: str, max_count: int, world: World = COCO) -> list[dict[str, Any]]:
    """Every prompt of a tag, in a fixed order (for tags small enough to draw without replacement)."""
    names, paint = world.objects, colourable(world)
    if tag == "single_object":
        return [single_object(a) for a in names]
    if tag == "counting":
        return [counting(a, k) for a in names for k in range(2, max_count + 1)]
    if tag == "colors":
        return [colors(a, col) for a in paint for col in world.colors]
    if tag == "two_object":
        return [two_object(a, b) for a, b in _pairs(names)]
    if tag == "position":
        return [position(a, b, rel) for a, b in _pairs(names) for rel in world.positions]
    if tag == "color_attr":
        return [
            color_attr(a, ca, b, cb) for a, b in _pairs(paint) for ca, cb in itertools.permutations(world.colors, 2)
        ]
    raise ValueError(f"tag {tag!r}: expected one of {', '.join(TAGS)}")


def quotas(total: int, spaces: dict[str, int]) -> dict[str, int]:
    """Split `total` prompts evenly over tags; a tag with fewer possible prompts gives its share to the others."""
    out: dict[str, int] = {}
    remaining = total
    ordered = sorted(spaces, key=lambda t: spaces[t])
    for k, tag in enumerate(ordered):
        out[tag] = min(spaces[tag], remaining // (len(ordered) - k))
        remaining -= out[tag]
    if remaining:
        raise ValueError(f"asked for {total} prompts; these tags have only {sum(spaces.values())} distinct ones")
    return {tag: out[tag] for tag in spaces}


def _held_out(wanted: dict[str, int], n_test: int) -> dict[str, int]:
    """Per tag, how many of its prompts go to the test split: proportional, largest remainders first, exact total."""
    total = sum(wanted.values())
    exact = {tag: q * n_test / total for tag, q in wanted.items()} if total else dict.fromkeys(wanted, 0.0)
    out = {tag: int(v) for tag, v in exact.items()}
    for tag in sorted(exact, key=lambda t: out[t] - exact[t])[: n_test - sum(out.values())]:
        out[tag] += 1
    # A small tag (the shapes world's 3 single_object prompts) may round to none: give it one from the largest.
    for tag in wanted:
        donor = max(out, key=lambda t: out[t])
        if out[tag] == 0 and wanted[tag] >= 2 and out[donor] >= 2:
            out[donor] -= 1
            out[tag] += 1
    return out


def generate(
    n_train: int,
    n_test: int,
    seed: int = 0,
    tags: Sequence[str] = TAGS,
    max_count: int = 4,
    exclude_prompts: frozenset[str] = frozenset(),
    world: World = COCO,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, test) metadata entries from `world`: distinct prompts, none in both splits or in `exclude_prompts`."""
    rng = np.random.default_rng(seed)
    pools: dict[str, list[dict[str, Any]]] = {}
    spaces: dict[str, int] = {}
    for tag in tags:
        size, _ = tag_space(tag, max_count, world)
        if size < ENUMERATE_BELOW:
            pools[tag] = [e for e in _enumerate(tag, max_count, world) if e["prompt"] not in exclude_prompts]
            size = len(pools[tag])
        spaces[tag] = size
    wanted = quotas(n_train + n_test, spaces)
    held_out = _held_out(wanted, n_test)
    train: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for tag in tags:
        if tag in pools:
            pool = pools[tag]
            chosen = [pool[i] for i in rng.permutation(len(pool))[: wanted[tag]]]
        else:
            draw = tag_space(tag, max_count, world)[1]
            seen: dict[str, dict[str, Any]] = {}
            while len(seen) < wanted[tag]:
                entry = draw(rng)
                if entry["prompt"] not in exclude_prompts:
                    seen.setdefault(entry["prompt"], entry)
            chosen = list(seen.values())
        test += chosen[: held_out[tag]]
        train += chosen[held_out[tag] :]
    train = [train[i] for i in rng.permutation(len(train))]
    test = [test[i] for i in rng.permutation(len(test))]
    return train, test


def write_jsonl(path: Path, entries: Sequence[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rewardflow_geneval.prompts", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for train_metadata.jsonl and test_metadata.jsonl"
    )
    parser.add_argument("--n", type=int, default=5000, help="training prompts (default 5000)")
    parser.add_argument("--n-test", type=int, default=None, help="held-out prompts (default n/10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--world", choices=sorted(WORLDS), default="coco", help="vocabulary: GenEval's COCO (default) or shapes"
    )
    parser.add_argument(
        "--tags", default=",".join(TAGS), help=f"comma-separated tags (default: all of {', '.join(TAGS)})"
    )
    parser.add_argument("--max-count", type=int, default=4, help="largest count in counting prompts (GenEval: 4)")
    parser.add_argument(
        "--exclude", type=Path, action="append", default=[], help="metadata JSONL whose prompts to leave out"
    )
    args = parser.parse_args(argv)
    tags = [t.strip() for t in args.tags.split(",") if t.strip()]
    unknown = [t for t in tags if t not in TAGS]
    if unknown or not tags:
        parser.error(f"--tags {args.tags!r}: expected tags among {', '.join(TAGS)}")
    if not 2 <= args.max_count <= len(NUMBERS) - 2:
        parser.error(f"--max-count {args.max_count}: expected 2..{len(NUMBERS) - 2}")
    n_test = args.n // 10 if args.n_test is None else args.n_test
    if args.n < 1 or n_test < 0:
        parser.error(f"--n {args.n} / --n-test {n_test}: expected n >= 1 and n-test >= 0")
    world = WORLDS[args.world]
    excluded = frozenset(e["prompt"] for path in args.exclude for e in read_metadata_file(path, world))
    try:
        train, test = generate(args.n, n_test, args.seed, tags, args.max_count, excluded, world)
    except ValueError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train_metadata.jsonl", train)
    write_jsonl(args.out / "test_metadata.jsonl", test)
    for name, entries in (("train", train), ("test", test)):
        per_tag = ", ".join(f"{t} {sum(e['tag'] == t for e in entries)}" for t in tags)
        print(f"{args.out / (name + '_metadata.jsonl')}: {len(entries)} prompts ({per_tag})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
