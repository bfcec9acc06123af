"""A data folder in the layout the field already uses: Hugging Face ``datasets`` "imagefolder" /
"audiofolder" (read by ``datasets`` itself; for audio, its metadata table: the clips are read by edgemm).

    mydata/
      metadata.csv      file_name,text,label,split      (or metadata.jsonl; *_file_name columns too)
      images/0001.png ...

Splits come from a ``split`` column, else from sub-folders (``train/``, ``validation/``, ``test/``;
``validation`` is called ``val`` here). Labels are the ``label`` column (``TaskSpec.label_column``), or
the class sub-folder when there is no metadata. Each model input is read from its column as the
contract's ``preprocess`` says (``data/readers.py``); files are never decoded by ``datasets``.
"""
from __future__ import annotations

import csv
from collections import defaultdict, deque
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgemm.data.datasets import DATASETS, DataSource, Split, data_fingerprint, subset_rows
from edgemm.data.readers import UNLABELLED, build_inputs, is_blank_label, needed_columns, read_labels
from edgemm.errors import InputError
from edgemm.lazy import lazy_import

datasets = lazy_import("datasets", "pip install 'edgemm[data]'")

SPLIT_COLUMN = "split"
RENAMED = {"validation": "val", "valid": "val", "dev": "val"}
IMAGES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
AUDIO = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a"}
METADATA = ("metadata.csv", "metadata.jsonl")
LAYOUT = "files plus metadata.csv with file_name, label, split (and text) columns"


SPLIT_FOLDERS = {"train", "training", "val", "valid", "validation", "dev", "test", "testing", "eval"}
ALL_ROWS = "rows"  # one split holding every row, divided by the split column


def _builder(root: Path) -> tuple[str, dict[str, Any]]:
    """Which ``datasets`` loader reads the folder: by the media files it holds, or its metadata alone.

    Without split sub-folders every file is named explicitly: left to itself, ``datasets`` infers
    splits from file names too, and a stamp called ``toy_train.png`` became the whole train split."""
    suffixes = {p.suffix.lower() for p in root.rglob("*") if p.is_file()}
    by_folder = any(p.is_dir() and p.name.lower() in SPLIT_FOLDERS for p in root.iterdir())
    where = {"data_dir": str(root)} if by_folder else {"data_dir": str(root), "data_files": {ALL_ROWS: "**"}}
    if suffixes & IMAGES:
        return "imagefolder", where
    # Audio: the metadata table itself, files read by edgemm (datasets' audiofolder needs torchcodec even
    # to store undecoded clips); file_name becomes the "audio" column, as audiofolder would name it.
    tables = [root / name for name in METADATA if (root / name).is_file()]
    if not tables:
        what = "audio files but no metadata.csv/metadata.jsonl beside them" if suffixes & AUDIO else \
            "no images, no audio and no metadata.csv/metadata.jsonl"
        raise InputError(f"data folder {root} holds {what}", f"lay it out as {LAYOUT}")
    return ("csv" if tables[0].suffix == ".csv" else "json"), {"data_files": {ALL_ROWS: str(tables[0])}}


@lru_cache(maxsize=2)
def _tables(root: str, fingerprint: str) -> dict[str, Any]:
    """The folder's rows per split, media columns left undecoded (edgemm's readers decode them)."""
    builder, where = _builder(Path(root))
    _check_text(Path(root))
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its errors reach the user as ours, once
    try:
        loaded = datasets.load_dataset(builder, **where)
    except Exception as err:  # datasets raises many kinds; its message names the file and the column
        raise InputError(f"cannot read data folder {root} ({type(err).__name__}: {str(err)[:300]})",
                         f"lay it out as {LAYOUT}") from None
    tables = {}
    for split, table in loaded.items():
        for column, feature in table.features.items():
            if isinstance(feature, (datasets.Image, datasets.Audio)):
                table = table.cast_column(column, type(feature)(decode=False))
        gaps = _text_columns_with_gaps(table)
        if gaps:  # the CSV is read again only when pandas may have taken a text cell for a missing value
            table = _restore_cells(table, gaps, _csv_rows(table, Path(root), builder))
        if builder in ("csv", "json"):
            table = table.rename_columns({c: c.removesuffix("_file_name") if c != "file_name" else "audio"
                                          for c in table.column_names if c.endswith("file_name")})
        tables[RENAMED.get(split, split)] = table
    if ALL_ROWS in tables and SPLIT_COLUMN not in tables[ALL_ROWS].column_names:
        tables = {"test": tables[ALL_ROWS]}  # no split column, no split folders: all of it is for evaluation
    if any(SPLIT_COLUMN in t.column_names for t in tables.values()):
        table = datasets.concatenate_datasets(list(tables.values()))
        values = np.asarray([str(v) for v in table[SPLIT_COLUMN]])
        tables = {RENAMED.get(str(name), str(name)): table.select(np.flatnonzero(values == name))
                  for name in sorted(set(values))}
    return tables


def _text_columns_with_gaps(table: Any) -> list[str]:
    """Text columns, and columns with no value at all (all-"NA" reads as float64), that have a missing cell. A
    column of numbers keeps its missing cells: there "NA" means missing."""
    texts = [c for c, f in table.features.items() if isinstance(f, datasets.Value) and (
        f.dtype in ("string", "large_string", "null") or all(v is None for v in table[c]))]
    return [c for c in texts if None in table[c]]


