"""Classifier registry (`register_model`, `list_models`, `create_classifier`) and model zoo."""

from advkit.models import zoo_classifiers as _zoo_classifiers  # noqa: F401  (registers models)
from advkit.models.classifier import Classifier
from advkit.models.factory import create_classifier
from advkit.models.registry import ModelSpec, get_model_spec, list_models, register_model
from advkit.models.weights import advkit_home, find_weights, load_state_dict_file

__all__ = [
    "Classifier",
    "ModelSpec",
    "advkit_home",
    "create_classifier",
    "find_weights",
    "get_model_spec",
    "list_models",
    "load_state_dict_file",
    "register_model",
]

from advkit.models.checkpoint import load_denoiser, read_checkpoint_record, save_denoiser  # noqa: E402
from advkit.models.denoisers import (  # noqa: E402
    DENOISER_ARCHS,
    AddDenoiser,
    Denoiser,
    FiltDenoiser,
    KPNDenoiser,
    MultiHeadFiltDenoiser,
    PAFilt,
    create_denoiser,
    eps_to_head,
)

__all__ += [
    "DENOISER_ARCHS",
    "AddDenoiser",
    "Denoiser",
    "FiltDenoiser",
    "KPNDenoiser",
    "MultiHeadFiltDenoiser",
    "PAFilt",
    "create_denoiser",
    "eps_to_head",
    "load_denoiser",
    "read_checkpoint_record",
    "save_denoiser",
]
