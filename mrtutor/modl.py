"""MoDL: model-based deep learning (Aggarwal, Mani and Jacob, IEEE TMI 2019).

The reconstruction alternates a learned denoiser and an exact data-consistency solve (paper eq. 10):

    z_k     = D_w(x_k) = x_k + N_w(x_k)                       (residual CNN, Fig. 1a)
    x_{k+1} = (A^H A + lam I)^-1 (A^H b + lam z_k)             (CG, eq. 11; backward by eq. 17)

starting from x_0 = A^H b, with the same D_w and the same learned lam at every iteration (weight
sharing, "WS"). The Table II variants change one ingredient each:

* CG-ET-NS: a separate denoiser per iteration (no sharing).
* SD-ET-WS: one steepest-descent step instead of CG for the data-consistency update.
* CG-PD-NS: per-iteration denoisers pre-trained on Gaussian noise (descending levels), fixed lam.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mrtutor.cg import solve_normal, steepest_descent_dc
from mrtutor.fft import channels_to_complex, complex_to_channels
from mrtutor.recipes import Option, Recipe, complex_mse, register
from mrtutor.sense import Sense

# Noise levels of the ten pre-trained denoisers of CG-PD-NS (paper, Sec. IV-A), used from the
# highest at the first iteration to the lowest at the last.
PD_NOISE_LEVELS = (0.25, 0.20, 0.17, 0.15, 0.13, 0.10, 0.08, 0.06, 0.04, 0.02)

# The initial gamma of the denoiser's last batch norm (see ``Denoiser``).
OUTPUT_SCALE = 0.1


class Denoiser(nn.Module):
    """D_w(x) = x + N_w(x): ``layers`` of 3x3 conv (no bias) + batch norm + ReLU, no ReLU at the end.

    Input and output are complex images (B, H, W); the CNN sees them as 2 real channels. With the
    paper's defaults (5 layers, 64 filters) it has 113,928 numbers in Table I's sense: conv weights
    plus BN's beta, gamma, running mean and running variance (the last two are buffers in PyTorch).

    ``output_scale`` is the initial gamma of the last batch norm. In training mode that batch norm
    gives N_w's output a per-channel rms of about gamma whatever the input, so gamma must start near
    the rms of what N_w should remove: about 0.03-0.1 on this book's max-1 images. PyTorch's default
    of 1 is 10-30 times too large; the CNN then learns to park the surplus in the sampled part of
    k-space, where the data-consistency step removes all but a fraction lam / (1 + lam) of it, and
    that leak caps the reconstruction near CG-SENSE's quality (chapter 2 measures this).
    """

    def __init__(self, layers: int = 5, features: int = 64, output_scale: float = OUTPUT_SCALE):
        super().__init__()
        if layers < 2:
            raise ValueError(f"layers must be >= 2, got {layers}")
        if not output_scale > 0:
            raise ValueError(f"output_scale must be > 0, got {output_scale}")
        widths = [2] + [features] * (layers - 1) + [2]
        blocks: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            if i < layers - 1:
                blocks.append(nn.ReLU(inplace=True))
        nn.init.constant_(blocks[-1].weight, output_scale)
        self.noise = nn.Sequential(*blocks)  # N_w: the alias and noise estimate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.estimate_noise(x)

    def estimate_noise(self, x: torch.Tensor) -> torch.Tensor:
        """N_w(x) as a complex image (B, H, W)."""
        # Under mixed precision the CNN answers in bfloat16; the complex image stays in x's precision.
        return channels_to_complex(self.noise(complex_to_channels(x)).to(x.real.dtype))


def register_log_lam(module: nn.Module, lam: float, learn: bool) -> None:
    """Give ``module`` a regularisation weight lam > 0, stored as ``log_lam`` so that it stays positive
    while it is trained (a parameter when ``learn``, else a buffer that checkpoints still save)."""
    log_lam = torch.tensor(float(lam)).log()
    if learn:
        module.log_lam = nn.Parameter(log_lam)
    else:
        module.register_buffer("log_lam", log_lam)


def table_one_count(model: nn.Module) -> int:
    """Parameters as MoDL's Table I counts them: trainable tensors plus BN running statistics."""
    trainable = sum(p.numel() for p in model.parameters())
    running = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return trainable + running


