"""Groups (lesion or patient ids) for a class-per-folder dataset, from a CSV that maps each file
name to its group — e.g. HAM10000's metadata (image_id -> lesion_id) beside its images sorted into
class folders. With groups, the split keeps each group in one split; a folder's own split is kept
as given and its groups crossing splits are counted (leakage)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from ...params import FolderGroupsParams
from .dataset import RawDataset
from .table import id_key, read_table, require_columns, rows_by_id

log = logging.getLogger(__name__)


def attach_groups(raw: RawDataset, g: FolderGroupsParams) -> RawDataset:
    """The dataset with a group per image; an image the CSV does not list is a group of its own."""
    mapping = read_group_map(g)
    groups, unlisted = {}, 0
    for split, paths in raw.paths.items():
        values = []
        for path in paths:
            group = mapping.get(id_key(Path(path).name))
            unlisted += not group
            values.append(group or f"(no group) {path}")
        groups[split] = np.asarray(values, dtype=str)
    if unlisted:
        log.info(f"data.folder.groups: {unlisted} image(s) have no group in {g.path}; each is a group of its own")
    return dataclasses.replace(raw, groups=groups)


def read_group_map(g: FolderGroupsParams) -> dict[str, str]:
    """File name (extension optional) -> group id; a file listed twice is an error naming both rows."""
    table = read_table(Path(g.path), "data.folder.groups.path")
    require_columns(table, [("data.folder.groups.id", g.id), ("data.folder.groups.group", g.group)], {})
    return {key: row[g.group].strip() for key, (_, row) in rows_by_id(table, g.id).items()}
