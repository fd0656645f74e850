"""The files stages exchange besides data/prepared (skinsage/prepared.py): their names, and one
writer and reader each, so a stage that reads another's output imports this, never that stage's code.

    history.py      dvclive's per-epoch history (written live by `train`, read by `plot`)
    training.py     metrics/train.json and train_full.json (the training summary, its best epoch)
    evaluation.py   metrics/eval*.json, per_class.json, confusion.json, predictions.csv and the
                    curve CSVs (written by `evaluate`, read by `plot`), the metric names for people
"""
