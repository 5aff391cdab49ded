"""Shareable weights: ``save_pretrained`` / ``from_pretrained`` for every model, a model card, the Hugging Face Hub.

A saved model is a directory of three files: ``config.json`` (the model's name and constructor arguments,
which rebuild it without code, and its preprocessing), ``model.safetensors`` (its weights) and ``README.md``
(its model card). :func:`from_pretrained` reads a directory, or a Hub repository id through the optional
``huggingface_hub`` (``pip install 'vireid-layers[hub]'``).
"""

from .card import model_card
from .pretrained import CONFIG_NAME, WEIGHTS_NAME, from_pretrained, load_config, push_to_hub, save_pretrained
from .registry import build_from_config, model_config, register_model, registered_models

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "build_from_config",
    "from_pretrained",
    "load_config",
    "model_card",
    "model_config",
    "push_to_hub",
    "register_model",
    "registered_models",
    "save_pretrained",
]
