"""The `plot` stage: the other stages' outputs -> plots/*.png and the model card plots/report.md.

    render.py      the stage itself: reads every input, draws every figure, writes the card
    charts.py      the matplotlib figures
    model_card.py  the Markdown model card
    explanations.py  Grad-CAM examples on test images

It reads train's and evaluate's files through skinsage/contracts/, never their code.
"""
