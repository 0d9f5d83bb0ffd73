"""How the stepsize networks of ``mrtutor.sgp`` are trained (Lee and Chun, Sec. 4): the greedy loss
of eq. 7, accumulated over the first K iterations as Algorithm 2 does, and the recipe ``sgp``
(``python -m mrtutor.train sgp --kind step --problem inpainting ...``) on the data of
``mrtutor.data.sparse_recovery``; and the paper's non-iterative comparison, a U-Net from the
measurements to the converged image (``UNetBaseline``, recipe ``sgp_unet``).

Eq. 7 asks the network for the stepsize t_k at x_k that brings T_{lam t_k}(x_k - t_k grad f(x_k)) as
close as it can to the converged solution x* (FISTA-b after 1200 iterations). Algorithm 2 trains on
the iterates of iterations 0, 1, ..., K in turn, each stage adding the next iteration's iterates to
the training set (the loss L_K of eq. 9 sums the greedy losses of all of them). Two departures, both
so that training sees the iterates the network meets at test time:

* The iterates are generated during training by the network being trained, with the step of
  ``sgp.solve`` (DRS and Armijo, ``sgp.sgp_iteration``): at gamma_1 = 1 and a full step this is
  eq. 8, x_k+1 = T_{lam t_L}(x~_k - t_L grad f(x~_k)). No gradient flows through x_k+1 (the loss of
  iteration k trains t_k only, as eq. 7 does). Algorithm 2 instead generates the iterates of
  iteration k once, with the network of stage k - 1, and trains stage by stage; here every batch
  trains on the whole of L_K (eq. 9) at once, which is Algorithm 2's last stage with its iterates
  kept current as the network changes.
* The loss is the mean over the K iterations of the mean squared coefficient error (eq. 9 sums
  halved squared norms): the same minimiser, on a scale that does not grow with K or the image size.
"""

from __future__ import annotations

import torch
from torch import nn

from mrtutor.data.sparse_recovery import (IMAGE_PROBLEMS, LAM, MRI_LAM, PROBLEMS, VIEWS, default_fraction,
                                          default_lam, recovery_problem, sparse_recovery_datasets,
                                          training_datasets)
from mrtutor.recipes import Option, Recipe, register
from mrtutor.recon import soft_threshold
from mrtutor.sgp import (DiagNet, DirectUNet, L1Synthesis, StepNet, _network_step, _per_sample, sgp_iteration,
                         solve, step_bounds)

KINDS = ("step", "diag")
# Images are real in [0, 1]; records state it (``Recipe.finish``) beside lam.
IMAGE_RANGE = (0.0, 1.0)
# The networks' step bounds, t_L = 1. Wider than solve's default [t_L / 100, 100 t_L]: the greedy
# step of inpainting at lam = 0.1 / 255 lies near 1000 t_L (the threshold lam t must reach about 0.4 to
# fill the missing pixels at all), while Fourier, deblurring and CT want 1 to 100. The untrained
# network's step, sqrt(T_MIN T_MAX), is t_L.
T_MIN, T_MAX = 1e-4, 1e4


