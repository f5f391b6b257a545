"""Deep-learning recommenders on PyTorch (the optional extra ``tastebud[neural]``).

The modules import torch only when a model is fitted or loaded, so the registry lists these
models on every install and fitting one without torch raises a clear error naming the extra.
``_torch.py`` holds what they share: the device choice, seeding, the training loop with early
stopping, and the conversion of network weights to the pickle-free arrays every model saves.
"""
