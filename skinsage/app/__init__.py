"""Using a trained model: the `skinsage` command and the Python API.

    classifier.py       `Classifier` and `Prediction` (Python API; `skinsage predict` uses it)
    cli.py              the `skinsage` command: predict, evaluate, info
    console.py          what the command prints
    evaluation_data.py  labelled images given to `skinsage evaluate`, in the model's class order
    model_info.py       what `skinsage info` reports about a model file
"""
