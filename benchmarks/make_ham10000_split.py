"""Arrange ../shared/data/ham10000_jpg as a folder dataset with its own lesion-disjoint split.

    .venv/bin/python benchmarks/make_ham10000_split.py [OUT]     # default OUT: /tmp/ham10000_split

Writes OUT/{train,val,test}/<class>/ISIC_*.jpg following ham10000_28_manifest.csv (the split of
ham10000_28.npz: by lesion, so no lesion is in two splits). Files are hard links where the file
system allows (no extra space), else copies. The result is what `data.source=folder` reads as a
dataset with a split of its own, e.g. for the higher-resolution runs in docs/results.md:

    dvc exp run -S data.source=folder -S data.folder.path=/tmp/ham10000_split -S model=cnn ...
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ham10000_split")
    manifest, images = SHARED / "ham10000_28_manifest.csv", SHARED / "ham10000_jpg"
    if not manifest.is_file():
        sys.exit(f"{manifest} not found: this script needs the shared HAM10000 copy beside the project")
    where = {path.stem: path for path in images.glob("*/*.jpg")}
    counts: dict[str, int] = {}
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            source = where[row["image_id"]]
            target = out / row["split"] / source.parent.name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copy2(source, target)
            counts[row["split"]] = counts.get(row["split"], 0) + 1
    print(f"{out}: " + ", ".join(f"{split} {n}" for split, n in counts.items()))


if __name__ == "__main__":
    main()
