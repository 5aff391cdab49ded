"""Check a dataset on disk against its published statistics: ``vireid-verify``, ``python -m vireid_layers.data.verify``.

:func:`verify_dataset` reads a dataset with its registered reader, counts identities and images per split,
modality and camera, compares them with :data:`PUBLISHED_STATISTICS` (for the synthetic dataset, with the
counts its manifest ``synthetic.json`` records), checks that every listed file exists (a ``stat`` per file;
for the synthetic dataset, every file the manifest implies) and, optionally, that every image decodes. The
command line prints the table and exits with

* ``0`` when every compared count matches and no file is missing or unreadable,
* ``1`` when a count differs or a file is missing or unreadable,
* ``2`` when the layout itself cannot be read (missing root, folder or index file, malformed index line, a
  root whose dataset cannot be told without ``--dataset``); the message names the path and shows the
  expected layout.

Example::

    vireid-verify --dataset sysu --root /data/SYSU-MM01
    vireid-verify --dataset regdb --root /data/RegDB --trial 3 --check-images
    vireid-verify --check-images /data/synthetic       # the dataset is detected from the layout

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
from .datasets import DATASETS, build_dataset, detect_dataset
from .datasets.folder import ImageReadError, as_path, load_image
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
        camera: ``"all"``, or ``"camN"`` for the image count of one camera.
    """

    split: str
    modality: str
    count: str
    value: int | None
    consistent: bool = True
    note: str = ""
    camera: str = "all"


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
        reference: what the counts were compared with: ``"the published statistics"``, the manifest
            (``"synthetic.json"``), or ``""`` when nothing was (every count informational).
    """

    dataset: str
    root: Path
    trial: int | None
    rows: tuple[CountRow, ...]
    missing_files: tuple[Path, ...] = ()
    unreadable_files: tuple[tuple[Path, str], ...] = ()
    images_checked: bool = False
    notes: tuple[str, ...] = ()
    reference: str = ""

    @property
    def mismatches(self) -> tuple[CountRow, ...]:
        """The rows whose status is :data:`STATUS_MISMATCH`."""
        return tuple(row for row in self.rows if row.status == STATUS_MISMATCH)

    @property
    def ok(self) -> bool:
        """``True`` when no row is a mismatch (compared counts match, no missing or unreadable file)."""
        return not self.mismatches

    def summary(self) -> str:
        """The verdict, one line: what was compared and checked, or how many rows differ.

        Returns:
            ``OK: ...`` when :attr:`ok`, else ``MISMATCH: ...``.

        Examples:
            >>> ok = CountRow("files", "all", "all", "missing", 0, 0, STATUS_OK)
            >>> report = VerificationReport("synthetic", Path("/d"), None, (ok,), reference="synthetic.json")
            >>> print(report.summary())  # doctest: +NORMALIZE_WHITESPACE
            OK: every count matches synthetic.json and every listed file exists
            (images not decoded: add --check-images to decode them).
            >>> bad = CountRow("files", "all", "all", "missing", 0, 1, STATUS_MISMATCH)
            >>> print(VerificationReport("sysu", Path("/d"), None, (bad,)).summary())
            MISMATCH: 1 row differs from the compared counts or the file checks.
        """
        if not self.ok:
            rows = _plural(len(self.mismatches), "row differs", "rows differ")
            return f"MISMATCH: {rows} from the compared counts or the file checks."
        counts = f"every count matches {self.reference} and " if self.reference else ""
        if self.images_checked:
            return f"OK: {counts}every listed file exists and decodes."
        return f"OK: {counts}every listed file exists (images not decoded: add --check-images to decode them)."

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


def _plural(n: int, singular: str, many: str | None = None) -> str:
    """``n`` with thousands separators and the noun that agrees with it.

    Args:
        n: the count.
        singular: the noun (or phrase) for one.
        many: the form for other counts; default ``singular + "s"``.

    Returns:
        ``"1 identity"``, ``"2 identities"``, ``"1,204 images"``, ...

    Examples:
        >>> _plural(1, "identity", "identities"), _plural(0, "identity", "identities"), _plural(1204, "image")
        ('1 identity', '0 identities', '1,204 images')
    """
    return f"{n:,} {singular if n == 1 else (many if many is not None else singular + 's')}"


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
            entry = published.get((split, modality, "all", count))
            expected, status = _status(entry, found)
            rows.append(CountRow(split, modality, "all", count, expected, found, status, entry.note if entry else ""))
    cameras = {(r.modality.name.lower(), f"cam{r.camera}") for r in records}
    cameras |= {(m, c) for s, m, c, n in published if s == split and c != "all" and n == "images"}
    for modality, camera in sorted(cameras, key=lambda mc: (int(mc[1][3:]), mc[0])):
        subset = [r for r in records if r.modality.name.lower() == modality and f"cam{r.camera}" == camera]
        note = _plural(len({r.identity for r in subset}), "identity", "identities")
        entry = published.get((split, modality, camera, "images"))
        expected, status = _status(entry, len(subset))
        rows.append(CountRow(split, modality, camera, "images", expected, len(subset), status, note))
    return rows


def _synthetic_counts(root: Path) -> tuple[list[PublishedCount], list[Path], str]:
    """The counts a synthetic dataset's manifest records, the files it implies, and a note."""
    from .datasets.synthetic.manifest import SYNTHETIC_MANIFEST, expected_images, read_manifest
    from .datasets.sysu import SYSU_IR_CAMERAS, SYSU_RGB_CAMERAS

    manifest = read_manifest(root)
    if manifest is None:  # the reader raised already; kept for a reader registered under the name
        return [], [], f"{root / SYNTHETIC_MANIFEST}: not found"
    params, splits = manifest.get("parameters") or {}, manifest.get("splits") or {}
    try:
        per_camera = int(params["images_per_camera"])
        ids = {"train": len(splits["train"]) + len(splits["val"]), "test": len(splits["test"])}
        num_images = int(manifest["num_images"])
        files = [path for path, *_ in expected_images(root, params)]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{root / SYNTHETIC_MANIFEST} lacks a field of the synthetic-dataset manifest: {err!r}"
        ) from err
    note = SYNTHETIC_MANIFEST
    counts = [PublishedCount("all", "all", "images", num_images, note=f"{note} num_images")]
    for split, n in ids.items():
        counts.append(PublishedCount(split, "all", "identities", n, note=f"{note} splits"))
        counts.append(PublishedCount(split, "all", "images", n * per_camera * 6, note=note))
        for modality, cams in (("visible", SYSU_RGB_CAMERAS), ("infrared", SYSU_IR_CAMERAS)):
            counts.append(PublishedCount(split, modality, "identities", n, note=note))
            counts.append(PublishedCount(split, modality, "images", n * per_camera * len(cams), note=note))
            counts.extend(
                PublishedCount(split, modality, "images", n * per_camera, camera=f"cam{c}", note=note) for c in cams
            )
    seed, version = params.get("seed"), manifest.get("version")
    return counts, files, f"counts compared with {root / SYNTHETIC_MANIFEST} (generator version {version}, seed {seed})"


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
            paths = _plural(no_camera, "training path has", "training paths have")
            notes.append(f"{paths} no camN folder; {'its' if no_camera == 1 else 'their'} camera is 0")
    return notes


