"""The model: what `train` builds and saves and what every user of a saved model runs.

    architectures.py   the seed CNN and ResNet50 transfer learning, preprocessing inside
    layers.py          SkinSage's custom Keras layers (registered for safe-mode loading)
    clinical.py        clinical inputs (age, sex, site) beside the image, encoded inside the model
    logit_adjustment.py  post-hoc prior correction baked into the saved model
    temperature.py     temperature scaling: fitted on validation, applied after the TTA views
    model_file.py      .keras + SkinSage metadata: save, load, validate
    inference.py       the one path from images to probabilities (TTA included; the one TTA check)
    gradcam.py         Grad-CAM heat maps (the report's examples, `skinsage explain`, the web app)
"""
