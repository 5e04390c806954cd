"""The data-extraction stage: put a DeepParticle folder (raw_img/, annotation/) on disk.

Sources: the figshare article (default), its Google Drive mirror, an archive the user
already has, or generated synthetic data. Whatever the source, the result is assembled in
a staging folder beside --out and renamed into place only when complete.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from microplastics.core import fileio, provenance
from microplastics.core.cli import ArgumentParser, UserError, finite_float
from microplastics.core.images import is_image_file
from microplastics.data import archive, download, origin

OFFLINE_REMEDY = ("check the network and run again (a partial download resumes), or unpack an archive you "
                  "already have with --archive PATH, or generate test data with --synthetic")


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="data-extraction.py",
        description="Get the DeepParticle dataset onto disk as a folder holding raw_img/ (photos) and "
                    "annotation/ (one .tsv a photo). By default the subset's archive is downloaded from "
                    f"figshare article {download.DEEPPARTICLE_ARTICLE}, checked against the size and md5 the "
                    "API reports, kept in --cache-dir and unpacked into --out.",
        epilog="Offline? Use --archive PATH with a .tar.gz/.tgz/.tar/.zip you already have, or --synthetic.",
        examples=["python data-extraction.py   # MICRO from figshare into ./MICRO",
                  "python data-extraction.py --archive ~/Downloads/MICRO.tar.gz --out MICRO",
                  "python data-extraction.py --synthetic --n-images 40 --out demo/MICRO   # no network"],
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--source", choices=("figshare", "gdrive"), default="figshare",
                        help="where to download from: the figshare article (default) or the Google Drive "
                             f"mirror folder {download.GDRIVE_FOLDER} the original study used")
    source.add_argument("--archive", type=Path, metavar="PATH",
                        help="unpack this local archive instead of downloading")
    source.add_argument("--synthetic", action="store_true",
                        help="write generated photos and annotations instead (for demos and tests)")
    parser.add_argument("--subset", default="MICRO",
                        metavar="NAME",
                        help="which archive of the article to fetch, by name without suffix: MICRO (default), "
                             "MESO, MACRO")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder to create, holding raw_img/ and annotation/ (default: ./<SUBSET>, i.e. ./MICRO)")
    parser.add_argument("--force", action="store_true", help="replace --out if it already exists")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/downloads"), metavar="DIR",
                        help="where downloads are kept so that a rerun does not fetch them again "
                             "(default: .cache/downloads)")
    parser.add_argument("--api-url", default=os.environ.get("FIGSHARE_API_URL", download.FIGSHARE_API), metavar="URL",
                        help="figshare API base URL (default: $FIGSHARE_API_URL if set, else "
                             f"{download.FIGSHARE_API})")
    parser.add_argument("--timeout", type=finite_float, default=60.0, metavar="SECONDS",
                        help="seconds to wait for the server before giving up (default: 60)")
    parser.add_argument("--max-unpacked-gb", type=finite_float, default=archive.MAX_UNPACKED_BYTES / 10**9,
                        metavar="GB",
                        help="refuse an archive that would unpack to more than this many GB (default: "
                             f"{archive.MAX_UNPACKED_BYTES / 10**9:g}); archives that expand more than "
                             f"{archive.MAX_RATIO} times their size are refused whatever this says")
    parser.add_argument("--n-images", type=int, default=60, metavar="N",
                        help="with --synthetic: how many photos to generate (default: 60)")
    parser.add_argument("--seed", type=int, default=42, metavar="N", help="with --synthetic: random seed (default: 42)")
    parser.add_argument("--randomise", action="store_true",
                        help="with --synthetic: domain-randomised photos (random filter colours and textures, "
                             "debris, sludge-like clutter, particle colours and scale, light, focus, field of view; "
                             "thin faint curly fibres); without it the plain photos, unchanged")
    return parser


def find_dataset_root(folder: str | os.PathLike) -> Path | None:
    """The shallowest folder under ``folder`` (itself included) that holds raw_img/ and annotation/."""
    found: list[tuple[int, str]] = []
    for dirpath, dirnames, _ in os.walk(folder):
        if "raw_img" in dirnames and "annotation" in dirnames:
            found.append((dirpath.count(os.sep), dirpath))
            dirnames[:] = []  # a dataset folder's insides hold no second dataset worth choosing
        else:
            dirnames[:] = [d for d in dirnames if d != "__MACOSX"]
    return Path(min(found)[1]) if found else None


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    out: Path = args.out or Path(args.subset)
    fileio.check_output_dir(out, "--out")
    fileio.check_output_dir(args.cache_dir, "--cache-dir")
    if not (math.isfinite(args.max_unpacked_gb) and args.max_unpacked_gb > 0):
        raise UserError(f"--max-unpacked-gb must be a number above 0, got {args.max_unpacked_gb}")
    if args.archive is not None:
        archive.check_archive_path(args.archive)
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists; pass --force to replace it, or choose another --out")
    _check_out(out, {"the current folder": Path.cwd(), "--cache-dir": args.cache_dir, "--archive": args.archive})
    if args.randomise and not args.synthetic:
        raise UserError("--randomise applies to --synthetic photos only; add --synthetic")
    if args.synthetic and args.n_images < 1:
        raise UserError(f"--n-images must be at least 1, got {args.n_images}")
    staging = fileio.staging_dir(out)
    try:
        source = _fill(args, staging)
        root = find_dataset_root(staging)
        if root is None:
            raise UserError(f"{source} holds no folder with both raw_img/ and annotation/; "
                            f"it has: {_listing(staging)}")
        _record_origin(root, args, source)
        fileio.write_json(root / provenance.CONFIG_NAME,
                          {"source": source, provenance.RUN_KEY: provenance.run_record("data-extraction.py", argv)})
        fileio.replace_dir(root, out)
    except download.NetworkError as err:
        raise UserError(f"{err}; {OFFLINE_REMEDY}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(_summary(out, source))
    return 0


def _summary(out: Path, source: str) -> str:
    files = [p for p in (out / "raw_img").iterdir() if p.is_file() and not p.name.startswith(".")]
    photos = sum(1 for p in files if is_image_file(p))
    others = f" (and {len(files) - photos} other files)" if len(files) > photos else ""
    tables = sum(1 for _ in (out / "annotation").glob("*.tsv"))
    return f"{out}: {photos} photos in raw_img/{others}, {tables} annotation files in annotation/ (from {source})"


def _check_out(out: Path, keep: dict[str, Path | None]) -> None:
    """Refuse an --out whose replacement would delete the current folder, the cache or the archive."""
    target = out.resolve()
    for what, path in keep.items():
        if path is not None and (path.resolve() == target or target in path.resolve().parents):
            raise UserError(f"--out {out} holds {what} ({path}), which replacing it would delete; choose another --out")


def _fill(args: argparse.Namespace, staging: Path) -> str:
    """Put the chosen source's files into ``staging``; return a short description of the source."""
    if args.synthetic:
        return _fill_synthetic(staging / "synthetic", args.n_images, args.seed, args.randomise)
    max_bytes = int(args.max_unpacked_gb * 10**9)
    if args.archive is not None:
        archive.unpack(args.archive, staging, max_bytes)
        return str(args.archive)
    if args.source == "gdrive":
        return _fill_gdrive(staging, args.subset, args.cache_dir, max_bytes)
    return _fill_figshare(staging, args.subset, args.cache_dir, args.api_url, args.timeout, max_bytes)