def verify_dataset(
    name: str, root: str | os.PathLike[str], *, trial: int = 1, check_images: bool = False
) -> VerificationReport:
    """Count a dataset's identities and images and compare them with :data:`PUBLISHED_STATISTICS`.

    For the synthetic dataset the counts are compared with those its manifest (``synthetic.json``) records:
    identities per split, images per split, modality and camera, and ``num_images`` (a row of split
    ``"all"``); every file the manifest implies must exist. For every dataset each listed file is looked up
    (one ``stat``); ``check_images`` also decodes it.

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
        ValueError: ``name`` is not registered, ``trial`` is invalid, or the layout holds malformed files (an
            index line, a synthetic manifest that lacks a field).
        FileNotFoundError: the layout is incomplete; the message names the path and the expected layout.
    """
    is_regdb = name == "regdb"
    dataset = build_dataset(name, as_path(root), **({"trial": trial} if is_regdb else {}))
    statistics, implied, notes = list(PUBLISHED_STATISTICS.get(name, ())), [], []
    reference = "the published statistics" if statistics else ""
    if name == "synthetic":
        statistics, implied, note = _synthetic_counts(dataset.root)
        notes.append(note)
        reference = "synthetic.json" if statistics else ""
    published = {(p.split, p.modality, p.camera, p.count): p for p in statistics}
    rows = _count_rows("train", dataset.train, published) + _count_rows("test", dataset.test, published)
    records = dataset.train + dataset.test
    total = published.get(("all", "all", "all", "images"))
    if total is not None:
        expected, status = _status(total, len(records))
        rows.append(CountRow("all", "all", "all", "images", expected, len(records), status, total.note))

    listed = list(dict.fromkeys([*(r.path for r in records), *implied]))  # every file once, in order
    missing = tuple(path for path in listed if not os.path.isfile(path))
    rows.append(CountRow("files", "all", "all", "missing", 0, len(missing), STATUS_MISMATCH if missing else STATUS_OK))
    unreadable: list[tuple[Path, str]] = []
    if check_images:
        absent = set(missing)
        for record in records:
            if record.path in absent:
                continue
            try:
                load_image(record.path)
            except ImageReadError as err:  # corrupt, not permitted, or deleted while checking
                unreadable.append((record.path, str(err)))
        status = STATUS_MISMATCH if unreadable else STATUS_OK
        rows.append(CountRow("files", "all", "all", "unreadable", 0, len(unreadable), status, "--check-images"))

    notes += _layout_notes(dataset)
    if not reference:
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
        reference=reference,
    )


