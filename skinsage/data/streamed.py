"""`prepare` for the shards store from a file-based source (folder, csv): images are decoded in
parallel and written to TFRecord shards as they come, so memory holds a window of decoded images,
16-byte digests and labels, never the dataset.

Unsplit sources are written once to a staging shard set in file order (unreadable files skipped,
same-class copies dropped by digest), split on the labels and groups held in memory, then each
staged record is copied, still serialized, into its split's shards (no second decode; the split's
order is file order, as the npz store's). Duplicate, conflict and leakage checks use the digests.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from ..params import Params
from ..prepared import Split
from ..shards import ShardWriter, records, shard_files
from .duplicates import CopyFilter, conflicts_of, image_digest, leakage_of
from .sources import Listing
from .sources.folder import iter_decoded

STAGING = "_all"  # the unsplit images, removed once they are routed into their splits


@dataclasses.dataclass
class Streamed:
    """What the streamed write found: the kept files (labels, groups), the rows for skipped.csv and
    the checks `prepare` reports."""
    used: Listing
    unreadable: list[tuple[str, str]]
    removed: list[tuple[str, str]]
    digests: dict[str, list[bytes]]

    def splits(self) -> dict[str, Split]:
        """Labels per split (the images are on disk): enough to count and check."""
        return {split: Split(None, labels) for split, labels in self.used.labels.items()}

    def leakage(self) -> dict[str, int]:
        return leakage_of(self.digests)

    def conflicts(self) -> list:
        members = [(d, name, label) for split, digests in self.digests.items()
                   for d, name, label in zip(digests, self.used.paths[split], self.used.labels[split])]
        return conflicts_of(members, self.used.class_names)


def decode_to_shards(listing: Listing, params: Params, staging: Path) -> Streamed:
    """Decode every listed file into shards under `staging` (a split's own folder, or STAGING when
    the source is unsplit); unreadable files and same-class copies are left out and reported."""
    copies = None if listing.has_official_split else CopyFilter()
    unreadable, kept, digests = list(listing.skipped), {}, {}
    for split, paths in listing.paths.items():
        kept[split], digests[split] = [], []
        folder = staging / (STAGING if split == "all" else split)
        with ShardWriter(folder, params.image_size) as writer:
            for i, image, error in iter_decoded(paths, params.image_size, params.data.workers,
                                                f"decode {listing.name} to shards"):
                label, digest = listing.labels[split][i], None if error else image_digest(image)
                if error:
                    unreadable.append((paths[i], error))
                elif not (copies and copies.is_copy(digest, label, paths[i])):
                    writer.add(image, label)
                    kept[split].append(i)
                    digests[split].append(digest)
    used = _subset(listing, {split: np.asarray(idx, dtype=np.int64) for split, idx in kept.items()})
    return Streamed(used, sorted(unreadable), copies.removed if copies else [], digests)


def route_splits(streamed: Streamed, index: dict[str, np.ndarray], staging: Path, image_size: int) -> Streamed:
    """Copy the staged records into their splits' shards (`index`: sorted positions per split)."""
    split_of = np.empty(len(streamed.used.labels["all"]), dtype=np.int64)
    names = list(index)
    for n, name in enumerate(names):
        split_of[index[name]] = n
    labels = streamed.used.labels["all"]
    writers = [ShardWriter(staging / name, image_size) for name in names]
    for position, record in enumerate(records(shard_files(staging / STAGING)).as_numpy_iterator()):
        writers[split_of[position]].add_record(record, labels[position])
    for writer in writers:
        writer.close()
    shutil.rmtree(staging / STAGING)
    all_digests = streamed.digests["all"]
    return dataclasses.replace(streamed, used=_subset(streamed.used, index, source="all"),
                               digests={s: [all_digests[i] for i in idx] for s, idx in index.items()})


def _subset(listing: Listing, index: dict[str, np.ndarray], source: str | None = None) -> Listing:
    """The listing restricted to `index` per split (taken from split `source` when given)."""
    pick = {split: (source or split, idx) for split, idx in index.items()}
    return dataclasses.replace(
        listing, paths={s: [listing.paths[f][i] for i in idx] for s, (f, idx) in pick.items()},
        labels={s: listing.labels[f][idx] for s, (f, idx) in pick.items()},
        groups={s: listing.groups[f][idx] for s, (f, idx) in pick.items()} if listing.groups else {})
