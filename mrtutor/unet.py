"""A trained U-Net baseline in fastMRI's design, the trained method Darestani and Heckel (2021) compare with.

The paper's baseline is "a standard U-net with 8 layers and width factor equal to 32", trained with the
fastMRI challenge's settings (Sec. 5.2 and Table 10: channels 32, 64, 128, 256, 512, 256, 128, 64, 32).
The network here is written from the description of fastMRI's ``fastmri/models/unet.py`` (Zbontar et al.
2018, github.com/facebookresearch/fastMRI; Ronneberger et al. 2015 for the U-Net itself):

* a block is [3 x 3 convolution without bias, instance norm (no affine), LeakyReLU(0.2), Dropout2d] twice;
* going down, ``pools`` blocks doubling the channels from ``channels``, each followed by 2 x 2 average
  pooling, then one more block at the bottom (512 channels at 32 and 4 pools);
* going up, a 2 x 2 stride-2 transposed convolution without bias, instance norm and LeakyReLU halve the
  channels, the output is concatenated with the skip of the same level, and a block follows;
* one 1 x 1 convolution, with a bias, gives the output channel.

With one input and one output channel this is 7,756,097 parameters at 32 channels and 4 pools: the 3 x 3
and transposed convolutions have no bias, instance norm no weights, and the last 1 x 1 convolution has 32
weights and one bias (fastMRI's current version; an early one ended in three 1 x 1 convolutions).

Input and output follow fastMRI's ``UnetDataTransform``: the network sees the zero-filled magnitude image
normalised by its own mean and standard deviation, mean and std over the pixels of each image, (x - mean)
/ (std + 1e-11), clamped to [-6, 6]; its output is de-normalised with the same mean and std. The model
is called like every model of the package, ``model(kspace, maps, mask)``, and returns a real magnitude
image (B, H, W), which the metrics compare with |target| as they compare every other method's output.

What differs from fastMRI, and why:

* Input image: |A^H y|, the SENSE combination sum_c conj(S_c) F^-1 y_c of the zero-filled coil images
  with the dataset's maps, where fastMRI takes their root-sum-of-squares. The book's targets are SENSE
  combinations of the fully sampled data (``mrtutor.data``), so this input estimates the target's own
  quantity, and it is the A^H y every other chapter's model starts from. (RSS is the larger of the two:
  sqrt(sum_c |x_c|^2) >= |sum_c conj(S_c) x_c| for maps with unit sum of squares.) No crop to 320 x 320.
* Loss: the L1 distance between the de-normalised output and |target| in the image's units; fastMRI's
  L1 is between the normalised output and the target normalised with the input's mean and std and
  clamped to [-6, 6], which weighs each slice by 1 / std. The book's images all have max |target| = 1, so
  the weights differ little between slices.
* Optimiser: fastMRI trains with RMSprop at lr 1e-3 (no weight decay), divided by 10 every 40 epochs, 50
  epochs at batch size 1. A recipe cannot choose its optimiser, so this one trains with the shared loop's
  Adam and cosine decay (``mrtutor.train``); ``train_scripts/chapter6.sh`` gives the epochs and batch size.
* Dropout: fastMRI's ``drop_prob`` defaults to 0.0, so no dropout (``dropout`` sets it).
* Sizes not divisible by 2^pools: where fastMRI pads an upsampled map by reflection, this one pads by
  replication (which also works at one pixel).

The record's ``val_loss`` (``mrtutor.train.validate``) is the mean |output - target|^2 against the complex
target, so it counts the target's phase, which a magnitude cannot reproduce; ``val_psnr`` compares
magnitudes and is the score to read.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mrtutor.recipes import Option, Recipe, register
from mrtutor.sense import Sense

# fastMRI's UnetDataTransform: normalise_instance with eps = 1e-11, then clamp to +-6.
NORM_EPS = 1e-11
NORM_CLAMP = 6.0

LEAKY_SLOPE = 0.2


def conv_block(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    """[3 x 3 conv (no bias), instance norm, LeakyReLU(0.2), Dropout2d] x 2: (B, c_in, H, W) -> (B, c_out, H, W)."""
    layers: list[nn.Module] = []
    for c in (c_in, c_out):
        layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.InstanceNorm2d(c_out),
                   nn.LeakyReLU(LEAKY_SLOPE), nn.Dropout2d(dropout)]
    return nn.Sequential(*layers)


def up_block(c_in: int, c_out: int) -> nn.Sequential:
    """2 x 2 stride-2 transposed conv (no bias), instance norm, LeakyReLU(0.2): (B, c_in, H, W) -> (B, c_out, 2H, 2W)."""
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 2, stride=2, bias=False), nn.InstanceNorm2d(c_out),
                         nn.LeakyReLU(LEAKY_SLOPE))


class UNet(nn.Module):
    """fastMRI's U-Net on real images: (B, in_channels, H, W) -> (B, out_channels, H, W).

    Args:
        in_channels, out_channels: channels of the input and the output (one each for magnitude images).
        channels: channels of the first level; each pooling doubles them.
        pools: 2 x 2 average poolings (and as many upsamplings). H and W must be at least 2^(pools + 1),
            so that the bottom level has 2 x 2 pixels or more for instance norm.
        dropout: Dropout2d probability after every activation of the blocks, in [0, 1).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, channels: int = 32, pools: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("channels", channels),
                            ("pools", pools)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.pools = pools
        widths = [channels * 2**level for level in range(pools + 1)]  # 32, 64, 128, 256, 512
        self.down = nn.ModuleList(conv_block(c_in, c_out, dropout)
                                  for c_in, c_out in zip([in_channels] + widths[:-2], widths[:-1]))
        self.bottom = conv_block(widths[-2], widths[-1], dropout)
        self.up = nn.ModuleList(up_block(widths[level + 1], widths[level]) for level in reversed(range(pools)))
        # After the concatenation with the skip a block sees twice the channels it gives.
        self.merge = nn.ModuleList(conv_block(2 * widths[level], widths[level], dropout)
                                   for level in reversed(range(pools)))
        self.head = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or min(x.shape[-2:]) < 2 ** (self.pools + 1):
            raise ValueError(f"x must have shape (B, C, H, W) with H, W >= {2 ** (self.pools + 1)} for {self.pools} "
                             f"poolings, got {tuple(x.shape)}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        x = self.bottom(x)
        for up, merge in zip(self.up, self.merge):
            skip = skips.pop()
            x = up(x)
            # An odd size was floored by the pooling: the upsampled map is one pixel short there.
            short_h, short_w = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
            if short_h or short_w:
                x = F.pad(x, (0, short_w, 0, short_h), mode="replicate")
            x = merge(torch.cat([x, skip], dim=1))
        return self.head(x)


def normalise_instance(image: torch.Tensor, eps: float = NORM_EPS,
                       clamp: float = NORM_CLAMP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fastMRI's input normalisation of real images (B, H, W): ((image - mean) / (std + eps)) clamped to
    [-clamp, clamp], with mean and (unbiased) std over each image's pixels; returns it with mean and std,
    each (B, 1, 1), which undo it: output * std + mean."""
    if image.is_complex() or image.dim() != 3:
        raise ValueError(f"image must be real with shape (B, H, W), got {image.dtype} {tuple(image.shape)}")
    mean = image.mean(dim=(-2, -1), keepdim=True)
    std = image.std(dim=(-2, -1), keepdim=True)
    return ((image - mean) / (std + eps)).clamp(-clamp, clamp), mean, std


class UNetReconstruction(nn.Module):
    """The U-Net baseline as an MRI reconstruction: ``model(kspace, maps, mask) -> (B, H, W)`` real magnitudes.

    The input image is |A^H y| with A = ``Sense(maps, mask)`` (``zero_filled``); the ``UNet`` maps it,
    normalised by its mean and std (``normalise_instance``), to the normalised reconstruction, which
    the same mean and std scale back. Scaling the k-space by s scales the output by s.

    Args:
        channels, pools, dropout: the ``UNet``'s (one input and one output channel).
    """

    def __init__(self, channels: int = 32, pools: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = UNet(1, 1, channels, pools, dropout)

    @staticmethod
    def zero_filled(kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """|A^H y| (B, H, W): the magnitude of the SENSE combination of the zero-filled coil images."""
        return Sense(maps, mask).adjoint(kspace).abs()

    def forward(self, kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reconstruct magnitude images (B, H, W), real, from k-space (B, C, H, W), maps (B, C, H, W) and a
        mask (H, W), (B, H, W) or (B, 1, H, W)."""
        image = self.zero_filled(kspace, maps, mask)
        normalised, mean, std = normalise_instance(image)
        # Under mixed precision the network answers in bfloat16; the image keeps the data's precision.
        out = self.net(normalised[:, None])[:, 0].to(image.dtype)
        return out * std + mean


def unet(channels: int = 32, pools: int = 4, dropout: float = 0.0) -> UNetReconstruction:
    """The fastMRI U-Net baseline (defaults: 32 channels, 4 poolings, no dropout; 7,756,097 parameters)."""
    return UNetReconstruction(channels, pools, dropout)


def magnitude_l1_loss(model: UNetReconstruction, batch: dict) -> torch.Tensor:
    """Mean |output - |target|| over the pixels: the L1 loss of fastMRI's U-Net, in the image's units."""
    return F.l1_loss(model(batch["kspace"], batch["maps"], batch["mask"]), batch["target"].abs())


register(Recipe("unet", unet, "U-Net baseline in fastMRI's design: |A^H y| normalised by its mean and std to "
                "the magnitude image, L1 loss (Darestani and Heckel's trained comparison)", (
    Option("channels", int, "channels of the first level, doubled at each pooling (fastMRI: 32)", default=32,
           bound="> 0"),
    Option("pools", int, "average poolings, as many upsamplings (fastMRI: 4)", default=4, bound="> 0"),
    Option("dropout", float, "Dropout2d probability in every block, below 1 (fastMRI: 0.0)", default=0.0,
           bound="in [0, 1]"),
), loss=magnitude_l1_loss))
