"""Exporting a trained model for other runtimes (LiteRT, ONNX, TF SavedModel) and running the
exported files through the same `Classifier` intake. Not used by any DVC stage.

    serving.py   the self-contained graph: uint8 images in, probabilities out, TTA inside
    convert.py   the converters, quantisation, calibration and the check against Keras
    runtime.py   adapters that run an exported file like a Keras model; the side JSON
"""
