"""What the named prompt sets that live as files (BOLD, ToxiGen, RTP-LX) share: choosing
subsets by name, finding the files in a local folder, and downloading them once into the cache
with an offline error that says how to pass the files instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DetoxkitError, InputError


def pick(value: Any, known: tuple[str, ...], what: str, noun: str = "") -> list[str]:
    """The names asked for (`a,b`, `a+b`, `(a,b)`; none or `all`: every known one), matched
    without regard to case and returned as `known` spells them."""
    if value in (None, "", "all"):
        return list(known)
    wanted = [x.strip() for x in str(value).strip("()").replace("+", ",").split(",") if x.strip()]
    lookup = {k.lower(): k for k in known}
    unknown = [w for w in wanted if w.lower() not in lookup]
    if unknown:
        raise DetoxkitError(f"{what} has no {noun + ' ' if noun else ''}{', '.join(unknown)} "
                            f"(it has: {', '.join(known)})")
    return [lookup[w.lower()] for w in wanted]


def local_files(folder: str, names: list[str], pattern: str) -> list[Path]:
    """The files `names` that exist in `folder`; none at all is an error naming the pattern."""
    root = Path(folder).expanduser()
    files = [root / n for n in names if (root / n).is_file()]
    if not files:
        raise InputError(f"no {pattern} files for the subsets asked", path=str(root))
    return files


def offline_error(what: str, reason: str, how: str) -> DetoxkitError:
    return DetoxkitError(f"could not download {what}: {reason}. Without network access, download "
                         f"the files elsewhere and pass them here: {how}")


def fetch_files(cache_name: str, items: list[tuple[str, str]], repo: str, how: str) -> list[Path]:
    """Each (url, file name) downloaded into the cache once; offline errors say `how`."""
    from ..paths import cache_dir

    folder = cache_dir("prompts", cache_name)
    out = []
    for url, filename in items:
        target = folder / filename
        if not target.exists():
            download(url, target, repo, how)
        out.append(target)
    return out


def download(url: str, target: Path, repo: str, how: str) -> None:
    import socket
    from urllib.parse import urlparse

    import httpx

    from ..store import write_text_atomic

    host = urlparse(url)
    try:  # a quick connect test: an offline machine gets the error in seconds
        socket.create_connection((host.hostname or "", host.port or 443), timeout=5).close()
        response = httpx.get(url, timeout=60, follow_redirects=True)
        response.raise_for_status()
    except (OSError, httpx.HTTPError) as exc:
        raise offline_error(repo, f"{type(exc).__name__}: {str(exc)[:200]}", how) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, response.text)
