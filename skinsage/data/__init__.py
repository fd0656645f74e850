"""The `prepare` stage: a data source -> model-ready splits in data/prepared.

    sources/      where images come from: MedMNIST download, class-per-folder tree, images + a CSV
                  of labels (HAM10000, ISIC), generated shapes
    images.py     decoding any image file the way training and prediction both see it
    duplicates.py identical images: copies within a class, label conflicts, leakage across splits
    splits.py     stratified train/val/test assignment
    prepare.py    the stage itself: source -> checks -> split -> data/prepared + metrics/data.json
    streamed.py   the shards store from files: decoded straight to TFRecord shards, checked by digest
"""
