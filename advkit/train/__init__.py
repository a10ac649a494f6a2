"""Training the denoisers from pair stores (`train_denoiser`) and their losses."""

from advkit.train.losses import FeatureExtractor, SemanticLoss, fusion_choice_loss, fusion_loss, image_loss
from advkit.train.trainer import EpochReport, TrainConfig, train_denoiser

__all__ = ["EpochReport", "FeatureExtractor", "SemanticLoss", "TrainConfig", "fusion_choice_loss", "fusion_loss", "image_loss",
           "train_denoiser"]
