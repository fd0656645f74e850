"""The `train` stage: data/prepared -> models/model.keras, metrics/train*.json, dvclive/ (per epoch).

    trainer.py    the stage's work: seed, build, fit, logit adjustment, summary and metadata
    phase.py      one training phase: optimizer, loss, early stopping (its best epoch), class weights
    resnet50.py   ResNet50's head phase (on cached features) and optional fine-tuning
    inputs.py     tf.data pipelines of images or cached features
    augment.py    random training-time augmentation (never part of the saved model)
    tau_sweep.py  choosing the logit-adjustment tau on validation
    distribute.py tf.distribute strategies and mixed precision
    history.py    the per-epoch history logged live to dvclive (files and reader: contracts/history.py)

The files it writes for other stages are contracts in skinsage/contracts/ (history, training).
"""
