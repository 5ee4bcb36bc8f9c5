"""The whole model and its lifecycle: :class:`~.ttt_model.TTTModel` (UVI-Net with its heads), test-
time training of it (:mod:`.ttt`), checkpoints (safetensors + JSON), the model registry
(``weights/Models.json``) and loading a model by path or registered name.
"""
