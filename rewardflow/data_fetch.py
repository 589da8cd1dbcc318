"""`rewardflow data fetch NAME`: size, source and license first, then the download into DATA_DIR/<set>/.

GitHub files come over HTTPS with httpx (proxies from the environment); Hugging Face dataset files through
huggingface_hub (its cache, token and HF_HUB_OFFLINE). Without a network the command says, in one line,
what to download and where to put it. Downloaded files are parsed as text, CSV or JSON only.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import httpx

from rewardflow.data_cli import DataError, Source

TIMEOUT_S = 10.0


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} KB"


def offline_line(source: Source, folder: Path, why: str, paths: list[str]) -> DataError:
    """One line: why nothing could be downloaded, what to download and where to put it."""
    urls = " and ".join(f"the {p} file of {source.page()}" if "*" in p else source.url(p) for p in paths)
    if source.convert is None:
        targets = ", ".join(local for _, local in source.files)
        return DataError(f"cannot fetch {source.name}: {why}; download {urls} into {folder}/ ({targets})")
    return DataError(
        f"cannot fetch {source.name}: {why}; download {urls} and write the prompts, one a line, to {folder}/test.txt"
    )


def _github_plan(source: Source, folder: Path) -> list[tuple[str, int]]:
    """(path, bytes) of each file, from HEAD requests; DataError in one line when GitHub does not answer."""
    sizes = []
    with httpx.Client(timeout=TIMEOUT_S, follow_redirects=True, headers={"Accept-Encoding": "identity"}) as http:
        for path, _ in source.files:
            try:
                reply = http.head(source.url(path))
            except httpx.HTTPError as exc:
                why = f"{source.url(path).split('/')[2]} is unreachable ({type(exc).__name__}: {exc})"
                raise offline_line(source, folder, " ".join(why.split()), [p for p, _ in source.files]) from None
            if reply.status_code != 200:
                raise DataError(f"{source.url(path)}: HTTP {reply.status_code}; see {source.page()}")
            sizes.append((path, int(reply.headers.get("content-length", 0))))
    return sizes


def _hub_plan(source: Source, folder: Path) -> tuple[list[tuple[str, int]], str]:
    """(path, bytes) of the dataset's matching files and the license its card states; DataError offline."""
    from huggingface_hub import dataset_info
    from huggingface_hub.errors import HfHubHTTPError
    from rewardflow_kit.hub import hub_offline, hub_unreachable

    patterns = [p for p, _ in source.files]
    if hub_offline():
        raise offline_line(source, folder, "HF_HUB_OFFLINE=1", patterns)
    if (problem := hub_unreachable()) is not None:
        raise offline_line(source, folder, f"the hub is unreachable ({problem})", patterns)
    try:
        info = dataset_info(source.repo, revision=source.revision, files_metadata=True)
    except HfHubHTTPError as exc:
        raise DataError(f"{source.page()}: {' '.join(str(exc).split())}") from None
    files = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
    chosen = [(f, size) for f, size in files.items() if any(fnmatch.fnmatch(f, p) for p in patterns)]
    wildcard = any("*" in p for p in patterns)
    if not chosen or (not wildcard and len(chosen) < len(patterns)):
        raise DataError(f"{source.page()} has no {', '.join(patterns)} (its files: {', '.join(sorted(files))[:300]})")
    card = getattr(info, "card_data", None)
    license_ = card.get("license") if card is not None and hasattr(card, "get") else None
    return (chosen[:1] if wildcard else chosen), f"{license_ or 'not stated'} (its dataset card)"


def fetch(source: Source, data_dir: Path, force: bool) -> int:
    """Print size, source and license, then download `source` into data_dir/<folder>/."""
    folder = data_dir / source.folder
    targets = [folder / local for _, local in source.files if local] or [folder / "test.txt"]
    if not force and all(t.is_file() for t in targets):
        print(f"{source.name}: {', '.join(map(str, targets))} already there (--force downloads again)")
        return 0
    if source.host == "github":
        plan, license_ = _github_plan(source, folder), source.license
    else:
        plan, license_ = _hub_plan(source, folder)
    total = sum(size for _, size in plan)
    print(f"{source.name}: {len(plan)} files, {_size(total)}, from {source.page()}; license: {license_}")
    contents = _download(source, plan)
    folder.mkdir(parents=True, exist_ok=True)
    written = source.convert(contents) if source.convert else _by_local_name(source, contents)
    for name, text in written.items():
        (folder / name).write_text(text, encoding="utf-8")
        print(f"{folder / name}: {sum(1 for line in text.splitlines() if line.strip())} prompts")
    return 0


def _download(source: Source, plan: list[tuple[str, int]]) -> dict[str, bytes]:
    if source.host == "github":
        with httpx.Client(timeout=60.0, follow_redirects=True) as http:
            out = {}
            for path, _ in plan:
                reply = http.get(source.url(path))
                reply.raise_for_status()
                out[path] = reply.content
            return out
    from huggingface_hub import hf_hub_download

    return {
        path: Path(hf_hub_download(source.repo, path, repo_type="dataset", revision=source.revision)).read_bytes()
        for path, _ in plan
    }


def _by_local_name(source: Source, contents: dict[str, bytes]) -> dict[str, str]:
    names = dict(source.files)
    return {names[path]: data.decode("utf-8") for path, data in contents.items()}