def _print_paths(title: str, lines: Sequence[str], limit: int, file: object) -> None:
    print(f"\n{title} ({len(lines):,}):", file=file)
    for line in lines[:limit]:
        print(f"  {line}", file=file)
    if len(lines) > limit:
        print(f"  ... and {len(lines) - limit:,} more", file=file)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point ``vireid-verify``; returns the exit code (0 match, 1 count differs, 2 bad layout).

    The root is given as ``--root ROOT`` or as the one positional argument; without ``--dataset`` the dataset
    is told from the layout (:func:`~vireid_layers.data.datasets.detect_dataset`), so
    ``vireid-verify --check-images ROOT`` (the command :class:`~vireid_layers.data.ImageDataset` suggests when
    it meets a bad image) checks every file of a built-in dataset.

    Args:
        argv: the arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        ``0`` when everything matches, ``1`` when a count differs or a file is missing or unreadable, ``2``
        when the layout cannot be read (the error, naming the path and the expected layout, goes to stderr).
    """
    parser = argparse.ArgumentParser(
        prog="vireid-verify",
        description="Count identities and images of a dataset in its published layout and compare them with "
        "the published statistics (for the synthetic dataset: with the counts synthetic.json records); check "
        "that every listed file exists. Exit code 0: all match; 1: a count differs or a file is missing or "
        "unreadable; 2: the layout cannot be read.",
    )
    parser.add_argument(
        "--dataset", choices=sorted(DATASETS), help="dataset name (default: detected from the layout of the root)"
    )
    parser.add_argument("--root", help="dataset root folder (or give it as the positional argument)")
    parser.add_argument("root_arg", nargs="?", metavar="ROOT", help="dataset root folder, instead of --root")
    parser.add_argument("--trial", type=int, default=1, help="RegDB trial, 1..10 (default: 1)")
    parser.add_argument("--check-images", action="store_true", help="decode every image (slow)")
    parser.add_argument("--max-listed", type=int, default=20, help="missing/unreadable paths to print (default 20)")
    args = parser.parse_args(argv)
    if (args.root is None) == (args.root_arg is None):
        parser.error("give the dataset root once: as --root ROOT or as the positional ROOT")
    root = args.root if args.root is not None else args.root_arg
    if args.dataset is None:
        args.dataset = detect_dataset(root)
        if args.dataset is None:
            print(
                f"error: cannot tell which dataset {as_path(root)} holds (no known layout there); "
                f"pass --dataset, one of {sorted(DATASETS)}",
                file=sys.stderr,
            )
            return 2

    if args.trial != 1 and args.dataset != "regdb":
        print(f"note: --trial {args.trial} is ignored: only RegDB has trials", file=sys.stderr)
    if args.check_images:
        print("decoding every image; this reads the whole dataset once ...", file=sys.stderr)
    try:
        report = verify_dataset(args.dataset, root, trial=args.trial, check_images=args.check_images)
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
    print(f"\n{report.summary()}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
