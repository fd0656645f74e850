"""Using a trained model: the `skinsage` command, the web app and the Python API.

    classifier.py       `Classifier` and `Prediction` (Python API; `skinsage predict` uses it)
    clinical_input.py   clinical data for a prediction: a CSV (--clinical) or one image's values
    files.py            which files `skinsage predict` / `explain` read (folders searched)
    cli.py              the `skinsage` command: predict, explain, evaluate, info, export, serve
    console.py          what the command prints
    server.py           `skinsage serve`: one local web page (page.html) on FastAPI
    evaluation_data.py  labelled images given to `skinsage evaluate`, in the model's class order
    model_info.py       what `skinsage info` reports about a model file
    demo.py             which data `make demo` runs on
"""
