"""A method of one's own, trained by ``mrtutor.train`` without a change to it: this module declares
the model and its recipe, and ``tests/train_toy.py`` starts the command with it registered.

The model has no batch norm and its loss draws no random numbers, so that several processes must
take exactly the steps of one (``tests/test_distributed.py``).
"""

import torch
from torch import nn

from mrtutor import recipes
from mrtutor.fft import channels_to_complex, complex_to_channels
from mrtutor.sense import Sense


class ZeroFilledPlusCNN(nn.Module):
    """x = A^H y, then x + CNN(x) with a two-layer CNN: the smallest network of the book's shape."""

    def __init__(self, features: int = 4):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(2, features, 3, padding=1), nn.ReLU(), nn.Conv2d(features, 2, 3, padding=1))

    def forward(self, kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = Sense(maps, mask).adjoint(kspace)
        return x + channels_to_complex(self.cnn(complex_to_channels(x)))


def toy(features: int = 4) -> ZeroFilledPlusCNN:
    return ZeroFilledPlusCNN(features)


recipes.register(recipes.Recipe(
    "toy", toy, "zero-filled image plus a two-layer CNN (a test's own recipe)",
    (recipes.Option("features", int, "hidden channels", default=4, bound="> 0"),)))
