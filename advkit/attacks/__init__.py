"""Attacks as plain torch modules with a uniform call ``attack(images, labels)``."""

from advkit.attacks.apgd import APGD
from advkit.attacks.apgdt import APGDT
from advkit.attacks.autoattack import AutoAttack
from advkit.attacks.base import Attack
from advkit.attacks.cw import CW
from advkit.attacks.deepfool import DeepFool
from advkit.attacks.denoise_then import DenoiseThenAttack
from advkit.attacks.dim import DIM
from advkit.attacks.ead import EAD
from advkit.attacks.fab import FAB, FABT
from advkit.attacks.fgsm import FGSM
from advkit.attacks.hopskipjump import HopSkipJump
from advkit.attacks.mifgsm import MIFGSM
from advkit.attacks.multiattack import MultiAttack
from advkit.attacks.nifgsm import NIFGSM
from advkit.attacks.noise import GaussianNoise
from advkit.attacks.pasadena import Pasadena
from advkit.attacks.pgd import PGD
from advkit.attacks.pgd_l2 import PGDL2
from advkit.attacks.registry import (
    create_attack,
    describe_attack,
    get_attack,
    list_attacks,
    parse_attack_options,
    register_attack,
)
from advkit.attacks.sinifgsm import SINIFGSM
from advkit.attacks.spsa import SPSA
from advkit.attacks.square import Square
from advkit.attacks.targets import least_likely_targets, random_targets, shifted_targets
from advkit.attacks.tidim import TIDIM
from advkit.attacks.tifgsm import TIFGSM
from advkit.attacks.timifgsm import TIMIFGSM
from advkit.attacks.vmifgsm import VMIFGSM
from advkit.attacks.vnifgsm import VNIFGSM

__all__ = ["APGD", "APGDT", "AutoAttack", "FAB", "FABT", "FGSM", "PGD", "PGDL2", "Attack", "GaussianNoise"]
__all__ += ["CW", "DeepFool", "EAD", "SPSA", "Square"]
__all__ += ["least_likely_targets", "random_targets", "shifted_targets"]
__all__ += ["DIM", "MIFGSM", "TIDIM", "TIFGSM", "TIMIFGSM", "DenoiseThenAttack", "Pasadena"]
__all__ += ["NIFGSM", "SINIFGSM", "VMIFGSM", "VNIFGSM"]
__all__ += ["create_attack", "describe_attack", "get_attack", "list_attacks", "parse_attack_options", "register_attack"]
__all__ += ["MultiAttack", "HopSkipJump"]