class MoDL(nn.Module):
    """Unrolled MoDL: ``iterations`` of denoise then data consistency.

    Args:
        iterations: K, the number of unrolled iterations.
        denoisers: one ``Denoiser`` shared by all iterations (MoDL, SD-ET-WS) or a list of K
            (CG-ET-NS, CG-PD-NS).
        dc: ``"cg"`` (exact solve by conjugate gradient) or ``"sd"`` (one steepest-descent step).
        lam: initial regularisation weight lam > 0.
        learn_lam: train lam with the network (True in MoDL; CG-PD-NS tunes it by hand).
        cg_iters, cg_tol: CG settings of the data-consistency solve (forward and backward).
    """

    def __init__(
        self,
        iterations: int = 10,
        denoisers: nn.Module | list[nn.Module] | None = None,
        dc: str = "cg",
        lam: float = 0.05,
        learn_lam: bool = True,
        cg_iters: int = 10,
        cg_tol: float = 1e-6,
    ):
        super().__init__()
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        if dc not in ("cg", "sd"):
            raise ValueError(f"dc must be 'cg' or 'sd', got {dc!r}")
        if not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam}")
        denoisers = Denoiser() if denoisers is None else denoisers
        if isinstance(denoisers, nn.Module):
            self.denoisers = nn.ModuleList([denoisers])
        else:
            if len(denoisers) != iterations:
                raise ValueError(f"got {len(denoisers)} denoisers for {iterations} iterations; expected one or {iterations}")
            self.denoisers = nn.ModuleList(denoisers)
        self.iterations = iterations
        self.dc = dc
        self.cg_iters = cg_iters
        self.cg_tol = cg_tol
        register_log_lam(self, lam, learn_lam)  # Table I counts lam as one parameter

    @property
    def shared(self) -> bool:
        return len(self.denoisers) == 1

    @property
    def lam(self) -> torch.Tensor:
        return self.log_lam.exp()

    def denoiser(self, k: int) -> nn.Module:
        return self.denoisers[0 if self.shared else k]

    def data_consistency(self, op: Sense, atb: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """argmin_x ||A x - b||^2 + lam ||x - z||^2 (CG), or one steepest-descent step from z (SD)."""
        lam = self.lam.to(atb.real.dtype)
        rhs = atb + lam * z
        if self.dc == "cg":
            return solve_normal(op, rhs, lam, max_iter=self.cg_iters, tol=self.cg_tol)
        return steepest_descent_dc(op, rhs, lam, x0=z, n_steps=1)

    def forward(self, kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor, return_steps: bool = False):
        """Reconstruct complex images (B, H, W) from masked k-space (B, C, H, W), maps, mask.

        With ``return_steps`` also returns the list of (x_k, N_w(x_k), D_w(x_k)) of every iteration
        (paper Fig. 5).
        """
        op = Sense(maps, mask)
        atb = op.adjoint(kspace)
        x = atb
        steps = []
        for k in range(self.iterations):
            denoiser = self.denoiser(k)
            if return_steps:
                noise = denoiser.estimate_noise(x)
                z = x + noise
                steps.append((x, noise, z))
            else:
                z = denoiser(x)
            x = self.data_consistency(op, atb, z)
        return (x, steps) if return_steps else x


def modl(iterations: int = 10, layers: int = 5, features: int = 64, lam: float = 0.05, cg_iters: int = 10,
         output_scale: float = OUTPUT_SCALE) -> MoDL:
    """MoDL (CG-ET-WS): one shared denoiser, CG data consistency, end-to-end training."""
    return MoDL(iterations, Denoiser(layers, features, output_scale), dc="cg", lam=lam, cg_iters=cg_iters)


def cg_et_ns(iterations: int = 10, layers: int = 5, features: int = 64, lam: float = 0.05, cg_iters: int = 10,
             output_scale: float = OUTPUT_SCALE) -> MoDL:
    """CG-ET-NS: a different denoiser at every iteration (no weight sharing)."""
    return MoDL(iterations, [Denoiser(layers, features, output_scale) for _ in range(iterations)], dc="cg", lam=lam,
                cg_iters=cg_iters)


def sd_et_ws(iterations: int = 10, layers: int = 5, features: int = 64, lam: float = 0.05,
             output_scale: float = OUTPUT_SCALE) -> MoDL:
    """SD-ET-WS: shared denoiser, one steepest-descent step for data consistency."""
    return MoDL(iterations, Denoiser(layers, features, output_scale), dc="sd", lam=lam)


def cg_pd_ns(layers: int = 5, features: int = 64, lam: float = 0.05, cg_iters: int = 10,
             noise_levels: tuple[float, ...] = PD_NOISE_LEVELS, output_scale: float = OUTPUT_SCALE) -> MoDL:
    """CG-PD-NS: one denoiser per noise level, highest first, with a fixed (hand-tuned) lam.

    The denoisers are trained on Gaussian noise alone (``python -m mrtutor.train cg_pd_ns``), not
    through the unrolled network; ``noise_levels`` are kept on the model for that training.
    """
    if not noise_levels or any(not s > 0 for s in noise_levels):
        raise ValueError(f"noise_levels must be a non-empty list of positive sigmas, got {noise_levels}")
    model = MoDL(len(noise_levels), [Denoiser(layers, features, output_scale) for _ in noise_levels], dc="cg", lam=lam,
                 learn_lam=False, cg_iters=cg_iters)
    model.noise_levels = tuple(float(s) for s in noise_levels)
    return model


# ---------------------------------------------------------------------------------------------
# How these models are trained (``python -m mrtutor.train modl|cg_et_ns|sd_et_ws|cg_pd_ns``)
# ---------------------------------------------------------------------------------------------

def denoising_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Pre-trained denoisers (CG-PD-NS): denoiser k learns to remove complex Gaussian noise of
    standard deviation ``model.noise_levels[k]`` (E|n|^2 = sigma^2) from the reference images. The
    sum of the ten independent losses trains the ten denoisers at once."""
    target = batch["target"]
    losses = [complex_mse(denoiser(target + sigma * torch.randn_like(target)), target)
              for denoiser, sigma in zip(model.denoisers, model.noise_levels)]
    return torch.stack(losses).sum()


# The grid of CG-PD-NS's lam search (the paper tuned it "to obtain the best performance").
LAM_GRID = tuple(float(v) for v in torch.logspace(-3, 1, 13))


@torch.no_grad()
def tune_lam(model: MoDL, validation_psnr) -> dict:
    """Set the fixed lam of ``model`` to the value of ``LAM_GRID`` with the best ``validation_psnr()``;
    return the score of every value tried and the lam chosen, for the record."""
    scores = {}
    for lam in LAM_GRID:
        model.log_lam.fill_(math.log(lam))
        scores[f"{lam:.4g}"] = validation_psnr()
    best = max(scores, key=scores.get)
    model.log_lam.fill_(math.log(float(best)))
    print(f"tuned lam = {model.lam.item():.4g} (validation PSNR {scores[best]:.2f} dB)")
    return {"lam_tuning": {"validation_psnr": scores, "lam": model.lam.item()}}


@torch.no_grad()
def copy_denoiser(model: MoDL, source: nn.Module) -> None:
    """MoDL's two-step schedule: the K = 1 weights of ``source`` start a K = 10 (or unshared) model.
    The shared denoiser is copied into every denoiser of ``model``, and lam is copied."""
    if not isinstance(source, MoDL):
        raise ValueError(f"--init: expected a MoDL checkpoint, got a {type(source).__name__}")
    model.log_lam.copy_(source.log_lam)
    for target in model.denoisers:
        target.load_state_dict(source.denoisers[0].state_dict())


MODL_OPTIONS = (
    Option("iterations", int, "unrolled iterations K", default=10, bound="> 0"),
    Option("layers", int, "convolution layers of each denoiser", default=5, bound="> 0"),
    Option("features", int, "filters per layer", default=64, bound="> 0"),
    Option("lam", float, "initial lam (CG-PD-NS: the fixed lam until it is tuned)", default=0.05, bound="> 0"),
    Option("cg_iters", int, "CG iterations of each data-consistency solve", default=10, bound="> 0"),
    Option("output_scale", float, f"initial gamma of the denoiser's last batch norm (default {OUTPUT_SCALE}; "
           "PyTorch's is 1)", bound="> 0"),
)


def _without(*names: str) -> tuple[Option, ...]:
    return tuple(option for option in MODL_OPTIONS if option.name not in names)


register(Recipe("modl", modl, "MoDL (CG-ET-WS): shared denoiser, CG data consistency", MODL_OPTIONS,
                init=copy_denoiser))
register(Recipe("cg_et_ns", cg_et_ns, "CG-ET-NS: one denoiser per iteration", MODL_OPTIONS, init=copy_denoiser))
register(Recipe("sd_et_ws", sd_et_ws, "SD-ET-WS: shared denoiser, steepest-descent DC", _without("cg_iters"),
                init=copy_denoiser))
register(Recipe("cg_pd_ns", cg_pd_ns, "CG-PD-NS: ten Gaussian denoisers, hand-tuned lam", _without("iterations"),
                loss=denoising_loss, finish=tune_lam))
