"""Check a dataset on disk against its published statistics: ``python -m vireid_layers.data.verify``.

:func:`verify_dataset` reads a dataset with its registered reader, counts identities and images per split,
modality and camera, compares them with :data:`PUBLISHED_STATISTICS`, checks that every listed file exists
and, optionally, that every image decodes. The command line prints the table and exits with

* ``0`` when every published count matches and no file is missing or unreadable,
* ``1`` when a count differs or a file is missing or unreadable,
* ``2`` when the layout itself cannot be read (missing root, folder or index file, malformed index line);
  the message names the path and shows the expected layout.

Example::

    python -m vireid_layers.data.verify --dataset sysu --root /data/SYSU-MM01
    python -m vireid_layers.data.verify --dataset regdb --root /data/RegDB --trial 3 --check-images

The LLCM paper's test modality counts (8,680 visible + 7,166 near-infrared) do not add up to its test total
(13,909), so those rows are reported as ``published (inconsistent)`` and never count as a mismatch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..modality import Modality
from .datasets import DATASETS, build_dataset
from .datasets.folder import as_path, load_image
from .datasets.llcm import LLCM_NIR_CAMERAS
from .datasets.sysu import SYSU_PERMUTATION_FILE
from .records import ImageRecord, VIReIDDataset

__all__ = [
    "CountRow",
    "PUBLISHED_STATISTICS",
    "PublishedCount",
    "STATUS_INCONSISTENT",
    "STATUS_INFO",
    "STATUS_MISMATCH",
    "STATUS_OK",
    "VerificationReport",
    "main",
    "verify_dataset",
]

#: The found count equals the published one.
STATUS_OK = "ok"
#: The found count differs from the published one (exit code 1).
STATUS_MISMATCH = "MISMATCH"
#: Nothing published to compare with; the count is informational.
STATUS_INFO = "info"
#: The published figure contradicts the paper's other figures, so it is shown but not compared.
STATUS_INCONSISTENT = "published (inconsistent)"


@dataclass(frozen=True)
class PublishedCount:
    """One published statistic of a dataset.

    Attributes:
        split: ``"train"`` or ``"test"``.
        modality: ``"all"``, ``"visible"`` or ``"infrared"``.
        count: ``"identities"`` or ``"images"``.
        value: the published number, or ``None`` for a row that only carries a note.
        consistent: ``False`` when the paper's figures contradict each other; the row is then reported with
            :data:`STATUS_INCONSISTENT` instead of being compared.
        note: shown in the table's note column.
    """

    split: str
    modality: str
    count: str
    value: int | None
    consistent: bool = True
    note: str = ""


#: Published statistics: SYSU-MM01 :cite:`wu2017sysu` (train = train + val ids), RegDB
#: :cite:`nguyen2017regdb` (the same for each of the ten trials) and LLCM :cite:`zhang2023deen`.
PUBLISHED_STATISTICS: dict[str, tuple[PublishedCount, ...]] = {
    "sysu": (
        PublishedCount("train", "all", "identities", 395, note="train + val ids"),
        PublishedCount("train", "visible", "images", 22_258),
        PublishedCount("train", "infrared", "images", 11_909),
        PublishedCount("test", "all", "identities", 96),
        PublishedCount("test", "visible", "images", None, note="gallery candidates: cams 1, 2, 4, 5"),
        PublishedCount("test", "infrared", "images", 3_803, note="queries: cams 3, 6"),
    ),
    "regdb": (
        PublishedCount("train", "all", "identities", 206),
        PublishedCount("train", "all", "images", 4_120),
        PublishedCount("train", "visible", "identities", 206),
        PublishedCount("train", "visible", "images", 2_060),
        PublishedCount("train", "infrared", "identities", 206, note="thermal"),
        PublishedCount("train", "infrared", "images", 2_060, note="thermal"),
        PublishedCount("test", "all", "identities", 206),
        PublishedCount("test", "all", "images", 4_120),
        PublishedCount("test", "visible", "identities", 206),
        PublishedCount("test", "visible", "images", 2_060),
        PublishedCount("test", "infrared", "identities", 206, note="thermal"),
        PublishedCount("test", "infrared", "images", 2_060, note="thermal"),
    ),
    "llcm": (
        PublishedCount("train", "all", "identities", 713),
        PublishedCount("train", "all", "images", 30_921),
        PublishedCount("train", "visible", "images", 16_946),
        PublishedCount("train", "infrared", "images", 13_975, note="near-infrared"),
        PublishedCount("test", "all", "identities", 351),
        PublishedCount("test", "all", "images", 13_909, consistent=False, note="8,680 + 7,166 != 13,909"),
        PublishedCount("test", "visible", "images", 8_680, consistent=False),
        PublishedCount("test", "infrared", "images", 7_166, consistent=False, note="near-infrared"),
    ),
}


@dataclass(frozen=True)
class CountRow:
    """One line of the verification table.

    Attributes:
        split: ``"train"``, ``"test"`` or ``"files"`` (the existence and decoding checks).
        modality: ``"all"``, ``"visible"`` or ``"infrared"``.
        camera: ``"all"`` or ``"camN"``.
        count: what is counted (``"identities"``, ``"images"``, ``"missing"``, ``"unreadable"``).
        expected: the published value, or ``None``.
        found: the value counted on disk.
        status: :data:`STATUS_OK`, :data:`STATUS_MISMATCH`, :data:`STATUS_INFO` or :data:`STATUS_INCONSISTENT`.
        note: free text.
    """

    split: str
    modality: str
    camera: str
    count: str
    expected: int | None
    found: int
    status: str
    note: str = ""


_COLUMNS = ("split", "modality", "camera", "count", "expected", "found", "status", "note")
_NUMERIC = {"expected", "found"}


@dataclass(frozen=True)
class VerificationReport:
    """What :func:`verify_dataset` found.

    Attributes:
        dataset: the dataset name (``"sysu"``, ``"regdb"``, ``"llcm"``, ...).
        root: the dataset root.
        trial: the RegDB trial, ``None`` for the other datasets.
        rows: the table rows.
        missing_files: listed image paths that do not exist.
        unreadable_files: ``(path, reason)`` of the images that failed to decode (only with ``check_images``).
        images_checked: whether every image was decoded.
        notes: remarks about the layout (optional files, camera conventions).
    """

    dataset: str
    root: Path
    trial: int | None
    rows: tuple[CountRow, ...]
    missing_files: tuple[Path, ...] = ()
    unreadable_files: tuple[tuple[Path, str], ...] = ()
    images_checked: bool = False
    notes: tuple[str, ...] = ()

    @property
    def mismatches(self) -> tuple[CountRow, ...]:
        """The rows whose status is :data:`STATUS_MISMATCH`."""
        return tuple(row for row in self.rows if row.status == STATUS_MISMATCH)

    @property
    def ok(self) -> bool:
        """``True`` when no row is a mismatch (published counts match, no missing or unreadable file)."""
        return not self.mismatches

    def format_table(self) -> str:
        r"""The rows as an aligned text table, one header line and a rule, numbers right-aligned.

        Returns:
            The table, lines joined by ``"\n"`` (no trailing newline).

        Examples:
            >>> row = CountRow("train", "all", "all", "identities", 395, 3, STATUS_MISMATCH, "train + val ids")
            >>> print(VerificationReport("sysu", Path("/data"), None, (row,)).format_table())
            split | modality | camera | count      | expected | found | status   | note
            ------+----------+--------+------------+----------+-------+----------+----------------
            train | all      | all    | identities |      395 |     3 | MISMATCH | train + val ids
        """
        cells = [list(_COLUMNS)]
        for row in self.rows:
            expected = "-" if row.expected is None else f"{row.expected:,}"
            cells.append(
                [row.split, row.modality, row.camera, row.count, expected, f"{row.found:,}", row.status, row.note]
            )
        widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]

        def render(line: list[str]) -> str:
            parts = [
                cell.rjust(width) if name in _NUMERIC and line is not cells[0] else cell.ljust(width)
                for name, cell, width in zip(_COLUMNS, line, widths, strict=True)
            ]
            return " | ".join(parts).rstrip()

        rule = "-+-".join("-" * width for width in widths)
        return "\n".join([render(cells[0]), rule, *(render(line) for line in cells[1:])])


def _status(expected: PublishedCount | None, found: int) -> tuple[int | None, str]:
    if expected is None or expected.value is None:
        return None, STATUS_INFO
    if not expected.consistent:
        return expected.value, STATUS_INCONSISTENT
    return expected.value, STATUS_OK if expected.value == found else STATUS_MISMATCH


def _count_rows(split: str, records: Sequence[ImageRecord], published: dict[tuple, PublishedCount]) -> list[CountRow]:
    rows = []
    for modality in ("all", "visible", "infrared"):
        subset = [r for r in records if modality == "all" or r.modality == Modality.parse(modality)]
        for count, found in (("identities", len({r.identity for r in subset})), ("images", len(subset))):
            entry = published.get((split, modality, count))
            expected, status = _status(entry, found)
            rows.append(CountRow(split, modality, "all", count, expected, found, status, entry.note if entry else ""))
    cameras = sorted({(r.modality, r.camera) for r in records}, key=lambda mc: (mc[1], mc[0]))
    for modality, camera in cameras:
        subset = [r for r in records if r.modality == modality and r.camera == camera]
        note = f"{len({r.identity for r in subset}):,} identities"
        rows.append(
            CountRow(split, modality.name.lower(), f"cam{camera}", "images", None, len(subset), STATUS_INFO, note)
        )
    return rows


def _layout_notes(dataset: VIReIDDataset) -> list[str]:
    notes = []
    if dataset.name == "sysu":
        perm = dataset.root / SYSU_PERMUTATION_FILE
        state = "found" if perm.is_file() else "not found (only the official-permutation gallery protocol needs it)"
        notes.append(f"{perm}: {state}")
    if dataset.name == "llcm":
        cam3 = dataset.root / "test_nir" / "cam3"
        nir = ", ".join(str(c) for c in LLCM_NIR_CAMERAS)
        if cam3.exists():
            notes.append(f"{cam3} exists but is not read: the official near-infrared test cameras are {nir}")
        else:
            notes.append(f"test_nir has no cam3, as published (near-infrared test cameras {nir})")
        no_camera = sum(1 for r in dataset.train if r.camera == 0)
        if no_camera:
            notes.append(f"{no_camera:,} training paths have no camN folder; their camera is 0")
    return notes


def verify_dataset(
    name: str, root: str | os.PathLike[str], *, trial: int = 1, check_images: bool = False
) -> VerificationReport:
    """Count a dataset's identities and images and compare them with :data:`PUBLISHED_STATISTICS`.

    No example here: it needs a dataset tree on disk (the tests build tiny ones).

    Args:
        name: a registered dataset name (:data:`~vireid_layers.data.datasets.DATASETS`); datasets without
            published statistics get informational rows only.
        root: the dataset root in its published layout.
        trial: the RegDB trial (``1..10``); ignored by the other datasets.
        check_images: decode every image and report the ones that fail (slow: one full read of the dataset).

    Returns:
        The report; :attr:`VerificationReport.ok` tells whether everything matched.

    Raises:
        ValueError: ``name`` is not registered, ``trial`` is invalid, or the layout holds malformed files.
        FileNotFoundError: the layout is incomplete; the message names the path and the expected layout.
    """
    is_regdb = name == "regdb"
    dataset = build_dataset(name, as_path(root), **({"trial": trial} if is_regdb else {}))
    published = {(p.split, p.modality, p.count): p for p in PUBLISHED_STATISTICS.get(name, ())}
    rows = _count_rows("train", dataset.train, published) + _count_rows("test", dataset.test, published)

    records = dataset.train + dataset.test
    missing = tuple(r.path for r in records if not os.path.isfile(r.path))
    rows.append(CountRow("files", "all", "all", "missing", 0, len(missing), STATUS_MISMATCH if missing else STATUS_OK))
    unreadable: list[tuple[Path, str]] = []
    if check_images:
        absent = set(missing)
        for record in records:
            if record.path in absent:
                continue
            try:
                load_image(record.path)
            except OSError as err:  # ImageReadError, or a file deleted while checking
                unreadable.append((record.path, str(err)))
        status = STATUS_MISMATCH if unreadable else STATUS_OK
        rows.append(CountRow("files", "all", "all", "unreadable", 0, len(unreadable), status, "--check-images"))

    notes = _layout_notes(dataset)
    if name not in PUBLISHED_STATISTICS:
        notes.append(f"no published statistics for {name!r}: every count is informational")
    return VerificationReport(
        dataset=name,
        root=dataset.root,
        trial=trial if is_regdb else None,
        rows=tuple(rows),
        missing_files=missing,
        unreadable_files=tuple(unreadable),
        images_checked=check_images,
        notes=tuple(notes),
    )


def _print_paths(title: str, lines: Sequence[str], limit: int, file: object) -> None:
    print(f"\n{title} ({len(lines):,}):", file=file)
    for line in lines[:limit]:
        print(f"  {line}", file=file)
    if len(lines) > limit:
        print(f"  ... and {len(lines) - limit:,} more", file=file)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0 match, 1 count differs, 2 unreadable layout).

    Args:
        argv: the arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        ``0`` when everything matches, ``1`` when a count differs or a file is missing or unreadable, ``2``
        when the layout cannot be read (the error, naming the path and the expected layout, goes to stderr).
    """
    parser = argparse.ArgumentParser(
        prog="python -m vireid_layers.data.verify",
        description="Count identities and images of a dataset in its published layout and compare them with "
        "the published statistics. Exit code 0: all match; 1: a count differs or a file is missing or "
        "unreadable; 2: the layout cannot be read.",
    )
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="dataset name")
    parser.add_argument("--root", required=True, help="dataset root folder")
    parser.add_argument("--trial", type=int, default=1, help="RegDB trial, 1..10 (default: 1)")
    parser.add_argument("--check-images", action="store_true", help="decode every image (slow)")
    parser.add_argument("--max-listed", type=int, default=20, help="missing/unreadable paths to print (default 20)")
    args = parser.parse_args(argv)

    if args.trial != 1 and args.dataset != "regdb":
        print(f"note: --trial {args.trial} is ignored: only RegDB has trials", file=sys.stderr)
    if args.check_images:
        print("decoding every image; this reads the whole dataset once ...", file=sys.stderr)
    try:
        report = verify_dataset(args.dataset, args.root, trial=args.trial, check_images=args.check_images)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    trial = f", trial {report.trial}" if report.trial is not None else ""
    print(f"{report.dataset} at {report.root}{trial}\n")
    print(report.format_table())
    if report.missing_files:
        _print_paths("missing files", [str(p) for p in report.missing_files], args.max_listed, sys.stdout)
    if report.unreadable_files:
        reasons = [reason for _, reason in report.unreadable_files]
        _print_paths("unreadable images", reasons, args.max_listed, sys.stdout)
    if report.notes:
        _print_paths("notes", list(report.notes), len(report.notes), sys.stdout)
    if report.ok:
        print("\nOK: every published count matches and every listed file exists.")
        return 0
    print(f"\nMISMATCH: {len(report.mismatches)} row(s) differ from the published statistics or the checks.")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
