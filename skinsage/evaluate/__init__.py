"""The `evaluate` stage: the saved model on the test and val splits -> metrics/*.json, *.csv.

    metrics.py   every metric from one array of probabilities (scikit-learn)
    curves.py    ROC, precision-recall and calibration tables
    scoring.py   a labelled split through the model's inference path -> metrics
    outputs.py   the files the stage writes (names, writers, readers: contracts/evaluation.py)
"""