def _restore_cells(table: Any, columns: list[str], raw: list[dict[str, str] | None]) -> Any:
    """Put back the text cells pandas read as missing. Both loaders read metadata.csv with pandas' defaults, which
    turn "NA", "None", "null", "nan"... into missing values: a class called None would read as a row without a
    label, a caption "NA" as no caption. Every cell of ``columns`` that is not empty in the file (``raw``: each
    row's cells as written) gets its text back."""
    for column in columns:
        values = [v if v is not None or row is None else _text_or_none(row.get(column))
                  for v, row in zip(table[column], raw)]
        table = table.remove_columns(column).add_column(column, values)
    return table


def _csv_rows(table: Any, root: Path, builder: str) -> list[dict[str, str] | None]:
    """Each row's cells as metadata.csv writes them (None where no CSV row is found). The csv loader keeps the
    file's order; imagefolder's rows are matched by file, the k-th row of a file to its k-th line (a file may be
    listed twice, e.g. once labelled and once in an unlabelled pool)."""
    if builder == "csv":
        return _read_csv(next(p for p in (root / name for name in METADATA) if p.is_file()))
    files = [c for c, f in table.features.items() if isinstance(f, (datasets.Image, datasets.Audio))]
    if builder != "imagefolder" or not files:
        return [None] * len(table)
    lines: dict[str, deque] = defaultdict(deque)
    for metadata in root.rglob("metadata.csv"):
        for row in _read_csv(metadata):
            name = row.get(f"{files[0]}_file_name") or row.get("file_name") or ""
            lines[str((metadata.parent / name).resolve())].append(row)
    keys = (str(Path(v["path"]).resolve()) if v and v.get("path") else "" for v in table[files[0]])
    return [lines[key].popleft() if lines.get(key) else None for key in keys]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's "CSV UTF-8" starts with a BOM
        return list(csv.DictReader(f))


def _text_or_none(cell: str | None) -> str | None:
    return cell if cell and cell.strip() else None


def _check_text(root: Path) -> None:
    """The metadata tables are UTF-8 (datasets would say only "An error occurred while generating the dataset")."""
    for table in (p for name in METADATA for p in root.rglob(name)):
        try:
            table.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{table} is not UTF-8 text ({err.reason} at byte {err.start})",
                             "save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None


def _read(ref: str) -> dict[str, Any]:
    root = Path(ref).resolve()
    return _tables(str(root), data_fingerprint(str(root)))  # an edited folder is read again


@lru_cache(maxsize=4)
def _split(ref: str, split: str, spec_json: str, fingerprint: str) -> Split:
    from edgemm.spec import ModelSpec  # noqa: PLC0415 - the contract is data here, parsed from its cache key
    return _decode(_read(ref)[split], ref, split, ModelSpec.model_validate_json(spec_json))


def _decode(table: Any, ref: str, split: str, spec: "ModelSpec") -> Split:
    missing = sorted(c for c in needed_columns(spec) if c not in table.column_names)
    if missing:
        raise InputError(f"data folder {ref} has no column(s) {missing} (it has {table.column_names})",
                         "add them to metadata.csv, or point the contract's preprocess.column / label_column at yours")
    columns = {c: list(table[c]) for c in needed_columns(spec)}
    inputs = build_inputs(columns, spec, Path(ref).resolve())
    if spec.task.kind != "classification":
        return Split(split, inputs, np.zeros(len(table), np.int64))
    if spec.task.label_column not in table.column_names:  # unlabelled data: for distillation and calibration
        return Split(split, inputs, np.full(len(table), UNLABELLED, np.int64))
    values = list(table[spec.task.label_column])
    names = _class_names(table, spec.task.label_column)
    if names is not None and spec.task.labels:  # class sub-folders: match the model's classes by name
        values = [names[v] for v in values]
    return Split(split, inputs, read_labels(values, spec.task))


def _class_names(table: Any, column: str) -> list[str] | None:
    feature = table.features.get(column)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


@DATASETS.register
class FolderDataset(DataSource):
    name = "folder"
    description = "a data folder (Hugging Face imagefolder/audiofolder layout + metadata.csv), read as the contract says"
    requires = ("datasets",)
    extra = "data"
    supports = ("image", "audio", "text", "folder")

    def matches(self, ref: str) -> bool:
        return Path(ref).is_dir()

    def splits_for(self, ref: str) -> tuple[str, ...]:
        return tuple(_read(ref))

    def labelled(self, ref: str, split: str, spec=None) -> bool:
        if spec is not None and spec.task.kind != "classification":
            return True  # nothing to score against labels: the accuracy check names that instead
        table = _read(ref)[split]
        column = spec.task.label_column if spec is not None else "label"
        return column in table.column_names and not any(is_blank_label(v) for v in table[column])

    def load_rows(self, split: str, ref: str, spec, count: int, seed: int = 0) -> Split:
        """Only the picked rows are decoded, and not cached: a pool of images far larger than memory works."""
        table = _read(ref)[split]
        return _decode(table.select(subset_rows(len(table), count, seed)), str(Path(ref).resolve()), split, spec)

    def load(self, split: str, ref: str, spec=None) -> Split:
        if spec is None:
            raise InputError(f"data folder {ref} needs the model's contract to be read", "load it for a model")
        root = Path(ref).resolve()
        return _split(str(root), split, spec.model_dump_json(), data_fingerprint(str(root)))
