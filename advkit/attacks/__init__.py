"""Attacks as plain torch modules with a uniform call ``attack(images, labels)``."""

from advkit.attacks.base import Attack
from advkit.attacks.denoise_then import DenoiseThenAttack
from advkit.attacks.dim import DIM
from advkit.attacks.fgsm import FGSM
from advkit.attacks.mifgsm import MIFGSM
from advkit.attacks.noise import GaussianNoise
from advkit.attacks.pasadena import Pasadena
from advkit.attacks.pgd import PGD
from advkit.attacks.tidim import TIDIM
from advkit.attacks.tifgsm import TIFGSM
from advkit.attacks.timifgsm import TIMIFGSM

__all__ = ["FGSM", "PGD", "Attack", "GaussianNoise"]
__all__ += ["DIM", "MIFGSM", "TIDIM", "TIFGSM", "TIMIFGSM", "DenoiseThenAttack", "Pasadena"]
