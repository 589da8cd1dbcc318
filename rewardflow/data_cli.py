"""`rewardflow data list|generate|fetch`: the prompt sets the presets read (dataset/<set>/...), made here by a
seeded generator or downloaded from their public sources, with size, source and license printed first.

The catalog of sets and of which command writes which file is rewardflow_trainer.datasets (the trainer's
"expected an existing file" error names the command from it); the sources to fetch from are below.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rewardflow_proto.names import did_you_mean


class DataError(Exception):
    """A condition the user fixes (unknown set, no network, file exists); printed as one line."""


ToolError = DataError  # what `rewardflow` turns into one line and exit code 2

GITHUB_RAW = "https://raw.githubusercontent.com"
FLOW_GRPO = "yifan123/flow_grpo"


def _lines(texts: Sequence[str]) -> str:
    return "".join(" ".join(t.split()) + "\n" for t in texts if t and t.strip())


def _json_lists(files: dict[str, bytes]) -> dict[str, str]:
    """HPSv2's benchmark/<style>.json files (JSON lists of prompts) -> one test.txt, styles in file order."""
    prompts: list[str] = []
    for name, data in files.items():
        value = json.loads(data)
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise DataError(f"{name}: expected a JSON list of prompt strings")
        prompts += value
    return {"test.txt": _lines(prompts)}


def _csv_prompts(files: dict[str, bytes]) -> dict[str, str]:
    """DrawBench's CSV (a 'Prompts' column) -> test.txt."""
    [(name, data)] = files.items()
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    column = next((c for c in (rows[0] if rows else {}) if c.strip().lower() in ("prompts", "prompt")), None)
    if column is None:
        raise DataError(f"{name}: expected a 'Prompts' column, found {list(rows[0]) if rows else 'no rows'}")
    return {"test.txt": _lines([row[column] for row in rows])}


@dataclass(frozen=True)
class Source:
    """Where `rewardflow data fetch NAME` downloads a set from: files of a GitHub repository, or of a Hugging Face
    dataset (`convert` turns the downloaded files into the set's files)."""

    name: str
    folder: str
    host: str  # "github" or "huggingface"
    repo: str
    files: tuple[tuple[str, str], ...]  # (path in the repository, local file); for a dataset, local "" = convert
    license: str
    convert: Callable[[dict[str, bytes]], dict[str, str]] | None = None
    revision: str = "main"

    def url(self, path: str) -> str:
        if self.host == "github":
            return f"{GITHUB_RAW}/{self.repo}/{self.revision}/{path}"
        return f"https://huggingface.co/datasets/{self.repo}/resolve/{self.revision}/{path}"

    def page(self) -> str:
        if self.host == "github":
            return f"https://github.com/{self.repo}"
        return f"https://huggingface.co/datasets/{self.repo}"