def _record_origin(root: Path, args: argparse.Namespace, source: str) -> None:
    """Write origin.json, so later stages know what the photos are.

    The generator writes its own record; an archive that already holds one (a packed-up
    synthetic folder, say) keeps it, with where it was unpacked from added.
    """
    if args.synthetic:
        return
    kind = "archive" if args.archive is not None else "download"
    found = origin.read_origin(root)
    record = {**found, "unpacked_from": source} if found else {"kind": kind, "source": source,
                                                               "subset": args.subset}
    origin.write_origin(root, record)


def _fill_figshare(staging: Path, subset: str, cache_dir: Path, api_url: str, timeout: float,
                   max_bytes: int) -> str:
    entry = download.choose_file(download.figshare_files(api_url=api_url, timeout=timeout), subset)
    if not entry.get("download_url"):
        raise UserError(f"the figshare API lists {entry.get('name')} without a download_url; "
                        "download it by hand and use --archive PATH")
    size = entry.get("size")
    path = download.download(entry["download_url"], cache_dir / str(entry["name"]),
                             size=int(size) if size is not None else None,
                             md5=download.expected_md5(entry), timeout=timeout)
    archive.unpack(path, staging, max_bytes)
    return str(path)


def _fill_gdrive(staging: Path, subset: str, cache_dir: Path, max_bytes: int) -> str:
    # The mirror may hold the photo folders themselves or the subset's archive; accept both.
    folder = cache_dir / "gdrive"
    paths = download.gdrive_folder(download.GDRIVE_FOLDER, folder)
    if find_dataset_root(folder) is not None:
        shutil.copytree(folder, staging, dirs_exist_ok=True)
        return f"Google Drive folder {download.GDRIVE_FOLDER}"
    archives = [p for p in paths if archive.archive_stem(p.name).lower() == subset.lower()]
    if not archives:
        raise UserError(f"the Google Drive folder has neither raw_img/ and annotation/ nor a {subset} archive; "
                        f"it has: {', '.join(sorted(p.name for p in paths))}")
    archive.unpack(archives[0], staging, max_bytes)
    return str(archives[0])


def _fill_synthetic(target: Path, n_images: int, seed: int, randomise: bool = False) -> str:
    try:
        from microplastics.data.synthetic import write_synthetic_micro
    except ImportError as err:
        raise UserError(f"--synthetic is not available in this installation ({err})") from None
    write_synthetic_micro(target, n_images, seed, randomise=randomise)
    return f"synthetic data{' (domain-randomised)' if randomise else ''}, {n_images} photos, seed {seed}"


def _listing(folder: Path, limit: int = 10) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:limit]) or "nothing"
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
