"""Exporting a trained model for other runtimes (LiteRT, ONNX, TF SavedModel) and running the
exported files through the same `Classifier` intake; the optional `export` stage and `skinsage
export` both go through `convert.export_files`.

    formats.py   format names, file suffixes, the side JSON's path, the stage's targets
    serving.py   the self-contained graph: uint8 images in, probabilities out, TTA inside
    convert.py   the converters, quantisation, calibration, the check against Keras, export_files
    runtime.py   adapters that run an exported file like a Keras model; reading the side JSON
"""