FLOW_GRPO_LICENSE = f"MIT (the {FLOW_GRPO} repository's LICENSE)"
SOURCES: dict[str, Source] = {
    "pickscore": Source(
        "pickscore", "pickscore", "github", FLOW_GRPO,
        (("dataset/pickscore/train.txt", "train.txt"), ("dataset/pickscore/test.txt", "test.txt")),
        f"{FLOW_GRPO_LICENSE}; the prompts are Pick-a-Pic's (yuvalkirstain/pickapic_v1)",
    ),
    "ocr": Source(
        "ocr", "ocr", "github", FLOW_GRPO,
        (("dataset/ocr/train.txt", "train.txt"), ("dataset/ocr/test.txt", "test.txt")), FLOW_GRPO_LICENSE,
    ),
    "geneval": Source(
        "geneval", "geneval", "github", "djghosh13/geneval",
        (("prompts/evaluation_metadata.jsonl", "evaluation_metadata.jsonl"),),
        "MIT (the djghosh13/geneval repository's LICENSE)",
    ),
    "drawbench": Source(
        "drawbench", "drawbench", "huggingface", "sayakpaul/drawbench", (("*.csv", ""),),
        "as its dataset card states (printed when fetched)", _csv_prompts,
    ),
    "hps": Source(
        "hps", "hps", "huggingface", "zhwang/HPDv2",
        tuple((f"benchmark/{style}.json", "") for style in ("anime", "concept-art", "paintings", "photo")),
        "as its dataset card states (printed when fetched)", _json_lists,
    ),
}  # fmt: skip
"""The sets `rewardflow data fetch` downloads (their local files are rewardflow_trainer.datasets.SETS')."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rewardflow data", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=Path("dataset"), help="where the sets go (default dataset/)")
    sub.add_parser("list", parents=[common], help="the sets the presets read, where they go, whether present")
    gen = sub.add_parser("generate", parents=[common], help="write a seeded prompt set: geneval, ocr or shapes")
    gen.add_argument("name", metavar="NAME", help="geneval, ocr or shapes")
    gen.add_argument("--out", type=Path, default=None, help="folder (default: DATA_DIR/<set>)")
    gen.add_argument("--n", type=int, default=None, help="training prompts (default: the generator's)")
    gen.add_argument("--n-test", type=int, default=None, help="held-out prompts (default: the generator's)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fetch = sub.add_parser("fetch", parents=[common], help=f"download a set: {', '.join(SOURCES)}")
    fetch.add_argument("name", metavar="NAME", help=", ".join(SOURCES))
    fetch.add_argument("--force", action="store_true", help="download again over existing files")
    return p


def main(argv: Sequence[str]) -> int:
    """`rewardflow data ...`; DataError is turned into one line and exit code 2 by the caller."""
    args = parser().parse_args(list(argv))
    if args.action == "list":
        return cmd_list(args.data_dir)
    if args.action == "generate":
        return generate(args.name, args.out or args.data_dir / GENERATORS.get(args.name, ("", ""))[0], args)
    if args.name not in SOURCES:
        raise DataError(f"rewardflow data fetch: {did_you_mean(args.name, SOURCES, 'prompt set')}")
    from rewardflow.data_fetch import fetch  # network code only when fetching

    return fetch(SOURCES[args.name], args.data_dir, args.force)


# ---------------------------------------------------------------- list


def _catalog() -> tuple:
    try:
        from rewardflow_trainer.datasets import SETS
        from rewardflow_trainer.presets import PRESETS
    except ImportError as exc:
        raise DataError(f"the trainer is not available ({exc}); install it with `pip install -e trainer`") from None
    return SETS, PRESETS


def readers(presets: dict) -> dict[tuple[str, str], list[str]]:
    """(folder, file) -> the presets whose prompts.train or prompts.eval is that file of the data directory."""
    from rewardflow_trainer.datasets import set_of

    out: dict[tuple[str, str], list[str]] = {}
    for name, make in presets.items():
        config = make()
        for source in (config.prompts.train, config.prompts.eval):
            if set_of(source) is not None:
                out.setdefault((Path(source).parent.name, Path(source).name), []).append(name)
    return out


def cmd_list(data_dir: Path) -> int:
    """One line per set: its files under `data_dir`, present or missing, the presets reading them, how to make it."""
    sets, presets = _catalog()
    read_by = readers(presets)
    print(f"prompt sets in {data_dir}/ (from {Path.cwd()}); the presets read dataset/<set>/")
    rows = []
    for prompt_set in sets:
        paths = [data_dir / prompt_set.folder / f for f in prompt_set.files]
        present = sum(p.is_file() for p in paths)
        state = "present" if present == len(paths) else "missing" if not present else "partial"
        users = sorted({p for f in prompt_set.files for p in read_by.get((prompt_set.folder, f), [])})
        make = " | ".join(f"rewardflow data {action}" for action in prompt_set.make)
        files = f"{prompt_set.folder}/{{{','.join(prompt_set.files)}}}"
        rows.append((prompt_set.name, files, state, ", ".join(users) or "-", make))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    others = [f"{name} ({_where(make().prompts.train)})" for name, make in presets.items()
              if not any(name in users for users in read_by.values())]  # fmt: skip
    if others:
        print(f"presets with built-in or shipped prompts: {'; '.join(others)}")
    return 0


def _where(source: str) -> str:
    """A preset's prompt source in a few words: a built-in set's name, or the folder of its files."""
    return f"built-in {source!r}" if not source.endswith((".txt", ".jsonl")) else f"files in {Path(source).parent}/"


# ---------------------------------------------------------------- generate

GENERATORS: dict[str, tuple[str, str, list[str]]] = {
    "geneval": ("geneval", "rewardflow_geneval.prompts", []),
    "shapes": ("shapes", "rewardflow_geneval.prompts", ["--world", "shapes"]),
    "ocr": ("ocr", "rewardflow_ocr.prompts", []),
}
"""NAME -> (folder, module whose main(argv) writes the set, its fixed arguments)."""
DEFAULT_COUNTS = {"shapes": (105, 21)}
"""(train, test) counts where the generator's own defaults do not fit: the shapes world has 126 prompts in all."""


def generate(name: str, out: Path, args: argparse.Namespace) -> int:
    """Run the set's seeded generator into `out` (default DATA_DIR/<set>)."""
    import importlib

    if name not in GENERATORS:
        raise DataError(f"rewardflow data generate: {did_you_mean(name, GENERATORS, 'prompt set')}")
    _, module_name, fixed = GENERATORS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataError(f"generate {name} needs {module_name.split('.')[0]} ({exc})") from None
    n, n_test = args.n, args.n_test
    if name in DEFAULT_COUNTS and n is None:
        n, n_test = DEFAULT_COUNTS[name][0], DEFAULT_COUNTS[name][1] if n_test is None else n_test
    argv = [*fixed, "--out", str(out), "--seed", str(args.seed)]
    argv += ["--n", str(n)] if n is not None else []
    argv += ["--n-test", str(n_test)] if n_test is not None else []
    code = int(module.main(argv) or 0)
    folder = GENERATORS[name][0]
    if code == 0 and Path(out) != Path("dataset") / folder:
        print(f"the presets read dataset/{folder}/: point prompts.train and prompts.eval at {out}/ instead")
    return code
