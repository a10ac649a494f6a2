"""Attacks as plain torch modules with a uniform call ``attack(images, labels)``."""

from advkit.attacks.base import Attack
from advkit.attacks.fgsm import FGSM
from advkit.attacks.noise import GaussianNoise
from advkit.attacks.pgd import PGD

__all__ = ["FGSM", "PGD", "Attack", "GaussianNoise"]