def greedy_loss(problem: L1Synthesis, net: nn.Module, reference: torch.Tensor, iterations: int,
                diagonal: bool, drs: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """L_K of eq. 9 over the first ``iterations`` iterations of ``sgp.solve`` from the zero-filled start.

    First the iterates: for k = 0 .. K - 1, x_k+1 = ``sgp_iteration`` with the network's step at x_k,
    the network in evaluation mode and without gradients, as ``solve`` runs it at test time. Then the
    loss: the network, in the mode it is in, maps all K (x_k, grad f(x_k)) in one batch to d_k, and
    each term is mean (x* - T_{lam d_k}(x_k - d_k grad f(x_k)))^2 (eq. 6-7). One batch of all the
    iterates is Algorithm 2's training set, whose last stage holds the iterates of every iteration:
    batch normalisation then learns statistics of all iterations together, those it meets at test
    time. (Normalising each iteration's batch by itself trains statistics that the running averages
    cannot match: the iterates and gradients shrink from one iteration to the next.)

    Args:
        problem: the batch's ``L1Synthesis``; reference: its x* (B, H, W).
    Returns:
        the loss (a scalar with a graph to the network's weights), and statistics: ``network_used``
        (share of samples whose direction still held the network's part after the last iteration),
        ``log10_step`` (mean log10 of the steps of the loss's pass) and ``at_t_max`` (share of those
        steps within 1 % of the network's upper bound).
    """
    x = problem.adjoint(problem.y)
    t_lip = _per_sample(1.0 / problem.lipschitz_constant, x)
    low, high = step_bounds(t_lip, net.t_min, net.t_max)
    use_net = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    weight = torch.ones(x.shape[0], dtype=x.real.dtype, device=x.device)
    iterates, gradients = [], []
    training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for _ in range(iterations):
                grad = problem.gradient(x)
                iterates.append(x)
                gradients.append(grad)
                step = _network_step(net(x, grad), diagonal, x, low, high, t_lip) if use_net.any() else None
                x, use_net, weight = sgp_iteration(problem, x, grad, step, t_lip, use_net, weight, drs)
    finally:  # the caller's mode, even when a bad network raises
        net.train(training)
    xs, grads = torch.cat(iterates), torch.cat(gradients)  # (K B, H, W), iteration-major
    d = net(xs, grads)
    d = d.reshape(xs.shape) if diagonal else d.reshape(-1, 1, 1)
    candidate = soft_threshold(xs - d * grads, problem.lam.repeat(iterations, 1, 1) * problem.weights * d)  # prox
    loss = (reference.repeat(iterations, 1, 1) - candidate).abs().pow(2).mean()
    with torch.no_grad():
        stats = {"network_used": use_net.float().mean().item(), "log10_step": d.log10().mean().item(),
                 "at_t_max": (d >= 0.99 * net.t_max).float().mean().item()}
    return loss, stats


class LearnedSGP(nn.Module):
    """Step-learned (``kind="step"``, ``StepNet``) or Diag-learned (``kind="diag"``, ``DiagNet``) SGP
    for one sparse-recovery problem, trained for its first ``iterations`` iterations.

    Called as ``model(measurement, mask=None, maps=None)`` on a batch of measurements (as the datasets of
    ``mrtutor.data.sparse_recovery`` hold them; ``maps`` for ``mri``), it returns the image (B, H, W) after
    ``iterations`` iterations of ``sgp.solve`` with the network. ``problem``, ``fraction`` and ``noise`` name
    the data it was trained on (``fraction`` default: ``default_fraction``); ``lam`` (default: ``default_lam``;
    a buffer, so training records it) and ``views`` define the problem it solves. For ``mri`` the network
    sees the real and imaginary parts of x_k and grad f(x_k).
    The U-Net has widths (features, 2 features, 4 features); its steps lie in [t_min, t_max], which
    are absolute: every problem here has ||A|| = 1 (CT after its normalisation), so t_L = 1.
    """

    def __init__(self, kind: str = "step", problem: str = "inpainting", fraction: float | None = None,
                 noise: float = 0.0, iterations: int = 10, lam: float | None = None, views: int = VIEWS,
                 features: int = 16, t_min: float = T_MIN, t_max: float = T_MAX):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {PROBLEMS}, got {problem!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        self.kind, self.problem, self.noise = kind, problem, noise
        self.fraction = default_fraction(problem) if fraction is None else fraction
        self.iterations, self.views = iterations, views
        widths = (features, 2 * features, 4 * features)
        self.net = (StepNet if kind == "step" else DiagNet)(widths, t_min, t_max, complex_inputs=problem == "mri")
        lam = default_lam(problem) if lam is None else lam
        self.register_buffer("lam", torch.tensor(float(lam)), persistent=False)

    @property
    def method(self) -> str:
        """The ``sgp.solve`` method this network serves."""
        return f"sgp_{self.kind}"

    def problem_for(self, measurement: torch.Tensor, mask: torch.Tensor | None = None,
                    maps: torch.Tensor | None = None) -> L1Synthesis:
        """The ``L1Synthesis`` of a batch of measurements (with their masks: inpainting, Fourier, MRI; maps: MRI)."""
        return recovery_problem(self.problem, measurement, mask, self.lam.item(), self.views, maps)

    def forward(self, measurement: torch.Tensor, mask: torch.Tensor | None = None,
                maps: torch.Tensor | None = None) -> torch.Tensor:
        return solve(self.problem_for(measurement, mask, maps), self.method, self.iterations, net=self.net,
                     t_min=self.net.t_min, t_max=self.net.t_max).image


class UNetBaseline(nn.Module):
    """The paper's non-iterative comparison for one sparse-recovery problem: a ``DirectUNet`` that maps
    the zero-filled image A^H y of a batch's measurements to the image W^T x* of the converged solution
    (Lee and Chun, Sec. 6.1: "trained to yield ground truth converged images for (10) from input
    measurements"). Called as ``model(measurement, mask=None)`` like ``LearnedSGP``; the problem's
    options mean what they mean there; ``no_skip`` builds the U-Net without its input-to-output skip.
    """

    def __init__(self, problem: str = "inpainting", fraction: float | None = None, noise: float = 0.0,
                 lam: float | None = None, views: int = VIEWS, features: int = 16, no_skip: bool = False):
        super().__init__()
        if problem not in IMAGE_PROBLEMS:
            raise ValueError(f"problem must be one of {IMAGE_PROBLEMS} (the paper's), got {problem!r}")
        self.problem, self.noise, self.views = problem, noise, views
        self.fraction = default_fraction(problem) if fraction is None else fraction
        self.net = DirectUNet((features, 2 * features, 4 * features), skip=not no_skip)
        lam = default_lam(problem) if lam is None else lam
        self.register_buffer("lam", torch.tensor(float(lam)), persistent=False)

    def problem_for(self, measurement: torch.Tensor, mask: torch.Tensor | None = None) -> L1Synthesis:
        """The ``L1Synthesis`` of a batch, as ``LearnedSGP.problem_for`` (its x* is what the network learns)."""
        return recovery_problem(self.problem, measurement, mask, self.lam.item(), self.views)

    def forward(self, measurement: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        problem = self.problem_for(measurement, mask)
        return self.net(problem.op.adjoint(problem.y))


def unet_loss(model: UNetBaseline, batch: dict) -> torch.Tensor:
    """Mean squared error between the network's image and the converged image W^T x*."""
    problem = model.problem_for(batch["measurement"], batch.get("mask"))
    return (model.net(problem.op.adjoint(problem.y)) - problem.image(batch["reference"])).pow(2).mean()


def sgp_loss(model: LearnedSGP, batch: dict) -> torch.Tensor:
    """The greedy loss L_K (``greedy_loss``) of a batch; its statistics wait in ``model.stats`` for the monitor."""
    problem = model.problem_for(batch["measurement"], batch.get("mask"), batch.get("maps"))
    loss, model.stats = greedy_loss(problem, model.net, batch["reference"], model.iterations, model.kind == "diag")
    return loss


def sgp_reconstruct(model: LearnedSGP, batch: dict) -> torch.Tensor:
    """What validation scores: the image after K iterations of ``solve`` with the network."""
    return model(batch["measurement"], batch.get("mask"), batch.get("maps"))


def unet_reconstruct(model: UNetBaseline, batch: dict) -> torch.Tensor:
    """What validation scores: the U-Net's image."""
    return model(batch["measurement"], batch.get("mask"))


def sgp_monitor(model: LearnedSGP) -> dict[str, float]:
    """The statistics of the last training batch (``greedy_loss``)."""
    return dict(getattr(model, "stats", {}))


def sgp_finish(model: LearnedSGP | UNetBaseline, validation_psnr) -> dict:
    """What the record adds: the problem the network was trained for, lam and the image scale."""
    return {"sparse_recovery": {"problem": model.problem, "fraction": model.fraction, "noise": model.noise,
                                "lam": model.lam.item(), "image_range": list(IMAGE_RANGE),
                                "views": model.views if model.problem == "ct" else None}}


def mri_sgp(kind: str = "step", iterations: int = 10, lam: float = MRI_LAM, features: int = 16,
            t_min: float = T_MIN, t_max: float = T_MAX) -> LearnedSGP:
    """``LearnedSGP`` for chapter 1's MRI problem (``problem="mri"``: the demo k-space at 6x, chapter 1's weight)."""
    return LearnedSGP(kind, "mri", iterations=iterations, lam=lam, features=features, t_min=t_min, t_max=t_max)


def mri_recovery_datasets(args):
    """``Recipe.data`` of ``sgp_mri``: the training and validation slices of the MRI problem with x* for ``args.lam``."""
    return training_datasets("mri", tier=args.tier or None, lam=args.lam, seed=args.seed)


STEP_OPTIONS = (
    Option("kind", str, "one stepsize per image (step) or one per wavelet coefficient (diag)", default="step",
           choices=KINDS),
    Option("iterations", int, "K, the first iterations the loss covers (Algorithm 2)", default=10, bound="> 0"),
    Option("features", int, "U-Net widths (f, 2f, 4f)", default=16, bound="> 0"),
    Option("t_min", float, "smallest step the network may give (t_L = 1)", default=T_MIN, bound="> 0"),
    Option("t_max", float, "largest step the network may give (t_L = 1)", default=T_MAX, bound="> 0"),
)
IMAGE_OPTIONS = (
    Option("problem", str, "the sparse-recovery problem", default="inpainting", choices=IMAGE_PROBLEMS),
    Option("fraction", float, "sampled share of inpainting and Fourier (the paper trains at 0.5)", default=0.5,
           bound="in (0, 1)"),
    Option("noise", float, "standard deviation of the measurement noise, images in [0, 1]", default=0.0,
           bound=">= 0"),
    Option("lam", float, "l1 weight for images in [0, 1] (the paper's 0.1 on [0, 255] is 0.1 / 255)",
           default=LAM, bound=">= 0"),
    Option("views", int, "projection angles of CT", default=VIEWS, bound="> 0"),
)

register(Recipe("sgp", LearnedSGP, "Learned stepsizes (Step-learned) or diagonal scalings (Diag-learned) for "
                "scaled gradient projection on l1-wavelet sparse recovery (Lee and Chun)", STEP_OPTIONS + IMAGE_OPTIONS,
                loss=sgp_loss, monitor=sgp_monitor, finish=sgp_finish, bf16=False, data=sparse_recovery_datasets,
                reconstruct=sgp_reconstruct))

register(Recipe("sgp_mri", mri_sgp, "Learned stepsizes or diagonal scalings for scaled gradient projection on "
                "chapter 1's multi-coil l1-wavelet reconstruction (the demo k-space at 6x)", STEP_OPTIONS + (
    Option("lam", float, "l1 weight (chapter 1's choice on its validation slices at 6x)", default=MRI_LAM,
           bound=">= 0"),
), loss=sgp_loss, monitor=sgp_monitor, finish=sgp_finish, bf16=False, data=mri_recovery_datasets,
   reconstruct=sgp_reconstruct))

register(Recipe("sgp_unet", UNetBaseline, "The non-iterative comparison of Lee and Chun: a U-Net from the "
                "zero-filled image A^H y to the converged image W^T x* of l1-wavelet sparse recovery", (
    *IMAGE_OPTIONS,
    Option("features", int, "U-Net widths (f, 2f, 4f)", default=16, bound="> 0"),
    Option("no_skip", bool, "leave out the input-to-output skip: the U-Net's output is its last layer alone"),
), loss=unet_loss, finish=sgp_finish, bf16=False, data=sparse_recovery_datasets, reconstruct=unet_reconstruct))
