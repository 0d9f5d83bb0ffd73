"""Write drafts/03_mol.ipynb, the MOL chapter, in its stored form (no outputs, no execution counts).

    .venv/bin/python drafts/make_03_mol.py

The chapter's text and code live here as plain strings, one per cell, so that edits are reviewed as
code; the notebook is regenerated from them with stable cell ids.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nbformat

OUT = Path(__file__).resolve().parent / "03_mol.ipynb"
CELLS: list[tuple[str, str]] = []


def md(text: str) -> None:
    CELLS.append(("markdown", text.strip("\n")))


def code(text: str) -> None:
    CELLS.append(("code", text.strip("\n")))


# ------------------------------------------------------------------------------------------------ intro

md(r"""
# MOL: monotone operators and deep equilibrium reconstruction

Chapter 2's MoDL unrolls ten iterations and backpropagates through all of them, so its training memory grows with
the number of iterations, and nothing promises that ten steps come near the minimum of any cost. Monotone operator
learning (MOL) {cite}`pramanik2022mol` keeps MoDL's two ingredients, a CNN and an exact data-consistency solve, but
iterates them *to convergence*, as a deep equilibrium (DEQ) model {cite}`bai2019deq,gilton2021deq`, and constrains
the CNN so that the iteration provably converges to a unique point that depends stably on the measurements.

This chapter builds the pieces from `mrtutor` and proves each one numerically: the monotonicity of $I - H$, the step
size that guarantees convergence, the fixed-point iteration with and without Anderson acceleration, the implicit
gradient, the memory that does not grow with the iterations, and the Lipschitz regulariser. It trains a tiny MOL
live, then loads the demo-tier checkpoints to rebuild the paper's Fig. 2 and Table 1, and measures the robustness
bound of its Prop. 2.4.

By the end you can explain why $I - H$ is monotone when $H$ is a contraction, choose the step size that makes the
iteration converge, differentiate through a fixed point without storing the iterations, and judge what the
guarantees cost in image quality.
""")

code(r'''
# Setup (JupyterLab, Colab): when mrtutor is missing, clone the book's repository (the package,
# its data and checkpoints) and install it; then print the tier (MRTUTOR_MODE) and the device.
import importlib
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("mrtutor") is None:
    repo = "/content/mrtutor" if os.path.isdir("/content") else os.path.expanduser("~/mrtutor")
    if not os.path.isdir(repo):
        subprocess.run(["git", "clone", "--depth", "1", "https://github.com/mrtutor/mrtutor", repo], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{repo}[data]"], check=True)
    sys.path.insert(0, repo)  # the editable install is seen by new kernels; this one needs the path
    importlib.invalidate_caches()

import mrtutor.config

print(mrtutor.config.describe())
''')

code(r'''
import copy
import inspect
import time
import warnings
import weakref

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display
from tqdm.auto import tqdm

from mrtutor import checkpoints, config, data, evaluate, recon, viz
from mrtutor.deq import DEQConvergenceWarning, DeepEquilibrium, _anderson_mix, fixed_point
from mrtutor.modl import modl
from mrtutor.mol import (MOL, MOLNet, SpectralNormConv2d, alpha_bound, alpha_condition, contraction_factor,
                         lipschitz_estimate, lipschitz_penalty, mol_lr, mol_sn, robustness_bound)
from mrtutor.sense import Sense
from mrtutor.train import mol_loss, mol_monitor, reconstruction_loss

TIER = config.mode()
SETTINGS = config.settings()
DEVICE = config.device()
BASELINE = SETTINGS["baseline_lambda"]  # the CG-SENSE weight tuned in chapter 1
config.seed_everything(0)
print(f"tier {TIER}: images {SETTINGS['image_shape']}, {SETTINGS['num_coils']} coils, noise sigma {SETTINGS['noise_sigma']}")
''')

# ------------------------------------------------------------------------------------------------ idea

md(r"""
## The idea: from an unrolled network to an equilibrium

Like chapter 1's compressed sensing, MOL starts from a regularised least-squares problem (the paper's eq. 1), with
$A$ the SENSE operator of chapter 1 and $\varphi$ a convex prior:

$$
x^* = \arg\min_x \; \frac{\lambda}{2}\|Ax - b\|_2^2 + \varphi(x) .
$$

The paper assumes that the largest eigenvalue of $A^HA$ is 1; ours is at most 1, because the FFT is orthonormal, the
mask is 0/1 and the coil maps have unit sum of squares at every pixel, so $\|A\| \le 1$. When $\varphi$ is differentiable the minimiser is
where the gradient vanishes (eq. 2):

$$
\underbrace{\lambda A^H(Ax - b)}_{G(x)} + \underbrace{\nabla\varphi(x)}_{F(x)} = 0 .
$$

MOL replaces $F$ by a learned operator $F = I - H$, with $H$ a CNN, and solves eq. 2 by *forward-backward
splitting*: an explicit ("forward") step on $F$, then an exact implicit ("backward") step on $G$ (eq. 4),
$x_{k+1} = (I + \alpha G)^{-1}\big(x_k - \alpha F(x_k)\big)$. With $F = I - H$ this is the block of the paper's
Fig. 1 (eq. 5):

$$
x_{k+1} = Q^{-1}\big((1-\alpha)\,x_k + \alpha H(x_k) + \alpha\lambda A^H b\big), \qquad Q = I + \alpha\lambda A^H A .
$$

With $\alpha = 1$ this is exactly MoDL's iteration from chapter 2, with $H$ in the role of the denoiser and a data
weight of $1/\lambda$ (MOL's $\lambda$ multiplies the data term, MoDL's the prior). What changes is how the block is
run and trained. MOL iterates eq. 5 until $x_{k+1} = x_k$ instead of a fixed $K$ times, so its output is the
solution $x^*$ of eq. 2 whatever the starting point, and it is trained through that equation rather than through
the iterations. Three questions follow, answered in this order: when does eq. 5 converge (monotone operators and
the step $\alpha$), how does one differentiate $x^*$ (implicit gradients), and how does one keep the learned $H$
where the guarantees hold (spectral normalisation or a Lipschitz penalty).
""")

# ------------------------------------------------------------------------------------------------ monotone

md(r"""
## Monotone operators, and why $I - H$ is one

An operator $F$ is *$m$-monotone* when, for all images $x, y$ (eq. 3; for complex images the inner product's real
part),

$$
\mathrm{Re}\,\langle x - y,\; F(x) - F(y)\rangle \;\ge\; m\,\|x - y\|_2^2 .
$$

The gradient of an $m$-strongly convex function is $m$-monotone, so monotone operators generalise "the gradient of a
convex prior", and eq. 2 with an $m$-monotone $F$ ($m > 0$) has exactly one solution. The converse does not hold: a
monotone operator need not be the gradient of anything, so a learned monotone $F$ is more general than a learned
convex prior.

Prop. 2.2 of the paper takes two lines. With $F = I - H$ and $\mathrm{Lip}(H) \le 1 - m$, Cauchy-Schwarz gives

$$
\mathrm{Re}\,\langle x-y, F(x)-F(y)\rangle = \|x-y\|^2 - \mathrm{Re}\,\langle x-y, H(x)-H(y)\rangle
\;\ge\; \big(1 - \mathrm{Lip}(H)\big)\|x-y\|^2 \;\ge\; m\|x-y\|^2 ,
$$

and the triangle inequality gives $\mathrm{Lip}(F) \le 1 + \mathrm{Lip}(H) \le 2 - m$. So *any* residual network is
monotone once its branch $H$ is a contraction by $1 - m$. `mrtutor.mol.MOLNet` is the paper's $H$: five 3x3
convolutions with ReLUs as in MoDL, but with biases and without batch normalisation, whose Lipschitz constant is hard
to bound (Sec. 3). With `spectral_bound` every convolution is normalised so that the product of their operator norms,
an upper bound on $\mathrm{Lip}(H)$ because ReLU is 1-Lipschitz, stays below the bound (the paper's MOL-SN):
""")

code(r'''
print(inspect.getsource(MOLNet.__init__))
print(inspect.getsource(MOLNet.forward))
print(inspect.getsource(SpectralNormConv2d.normalised_weight))
''')

md(r"""
A numeric check of Prop. 2.2 on random pairs. We take an $H$ with $\mathrm{Lip}(H) < 1 - m$ by construction
(spectral normalisation for $m = 0.1$), with its weights first scaled up three-fold so that the normalisation really
clips them, and measure on 256 pairs far apart and 256 pairs close together (float64, 24 x 24 images) the
*monotonicity ratio* $\mathrm{Re}\langle x-y, F(x)-F(y)\rangle / \|x-y\|^2$, which must be at least $m$, and the
Lipschitz ratio $\|F(x)-F(y)\| / \|x-y\|$, which must be at most $2 - m$.
""")

code(r'''
M = 0.1  # the monotonicity asked for in this chapter's experiments (the package's default)


def ratios(net, x, y):
    """Per pair: Re<x - y, F(x) - F(y)> / ||x - y||^2 and ||F(x) - F(y)|| / ||x - y||, with F = I - H."""
    d = (x - y).flatten(1)
    dF = ((x - net(x)) - (y - net(y))).flatten(1)
    return (d.conj() * dF).real.sum(1) / d.abs().pow(2).sum(1), dF.norm(dim=1) / d.norm(dim=1)


config.seed_everything(0)
sn_net = MOLNet(layers=5, features=16, spectral_bound=0.99 * (1 - M), spectral_iters=200).double()
free_net = MOLNet(layers=5, features=16).double()  # the same network without the constraint
with torch.no_grad():
    for net in (sn_net, free_net):
        for conv in net.convs():
            conv.weight.mul_(3.0)
    x = torch.randn(256, 24, 24, dtype=torch.complex128)
    pairs = {"far apart": torch.randn_like(x), "close (1%)": x + 0.01 * torch.randn_like(x)}
    sn_net(x[:1])  # runs the power iterations for this image size
    lip_bound = sn_net.lipschitz_upper_bound()
    print(f"normalised H: product of the layers' operator norms {lip_bound:.3f} < 1 - m = {1 - M:.1f}")
    for label, y in pairs.items():
        mono, lip = ratios(sn_net, x, y)
        print(f"  {label:10s}: monotonicity ratio >= {mono.min():.4f} (m = {M}), "
              f"Lipschitz ratio of F <= {lip.max():.4f} (2 - m = {2 - M})")
        assert mono.min() >= M and lip.max() <= 2 - M
assert lip_bound < 1 - M
# NBVAL_CHECK_OUTPUT
''')

md(r"""
The ratios sit close to 1, far above $m$: random pairs barely excite $H$. A sharper test looks for the *worst* pair,
by gradient descent on the monotonicity ratio over the offset $y - x$. Against the normalised $H$ it cannot get below
$m$; against the same network without normalisation (and the same enlarged weights) it finds pairs at which
$F = I - H$ is not monotone at all: the ratio turns negative.
""")

code(r'''
def worst_pair_search(net, steps=30, seed=1):
    """Minimise the monotonicity ratio over offsets d = y - x with Adam; the smallest ratio at each step."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(8, 24, 24, dtype=torch.complex128, generator=g)
    d = (0.1 * torch.randn(8, 24, 24, dtype=torch.complex128, generator=g)).requires_grad_()
    optimiser = torch.optim.Adam([d], lr=1e-2)
    history = []
    for _ in range(steps):
        mono, _ = ratios(net, x0, x0 + d)
        history.append(mono.min().item())
        optimiser.zero_grad()
        mono.sum().backward()
        optimiser.step()
    return history


searches = {"normalised H (MOL-SN)": worst_pair_search(sn_net), "unconstrained H": worst_pair_search(free_net)}
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for label, history in searches.items():
    ax.plot(history, label=label)
ax.axhline(M, color="k", ls="--", lw=1, label=f"m = {M}")
ax.set(xlabel="search step", ylabel="smallest monotonicity ratio", title="looking for a pair that breaks eq. 3")
ax.legend()
plt.show()
for label, history in searches.items():
    print(f"{label}: smallest ratio found {min(history):.3f}")
assert min(searches["normalised H (MOL-SN)"]) >= M and min(searches["unconstrained H"]) < 0
# NBVAL_CHECK_OUTPUT
''')

md(r"""
Note how little of its allowance the normalised network uses: its layers' norms multiply to almost $1 - m = 0.9$,
so eq. 3 would allow a monotonicity ratio down to $0.1$, yet the worst pair found still has a ratio of about $0.99$.
The product of layer norms is a very conservative
bound on a deep network's Lipschitz constant, which is the paper's argument against spectral normalisation: it
buys the guarantee with representation power.
""")

# ------------------------------------------------------------------------------------------------ alpha

md(r"""
## The step size: Props. 2.1 and 2.3

Forward-backward splitting converges when $F$ is $m$-monotone and $L$-Lipschitz and $\alpha < 2m/L^2$ (Prop. 2.1).
The reason is that the forward step $I - \alpha F$ is then a contraction:

$$
\|(I-\alpha F)(x) - (I-\alpha F)(y)\|^2 = \|x-y\|^2 - 2\alpha\,\mathrm{Re}\langle x-y, F(x)-F(y)\rangle
+ \alpha^2\|F(x)-F(y)\|^2 \le \big(1 - 2\alpha m + \alpha^2 L^2\big)\|x-y\|^2 ,
$$

and the backward step $Q^{-1}$ is non-expansive, since $Q = I + \alpha\lambda A^HA \succeq I$. With $L = 2 - m$ from
Prop. 2.2 the condition becomes Prop. 2.3's $\alpha < 2m/(2-m)^2$, and the paper takes that limit as its step
(Sec. 3). Exactly at the limit the factor $\sqrt{1 - 2\alpha m + \alpha^2(2-m)^2}$ equals 1, so the bound alone gives
no contraction. It still converges because $\mathrm{Lip}(H) < 1 - m$ is strict: then $F$ is more than $m$-monotone
and less than $(2-m)$-Lipschitz, and the factor drops below 1 by an amount that depends on how much smaller
$\mathrm{Lip}(H)$ really is. `mrtutor.mol` has the bound, the contraction
factor and eq. 6's robustness constant (next section) as three small functions:
""")

code(r'''
for function in (alpha_bound, contraction_factor, robustness_bound):
    print(inspect.getsource(function))
''')

md(r"""
`alpha_condition` checks and prints all of it (and Prop. 2.2 for a measured Lipschitz constant). Two statements of the
paper to verify: at $\alpha = 1$, MoDL's iteration, convergence needs $m > 0.76$, that is $\mathrm{Lip}(H) < 0.24$
(Sec. 2.3); and at the paper's own step the contraction factor is exactly 1.
""")

code(r'''
m_modl = 3 - 5**0.5  # alpha = 1 <= 2m / (2 - m)^2  <=>  m^2 - 6m + 4 <= 0  <=>  m >= 3 - sqrt(5)
print(f"alpha = 1 needs m >= 3 - sqrt(5) = {m_modl:.4f}, i.e. Lip(H) <= {1 - m_modl:.4f}\n")
for condition in (alpha_condition(1.0, 0.77, lip=0.22), alpha_condition(1.0, 0.76, lip=0.24),
                  alpha_condition(alpha_bound(M), M, lam=1.0)):
    print(condition, end="\n\n")
assert abs(alpha_bound(m_modl) - 1) < 1e-12
assert alpha_condition(1.0, 0.77).alpha_ok and not alpha_condition(1.0, 0.76).alpha_ok
assert abs(contraction_factor(alpha_bound(M), M) - 1) < 1e-12
# NBVAL_CHECK_OUTPUT
''')

md(r"""
## Robustness: eq. 6 and its tightest form

Prop. 2.4 bounds how far the fixed point moves when the measurements move from $a$ to $b$ (eq. 6):

$$
\|x^*(a) - x^*(b)\|_2 \le \frac{\alpha\lambda}{1 - \sqrt{1 - 2\alpha m + \alpha^2(2-m)^2}}\;\|a - b\|_2 .
$$

At the paper's step the square root is 1 and the bound is infinite. But the fixed point does not depend on $\alpha$:
eq. 2 has no $\alpha$ in it, only the iteration that finds its solution does. So every admissible $\alpha$ bounds
the same $x^*$, and the best bound is the limit $\alpha \to 0$, $\lambda/m$, which the paper also notes. It follows
directly from eq. 2: subtract eq. 2 at $b$ from eq. 2 at $a$ and take the inner product with
$\delta = x^*(a) - x^*(b)$,

$$
\lambda\|A\delta\|^2 + \mathrm{Re}\,\langle \delta, F(x^*(a)) - F(x^*(b))\rangle = \lambda\,\mathrm{Re}\,\langle A\delta, a - b\rangle
\quad\Rightarrow\quad m\|\delta\|^2 \le \lambda\,\|A\|\,\|\delta\|\,\|a-b\| ,
$$

so $\|\delta\| \le (\lambda/m)\,\|a-b\|$ with our $\|A\| \le 1$. That constant is the paper's trade-off in one number:
a larger Lipschitz constant of $H$ (a more expressive network) allows only a smaller $m$, and with it a larger
amplification of measurement perturbations. The constant of eq. 6 against $\alpha$:
""")

code(r'''
fig, ax = plt.subplots(figsize=(5.5, 3.5))
for m in (0.1, 0.3, 0.5):
    alphas = np.linspace(1e-6, 0.999, 300) * alpha_bound(m)
    constants = np.array([robustness_bound(a, m, lam=1.0) for a in alphas])
    line, = ax.semilogy(alphas / alpha_bound(m), constants, label=f"m = {m}")
    ax.axhline(1 / m, ls=":", lw=1, color=line.get_color())
    assert abs(constants[0] - 1 / m) < 1e-3 / m and np.all(np.diff(constants) > 0)
ax.set(xlabel="alpha / (2m / (2 - m)^2)", ylabel="eq. 6 constant / lambda", title="eq. 6 (dotted: the limit 1 / m)")
ax.legend()
plt.show()
print("eq. 6's constant rises with alpha from lambda / m and is infinite at the paper's alpha")
# NBVAL_CHECK_OUTPUT
''')

# ------------------------------------------------------------------------------------------------ fixed point

md(r"""
## Finding the fixed point

`MOL.step` is eq. 5. Like MoDL's data-consistency layer, $Q^{-1}$ is a CG solve, chapter 2's `solve_normal` after a
rescaling ($Q = \alpha\lambda(A^HA + \mu I)$ with $\mu = 1/(\alpha\lambda)$), and `MOL.forward` hands the map
$x \mapsto$ `step(x)` to a deep-equilibrium solver, starting from $A^Hb$:
""")

code(r'''
print(inspect.getsource(MOL.step))
print(inspect.getsource(MOL.forward))
''')

md(r"""
The solver, `mrtutor.deq.fixed_point`, iterates $x_{k+1} = f(x_k)$ until every sample's relative residual
$\|f(x_k) - x_k\| / \|f(x_k)\|$ is below `tol`, and says so loudly (a `DEQConvergenceWarning`) when it stops at
`max_iter` instead. Plain iteration converges like $\rho^k$ for a contraction factor $\rho$ that is close to 1 here:
in the null space of $A$ the solve $Q^{-1}$ does nothing, and eq. 5 moves $x$ by only $\alpha\,(H(x) - x)$ per step,
with $\alpha = 0.055$ at $m = 0.1$. *Anderson acceleration*, which Gilton et al. use for their DEQ
{cite}`gilton2021deq`, instead mixes the last few $f(x_i)$ with the weights that make their residuals cancel best, a
tiny least-squares problem per step:
""")

code(r'''
print(inspect.getsource(_anderson_mix))
''')

md(r"""
Does it pay off? Below, an untrained MOL-SN (so $\mathrm{Lip}(H) < 1 - m$ holds by construction and convergence is
guaranteed) on one test slice at 4x, solved to a relative residual of $10^{-5}$ by plain iteration and by Anderson
with a history of 5. The dashed line is the rate that the argument of Prop. 2.3 guarantees for this network: with
its layer-norm bound $\mathrm{Lip}(H) \le \ell$, $F$ is $(1-\ell)$-monotone and $(1+\ell)$-Lipschitz, so
$\rho = \sqrt{1 - 2\alpha(1-\ell) + \alpha^2(1+\ell)^2}$.
""")

code(r'''
test_4x = data.demo_dataset("test", mask_fn="variable_density_2d", acceleration=4)
head_area = [(test_4x[i]["target"].abs() > 0.1).sum().item() for i in range(len(test_4x))]
SLICE = int(np.argmax(head_area))  # the test slice with the most head in it
one = {k: v[None].to(DEVICE) for k, v in test_4x[SLICE].items() if torch.is_tensor(v)}
op = Sense(one["maps"], one["mask"])
atb = op.adjoint(one["kspace"])

config.seed_everything(0)
untrained = mol_sn(layers=5, features=16, m=M).to(DEVICE).eval()


def plain_and_anderson(model, tol=1e-5, max_iter=3000):
    """Solve eq. 5 for ``model`` on the slice above, plain and with Anderson: {name: (x, info, seconds)}."""
    runs = {}
    with torch.no_grad():
        model.net(atb)  # MOL-SN: the power iterations for this image size, outside the timing
        for name, history in (("plain", 0), ("Anderson (5)", 5)):
            tic = time.perf_counter()
            x, info = fixed_point(lambda v: model.step(v, op, atb), atb, max_iter=max_iter, tol=tol, anderson=history)
            runs[name] = (x, info, time.perf_counter() - tic)
    return runs


runs = plain_and_anderson(untrained)
ell = untrained.net.lipschitz_upper_bound()
rho = contraction_factor(untrained.alpha, 1 - ell)  # m = 1 - ell, so (2 - m) = 1 + ell
fig, ax = plt.subplots(figsize=(5.5, 3.5))
for name, (_, info, seconds) in runs.items():
    ax.semilogy(info.residual_history[:, 0].cpu(), label=f"{name}: {info.iterations} iterations, {seconds:.2f} s")
steps = np.arange(runs["plain"][1].iterations)
ax.semilogy(steps, runs["plain"][1].residuals[0][0].item() * rho**steps, "k--", lw=1,
            label=f"guaranteed rate, rho = {rho:.4f}")
ax.axhline(1e-5, color="gray", lw=0.5)
ax.set(xlabel="iteration k", ylabel="relative residual", ylim=(1e-6, 1),
       title=f"eq. 5 on one test slice (untrained MOL-SN, Lip(H) <= {ell:.2f})")
ax.legend(fontsize=8)
plt.show()
''')

code(r'''
(x_plain, plain, t_plain), (x_anderson, anderson, t_anderson) = runs.values()
gap = ((x_plain - x_anderson).norm() / x_plain.norm()).item()
with torch.no_grad():  # eq. 2 at the solution: lam A^H (A x - b) + x - H(x) = 0
    eq2 = untrained.lam * (op.normal(x_anderson) - atb) + x_anderson - untrained.net(x_anderson)
eq2_residual = (eq2.norm() / (untrained.lam * atb).norm()).item()
print(f"plain: {plain.iterations} iterations, {t_plain:.2f} s; Anderson: {anderson.iterations} iterations, "
      f"{t_anderson:.2f} s ({plain.iterations / anderson.iterations:.1f}x fewer iterations, "
      f"{t_plain / t_anderson:.1f}x less time)")
print(f"the same fixed point: relative difference {gap:.1e}; eq. 2 holds there to {eq2_residual:.1e}")
assert bool(plain.converged.all()) and bool(anderson.converged.all())
assert anderson.iterations < plain.iterations and gap < 1e-3 and eq2_residual < 1e-4
# NBVAL_CHECK_OUTPUT
''')

md(r"""
Anderson's extra work per step (a 5 x 5 solve and a few vector combinations) is small next to a CNN and a CG solve,
so its saving in iterations is a saving in time. The measured rate is also far better than the guaranteed one: the
bound has to cover the worst direction, while $Q^{-1}$ shrinks every direction that $A$ sees.
""")

# ------------------------------------------------------------------------------------------------ implicit gradient

md(r"""
## Gradients through the fixed point, without the iterations

Training needs $\partial L / \partial\theta$ for the weights $\theta$ of $H$ (and for $\lambda$). The fixed point
satisfies $x^* = f(x^*, \theta)$; differentiating both sides (the implicit function theorem),

$$
\frac{\partial x^*}{\partial\theta} = (I - J)^{-1}\frac{\partial f}{\partial \theta}, \quad J = \frac{\partial f}{\partial x}\Big|_{x^*},
\qquad\text{so}\qquad
\frac{\partial L}{\partial\theta} = g^H \frac{\partial f}{\partial\theta}\Big|_{x^*}
\quad\text{with}\quad g = J^H g + \frac{\partial L}{\partial x^*} .
$$

The vector $g$ is itself a fixed point, of a linear map made of vector-Jacobian products, and it converges under the
same condition as the forward iteration, because $J$ is the Jacobian of the same contraction: these are the paper's
"Jacobian iterations". No intermediate iterate is needed, only $x^*$. `DeepEquilibrium` does this with a backward
hook: the forward iteration runs without autograd, one more application of $f$ attaches $x^*$ to the graph, and the
hook replaces the incoming gradient by $g$:
""")

code(r'''
print(inspect.getsource(DeepEquilibrium.__call__))
''')

md(r"""
Three gradients of the same loss must agree: the implicit one; the one autograd gets by unrolling eq. 5 until it has
converged and backpropagating through every step; and central finite differences along a random direction in all
parameters at once. In float64, on a tiny problem (8 x 8 images, 3 coils, a 3-layer $H$ with 4 features, $m = 0.5$,
every solve to $10^{-14}$):
""")

code(r'''
g = torch.Generator().manual_seed(0)
tiny_maps = torch.randn(2, 3, 8, 8, dtype=torch.complex128, generator=g)
tiny_maps = tiny_maps / torch.linalg.vector_norm(tiny_maps, dim=1, keepdim=True)  # unit sum of squares: ||A|| <= 1
tiny_mask = (torch.rand(2, 8, 8, generator=g) < 0.4).double()
tiny_truth = torch.randn(2, 8, 8, dtype=torch.complex128, generator=g)
tiny_op = Sense(tiny_maps, tiny_mask)
tiny_kspace = tiny_op.forward(tiny_truth)
torch.manual_seed(0)
tiny = MOL(MOLNet(layers=3, features=4), m=0.5, lam=2.0, max_iter=500, tol=1e-14, cg_iters=100, cg_tol=1e-14).double()
params = list(tiny.parameters())


def tiny_loss(x):
    return (x - tiny_truth).abs().pow(2).sum()


def unrolled_gradient(steps):
    """Plain autograd through ``steps`` iterations of eq. 5 from A^H b."""
    tiny_atb = tiny_op.adjoint(tiny_kspace)
    x = tiny_atb
    for _ in range(steps):
        x = tiny.step(x, tiny_op, tiny_atb)
    return torch.autograd.grad(tiny_loss(x), params)


def shifted_loss(h):
    """The loss with every parameter moved by h along ``direction``."""
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(h * d)
        value = tiny_loss(tiny(tiny_kspace, tiny_maps, tiny_mask)).item()
        for p, d in zip(params, direction):
            p.sub_(h * d)
    return value


implicit = torch.autograd.grad(tiny_loss(tiny(tiny_kspace, tiny_maps, tiny_mask)), params)
print(tiny.last_forward_info)
print(tiny.last_backward_info)
unrolled = unrolled_gradient(tiny.last_forward_info.iterations + 20)
direction = [torch.randn(p.shape, dtype=p.dtype, generator=g) for p in params]
h = 1e-6
finite_difference = (shifted_loss(h) - shifted_loss(-h)) / (2 * h)
along = {name: sum((gp * d).sum() for gp, d in zip(grads, direction)).item()
         for name, grads in (("implicit", implicit), ("unrolled", unrolled))}
vs_unrolled = max(((a - b).norm() / b.norm()).item() for a, b in zip(implicit, unrolled))
vs_fd = abs(along["implicit"] - finite_difference) / abs(finite_difference)
print(f"directional derivative: implicit {along['implicit']:.9f}, unrolled {along['unrolled']:.9f}, "
      f"finite differences {finite_difference:.9f}")
print(f"implicit vs unrolled, worst parameter tensor: {vs_unrolled:.1e}; implicit vs finite differences: {vs_fd:.1e}")
assert bool(tiny.last_forward_info.converged.all()) and bool(tiny.last_backward_info.converged.all())
assert vs_unrolled < 1e-10 and vs_fd < 1e-6
# NBVAL_CHECK_OUTPUT
''')

md(r"""
Unrolling gives the equilibrium's gradient only once it has converged. With fewer steps it is the gradient of a
different network, a MoDL-like chain of $K$ blocks with the same weights, and the difference shrinks at the
iteration's rate:
""")

code(r'''
unroll_steps = [1, 2, 5, 10, 20, 40]
unroll_errors = [max(((a - b).norm() / b.norm()).item() for a, b in zip(unrolled_gradient(n), implicit))
                 for n in unroll_steps]
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.semilogy(unroll_steps, unroll_errors, "o-")
ax.set(xlabel="unrolled iterations K", ylabel="relative difference",
       title="gradient of K unrolled steps vs the implicit gradient")
plt.show()
''')

# ------------------------------------------------------------------------------------------------ memory

md(r"""
## Memory: what a training step keeps for its backward pass

The paper's practical headline is that MOL needs about ten times less memory than a 10-iteration MoDL (Sec. 3,
Fig. 3). Chapter 2 counted memory with `mrtutor.evaluate.saved_for_backward`, which adds up every tensor that autograd
saves while a step runs:
""")

code(r'''
print(inspect.getsource(evaluate.saved_for_backward))
''')

md(r"""
For MoDL that is exactly what the backward pass needs. For MOL-LR it overcounts: its Lipschitz estimate (below)
builds and frees a small graph at each of its gradient-ascent steps, and those graphs never coexist with the training
graph. So we refine the count to the bytes autograd *holds when the backward pass starts*: the same hook, with a box
around each saved tensor so that we see when autograd lets go of it. `graph_bytes` returns both numbers, and the
check below asserts that they agree with each other, and with the package's count, wherever nothing is freed early.
Both networks get the paper's CNN size, 5 layers of 64 features, and one training slice of this tier: MoDL for
$K = 1, \dots, 10$, MOL-LR for a cap of 5 to 40 forward iterations with the tolerance set to 0, so that every run uses
its whole cap.
""")

code(r'''
def graph_bytes(loss_fn):
    """Run ``loss_fn().backward()``; return (bytes autograd holds when the backward pass starts, bytes saved in all)."""
    held, saved = 0, 0

    class Saved:  # one box per saved tensor, so we see when autograd lets go of it
        __slots__ = ("tensor", "__weakref__")

    def release(n):
        nonlocal held
        held -= n

    def pack(t):
        nonlocal held, saved
        n = t.numel() * t.element_size()
        held += n
        saved += n
        box = Saved()
        box.tensor = t
        weakref.finalize(box, release, n)
        return box

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
        loss = loss_fn()
        at_backward = held
        loss.backward()
    return at_backward, saved


train_6x = data.demo_dataset("train", mask_fn="variable_density_2d", acceleration=6)
one_train = {k: v[None].to(DEVICE) for k, v in train_6x[0].items() if torch.is_tensor(v)}


def step_megabytes(model, loss):
    """(held at backward, saved in all) in MB for one training step of ``model`` on one slice."""
    model.to(DEVICE).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DEQConvergenceWarning)  # tol = 0: every solve stops at its cap, on purpose
        return tuple(b / 1e6 for b in graph_bytes(lambda: loss(model, one_train)))


config.seed_everything(0)
modl_mb = {k: step_megabytes(modl(iterations=k), reconstruction_loss) for k in tqdm((1, 2, 5, 10), desc="MoDL")}
mol_mb = {n: step_megabytes(mol_lr(max_iter=n, tol=0.0), mol_loss) for n in tqdm((5, 10, 20, 40), desc="MOL-LR")}
mol_mse_only = step_megabytes(mol_lr(max_iter=40, tol=0.0), reconstruction_loss)
modl_k1_step = modl(iterations=1).to(DEVICE).train()
package_count = evaluate.saved_for_backward(lambda: reconstruction_loss(modl_k1_step, one_train).backward())
fig, ax = plt.subplots(figsize=(5.5, 3.5))
ax.plot(list(modl_mb), [held for held, _ in modl_mb.values()], "o-", label="MoDL: K unrolled iterations")
ax.plot(list(mol_mb), [held for held, _ in mol_mb.values()], "s-", label="MOL-LR: forward iterations (cap)")
ax.set(xlabel="iterations", ylabel="MB held for backward (1 slice)",
       title=f"training memory, {SETTINGS['image_shape']} images")
ax.legend()
plt.show()
''')

code(r'''
for k, (held, saved) in modl_mb.items():
    print(f"MoDL K={k:2d}: {held:6.1f} MB held at backward, {saved:6.1f} MB saved in all")
for n, (held, saved) in mol_mb.items():
    print(f"MOL-LR, {n:2d} forward iterations: {held:6.1f} MB held at backward, {saved:6.1f} MB saved in all")
ratio = modl_mb[10][0] / mol_mb[40][0]
print(f"MoDL K=10 holds {ratio:.1f}x the memory of a MOL-LR step ({modl_mb[10][0] / mol_mse_only[0]:.1f}x without the "
      f"Lipschitz term, {mol_mse_only[0]:.1f} MB); the paper reports about 10x")
assert all(held == saved for held, saved in modl_mb.values()) and mol_mse_only[0] == mol_mse_only[1]
assert package_count / 1e6 == modl_mb[1][1] and all(held < saved for held, saved in mol_mb.values())
assert all(np.diff([held for held, _ in modl_mb.values()]) > 0) and len(set(mol_mb.values())) == 1 and ratio > 2
# NBVAL_CHECK_OUTPUT
''')

md(r"""
MOL's graph holds two applications of eq. 5's block whatever the iteration count (one attaches $x^*$ to the weights,
one serves the vector-Jacobian products of the backward iteration), plus two passes of $H$ for the Lipschitz term.
MoDL's holds $K$ blocks, each with its batch normalisations. The factor therefore depends on what the step includes:
ours lands below the paper's "ten times" with the Lipschitz term and closer to it without. Counted naively, with
everything ever saved, the Lipschitz estimate's ten ascent steps would make MOL-LR look almost as costly as MoDL.
""")

# ------------------------------------------------------------------------------------------------ Lipschitz

md(r"""
## Keeping $H$ a contraction: spectral normalisation or a Lipschitz penalty

Everything so far assumed $\mathrm{Lip}(H) < 1 - m$. The paper compares three ways of training $H$:

* **MOL**: no constraint. Nothing keeps eq. 5 convergent, and in the paper's Fig. 2 it diverges.
* **MOL-SN**: spectral normalisation {cite}`miyato2018spectral` of every layer, as in {cite}`gilton2021deq`, so the
  product of the layers' norms stays below $1 - m$. Safe, but we saw above how conservative that product is.
* **MOL-LR**: no hard constraint, but a penalty on the *local* Lipschitz constant of $H$ where the images are,
  estimated at each batch's fixed points by a few steps of gradient ascent on an adversarial perturbation (eq. 7),
  and added to the training loss (eq. 8):

$$
l(x^*) = \max_{\epsilon}\frac{\|H(x^*+\epsilon) - H(x^*)\|_2^2}{\|\epsilon\|_2^2},
\qquad \mathcal L = \|x^*(A^Hb) - x_{\rm orig}\|_2^2 + l(x^*) .
$$

`lipschitz_estimate` keeps $\|\epsilon\| = 10^{-2}\|x^*\|$ and by default takes 10 ascent steps from a random start;
`lipschitz_penalty` turns the estimates into the term of eq. 8:
""")

code(r'''
print(inspect.getsource(lipschitz_estimate))
print(inspect.getsource(lipschitz_penalty))
''')

md(r"""
The estimate is a lower bound on the true local constant, and it can only be as good as the ascent. For a linear
$H$ each ascent step is one power iteration on $J^HJ$, so the estimate must climb to the operator norm. A one-layer
`MOLNet` is a single convolution (its bias cancels in the difference), and the power iteration inside a spectrally
normalised layer, with a bound too large to clip anything, measures the same norm independently:
""")

code(r'''
config.seed_everything(0)
linear = MOLNet(layers=1, spectral_bound=10.0, spectral_iters=500).double()
probe = torch.randn(4, 24, 24, dtype=torch.complex128)
with torch.no_grad():
    linear(probe)
    operator_norm = linear.lipschitz_upper_bound()
estimates = {n: lipschitz_estimate(linear, probe, n_steps=n, generator=torch.Generator().manual_seed(0)).max().item()
             for n in (0, 1, 5, 50)}
print(f"operator norm by power iteration: {operator_norm:.4f}")
print("estimate after n ascent steps:", ", ".join(f"n = {n}: {value:.4f}" for n, value in estimates.items()))
assert estimates[0] < estimates[5] < estimates[50] and abs(estimates[50] / operator_norm - 1) < 0.01
# NBVAL_CHECK_OUTPUT
''')

# ------------------------------------------------------------------------------------------------ live training

md(r"""
## Training, live

The loss of eq. 8 is `mrtutor.train.mol_loss`, and `mol_monitor` reads what the solvers did at each step: forward and
backward iterations, the share of samples whose forward solve converged, and the Lipschitz estimate of $H$. A few
live steps of a tiny MOL-LR (3 layers, 16 features, the package's defaults otherwise: $m = 0.1$, a cap of 100
iterations, plain iteration, tolerance $10^{-4}$):
""")

code(r'''
print(inspect.getsource(mol_loss))
loader = torch.utils.data.DataLoader(train_6x, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
config.seed_everything(0)
live = mol_lr(layers=3, features=16).to(DEVICE)
optimiser = torch.optim.Adam(live.parameters(), lr=1e-3)
LIVE_STEPS = 6 if TIER == "quick" else 15
log = []
batches = iter(loader)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DEQConvergenceWarning)  # counted in the log instead, as the training command does
    for step in tqdm(range(LIVE_STEPS), desc="live MOL-LR"):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        batch = {k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in batch.items()}
        loss = mol_loss(live, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        log.append({"loss": loss.item(), **mol_monitor(live)})
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
axes[0].semilogy([e["loss"] for e in log])
axes[0].set(xlabel="step", title="loss (MSE + Lipschitz term)")
axes[1].plot([e["forward_iterations"] for e in log], "o-", label="forward")
axes[1].plot([e["backward_iterations"] for e in log], "s-", label="backward")
axes[1].axhline(live.solver.max_iter, color="gray", ls="--", lw=1, label="cap")
axes[1].set(xlabel="step", title="fixed-point iterations")
axes[1].legend()
axes[2].plot([e["lipschitz"] for e in log], "o-")
axes[2].axhline(1 - live.m, color="gray", ls="--", lw=1, label="1 - m")
axes[2].set(xlabel="step", title="Lipschitz estimate of H")
axes[2].legend()
plt.tight_layout()
plt.show()
''')

code(r'''
start, end = np.mean([e["loss"] for e in log[:2]]), np.mean([e["loss"] for e in log[-2:]])
print(f"mean loss of the first 2 steps {start:.2e}, of the last 2 {end:.2e}: fell {end < start}")
print("forward iterations per step:", [int(e["forward_iterations"]) for e in log])
print("backward iterations per step:", [int(e["backward_iterations"]) for e in log], f"(cap {live.solver.max_iter})")
print("Lipschitz estimate of H per step:", " ".join(f"{e['lipschitz']:.3f}" for e in log))
assert end < start
# NBVAL_CHECK_OUTPUT
''')

md(r"""
Two things to notice. First, the loss is mostly the Lipschitz term: the penalty $l(x^*)$, the square of the
estimate printed above, is several times the mean squared error of max-1 images, so the first thing the optimiser
does is shrink $H$ (we come back to this weighting in the comparison with the paper). Second, the backward iterations need more steps than the forward ones: the forward
iteration starts at $A^Hb$, already close to $x^*$, while the adjoint iteration starts at $\partial L/\partial x^*$
and must build up $g = (I - J^H)^{-1}\,\partial L/\partial x^*$, which is larger by up to
$1/(1 - \rho)$. When it stops at the cap, the gradient is a truncated series; the training records count it.
""")

# ------------------------------------------------------------------------------------------------ Fig. 2

md(r"""
## The trained models: the paper's Fig. 2

The demo-tier models were trained with the package's command, whose exact invocation each record keeps (printed
below), on the training split at 6x with a fresh variable-density mask per slice and epoch. Every epoch's record
holds the curves of the paper's Fig. 2: the Lipschitz estimate of $H$ at the training fixed points, the forward
(and backward) iterations, and the training and validation errors. MoDL $K = 10$ from chapter 2 is the reference.
""")

code(r'''
MOL_CHECKPOINTS = {"MOL": "mol_unconstrained", "MOL-SN": "mol_sn", "MOL-LR": "mol_lr"}
records, mol_models = {}, {}
for label, name in MOL_CHECKPOINTS.items():
    if label == "MOL" and not (checkpoints.checkpoint_dir() / f"{name}.json").exists():
        print(f"({name} has not been trained: Fig. 2 shows MOL-SN and MOL-LR)")
        continue
    records[label] = checkpoints.record(name)
    mol_models[label] = checkpoints.load(name, device=DEVICE)
modl_record = checkpoints.record("modl_k10")
modl_k10 = checkpoints.load("modl_k10", device=DEVICE)
for label, record in {**records, "MoDL K=10": modl_record}.items():
    print(f"{label}: $ {record['command']}")
    print(f"    {record['training_seconds'] / 60:.0f} min on {record['device']} ({record['host']}), "
          f"validation PSNR {record['final_metrics']['val_psnr']:.2f} dB")
for label, model in mol_models.items():
    print(f"{label}: m = {model.m}, alpha = {model.alpha:.4f}, lambda = {model.lam.item():.3g}, "
          f"cap {model.solver.max_iter} iterations, tol {model.solver.tol:g}, Anderson {model.solver.anderson}, "
          f"Lipschitz weight {model.lipschitz_weight:g}, target {model.lipschitz_target}")
''')

code(r'''
colours = {"MOL": "tab:red", "MOL-SN": "tab:blue", "MOL-LR": "tab:green", "MoDL K=10": "k"}
fig, axes = plt.subplots(1, 4, figsize=(15, 3.3))
for label, record in records.items():
    history = record["history"]
    epochs = [h["epoch"] for h in history]
    colour = colours[label]
    axes[0].plot(epochs, [h["train_lipschitz"] for h in history], "o-", ms=3, color=colour, label=label)
    axes[1].plot(epochs, [h["train_forward_iterations"] for h in history], "o-", ms=3, color=colour,
                 label=f"{label} forward")
    axes[1].plot(epochs, [h.get("train_backward_iterations", np.nan) for h in history], "s:", ms=3, color=colour,
                 label=f"{label} backward")
    axes[2].semilogy(epochs, [h["train_loss"] for h in history], "o-", ms=3, color=colour, label=label)
    axes[3].semilogy(epochs, [h["val_loss"] for h in history], "o-", ms=3, color=colour, label=label)
modl_history = modl_record["history"]
for ax, key in ((axes[2], "train_loss"), (axes[3], "val_loss")):
    ax.semilogy([h["epoch"] for h in modl_history], [h[key] for h in modl_history], "x--", color="k", label="MoDL K=10")
axes[0].axhline(1 - mol_models["MOL-LR"].m, color="gray", ls="--", lw=1, label="1 - m")
axes[1].axhline(mol_models["MOL-LR"].solver.max_iter, color="gray", ls="--", lw=1, label="cap (MOL-LR)")
titles = ["(a) Lipschitz estimate of H", "(b) fixed-point iterations", "(c) training loss", "(d) validation MSE"]
for ax, title in zip(axes, titles):
    ax.set(xlabel="epoch", title=title)
    ax.legend(fontsize=7)
plt.tight_layout()
plt.show()
''')

md(r"""
Panel (c) shows the training loss as recorded, and for MOL-LR that includes the Lipschitz term, so only panel (d),
the plain validation MSE, compares the models like for like. Panel (b) shows the cost side of the paper's argument:
the larger the Lipschitz constant of $H$, the slower eq. 5 contracts and the more iterations each solve needs.
""")

code(r'''
for label, record in records.items():
    last = record["history"][-1]
    print(f"{label}, epoch {last['epoch']}: Lipschitz estimate {last['train_lipschitz']:.3f}, forward iterations "
          f"{last['train_forward_iterations']:.0f} ({100 * last['train_forward_converged']:.0f}% converged), backward "
          f"{last.get('train_backward_iterations', float('nan')):.0f}, validation MSE {last['val_loss']:.2e}")
print(f"MoDL K=10, epoch {modl_history[-1]['epoch']}: validation MSE {modl_history[-1]['val_loss']:.2e}")
assert all(all(key in h for key in ("train_lipschitz", "train_forward_iterations", "val_loss"))
           for record in records.values() for h in record["history"])
# Spectral normalisation bounds the estimate by construction, in every epoch:
assert max(h["train_lipschitz"] for h in records["MOL-SN"]["history"]) < 1 - mol_models["MOL-SN"].m
if TIER != "quick":  # claims about well-trained models: the quick tier's checkpoints may be tiny stand-ins
    assert records["MOL-LR"]["history"][-1]["val_loss"] < records["MOL-SN"]["history"][-1]["val_loss"]
    assert records["MOL-LR"]["history"][-1]["train_lipschitz"] < 1 - mol_models["MOL-LR"].m
# NBVAL_CHECK_OUTPUT
''')

md(r"""
Prop. 2.3 for the trained models, with the Lipschitz estimate of their $H$ measured now at their fixed points on four
test slices at 6x (`MOL.alpha_condition`). The step $\alpha$ satisfies the condition by construction (it is the
bound itself); whether $\mathrm{Lip}(H) < 1 - m$ holds is what training had to achieve:
""")

code(r'''
test_6x = data.demo_dataset("test", mask_fn="variable_density_2d", acceleration=6)
probe_batch = next(iter(torch.utils.data.DataLoader(test_6x, batch_size=4)))
probe_batch = {k: v.to(DEVICE) for k, v in probe_batch.items() if torch.is_tensor(v)}
conditions = {}
for label in ("MOL-SN", "MOL-LR"):
    model = mol_models[label]
    with torch.no_grad():
        x_star = model(probe_batch["kspace"], probe_batch["maps"], probe_batch["mask"])
    lip = lipschitz_estimate(model.net, x_star, n_steps=10, generator=torch.Generator(device=DEVICE).manual_seed(0))
    conditions[label] = model.alpha_condition(lip=lip.max().item())
    print(f"{label}:\n{conditions[label]}\n")
assert all(condition.alpha_ok for condition in conditions.values())
assert conditions["MOL-SN"].lip_ok  # by construction
if TIER != "quick":  # a claim about a well-trained MOL-LR
    assert conditions["MOL-LR"].lip_ok
# NBVAL_CHECK_OUTPUT
''')

# ------------------------------------------------------------------------------------------------ Table 1

md(r"""
## The paper's Table 1 on the demo test split

All methods on the whole test split at 4x and 6x, with the same mask seeds as chapters 1 and 2: zero filling and
CG-SENSE with chapter 1's weight (the paper's "SENSE" row), MoDL $K = 10$ from chapter 2, MOL-SN and MOL-LR. Each
MOL model runs with the solver settings it was trained with, and every forward solve is logged to check that it
converged within its cap.
""")

code(r'''
CG_ITERS = 30 if TIER != "quick" else 15
TABLE_MOL = ("MOL-SN", "MOL-LR")  # the paper's Table 1 rows (the unconstrained MOL is left out, as there)
solver_log = {label: [] for label in TABLE_MOL}


def logged(label):
    """The MOL model ``label`` as a method for ``evaluate.score`` that logs every forward solve."""
    model = mol_models[label]

    def method(kspace, maps, mask):
        x = model(kspace, maps, mask)
        solver_log[label].append(model.last_forward_info)
        return x

    return method


methods = {
    "zero-filled": lambda k, s, m: Sense(s, m).adjoint(k),
    "CG-SENSE": lambda k, s, m: recon.cg_sense(Sense(s, m), k, lam=BASELINE["cg_sense"], max_iter=CG_ITERS),
    "MoDL K=10": modl_k10,
    **{label: logged(label) for label in TABLE_MOL},
}
results = {}
for acceleration in tqdm((4, 6), desc="test split"):
    test_set = data.demo_dataset("test", mask_fn="variable_density_2d", acceleration=acceleration)
    results[f"{acceleration}x"] = evaluate.score(methods, test_set, batch_size=20, device=DEVICE)
print(f"{len(test_set)} test slices, tier {TIER}")
print(evaluate.format_table(results))
''')

code(r'''
PAPER = {"CG-SENSE": ((37.39, 0.983), (34.04, 0.967)), "MoDL K=10": ((41.02, 0.992), (37.98, 0.985)),
         "MOL-SN": ((38.31, 0.985), (35.19, 0.972)), "MOL-LR": ((40.75, 0.991), (37.71, 0.984))}
rows = ["| method | paper, 4x | this book, 4x | paper, 6x | this book, 6x |", "|---|---|---|---|---|"]
for name in methods:
    cells = []
    for column, acceleration in enumerate(("4x", "6x")):
        paper = PAPER.get(name)
        cells.append(f"{paper[column][0]:.2f} dB / {paper[column][1]:.3f}" if paper else "")
        scores = results[acceleration][name]
        cells.append(f"{scores['psnr'].mean():.2f} dB / {scores['ssim'].mean():.3f}")
    rows.append(f"| {name} | " + " | ".join(cells) + " |")
display(Markdown("Mean PSNR / SSIM (the paper: 30 test slices of 3 subjects; its SENSE row is our CG-SENSE)\n\n"
                 + "\n".join(rows)))
''')

code(r'''
for label, infos in solver_log.items():
    iterations = [info.iterations for info in infos]
    converged = all(bool(info.converged.all()) for info in infos)
    print(f"{label}: {len(infos)} batched solves (4x and 6x), {min(iterations)} to {max(iterations)} forward iterations "
          f"(cap {mol_models[label].solver.max_iter}), every solve converged: {converged}")
lr_converged = all(bool(info.converged.all()) for info in solver_log["MOL-LR"])
mean = {a: {name: r["psnr"].mean().item() for name, r in results[a].items()} for a in results}
for column, a in enumerate(results):
    paper = {name: values[column][0] for name, values in PAPER.items()}
    print(f"{a}: MoDL K=10 - MOL-LR = {mean[a]['MoDL K=10'] - mean[a]['MOL-LR']:+.2f} dB (paper "
          f"{paper['MoDL K=10'] - paper['MOL-LR']:+.2f}), MOL-LR - MOL-SN = "
          f"{mean[a]['MOL-LR'] - mean[a]['MOL-SN']:+.2f} dB (paper {paper['MOL-LR'] - paper['MOL-SN']:+.2f})")
assert all(len(infos) == len(solver_log["MOL-LR"]) > 0 for infos in solver_log.values())
if TIER != "quick":  # claims about well-trained models: the quick tier runs them on tiny 48 x 48 images
    assert lr_converged
    assert all(mean[a]["MoDL K=10"] - mean[a]["MOL-LR"] < 1.0 for a in mean)  # MOL-LR within 1 dB of MoDL
    assert all(mean[a]["MOL-LR"] > max(mean[a]["MOL-SN"], mean[a]["CG-SENSE"]) for a in mean)
# NBVAL_CHECK_OUTPUT
''')

md(r"""
The paper's Fig. 3 is one 6x slice with its error maps; here is the same comparison on the test slice with the most
head in it:
""")

code(r'''
sample = test_6x[SLICE]
batch = {k: sample[k][None].to(DEVICE) for k in ("kspace", "maps", "mask")}
with torch.no_grad():
    images = {name: methods[name](batch["kspace"], batch["maps"], batch["mask"])[0].cpu()
              for name in ("CG-SENSE", "MoDL K=10", "MOL-SN", "MOL-LR")}
viz.show_comparison(images, sample["target"])
''')

md(r"""
Does Anderson acceleration pay off for the trained MOL-LR as well? The same model with plain iteration and with a
history of 5, on the first test slices at 6x: the fixed point is the same, so the PSNR must agree, and only the
iterations and the time may differ.
""")

code(r'''
N_ANDERSON = 4 if TIER == "quick" else 20
subset = torch.utils.data.Subset(test_6x, range(N_ANDERSON))
variants = {}
for history in (0, 5):
    variant = copy.deepcopy(mol_models["MOL-LR"])
    variant.solver.anderson = variant.solver.backward_anderson = history
    variants[f"Anderson {history}" if history else "plain"] = variant
iteration_counts = {name: [] for name in variants}


def counted(name):
    model = variants[name]

    def method(kspace, maps, mask):
        x = model(kspace, maps, mask)
        iteration_counts[name].append(model.last_forward_info.iterations)
        return x

    return method


solver_comparison = evaluate.score({name: counted(name) for name in variants}, subset, batch_size=N_ANDERSON,
                                   device=DEVICE)
for name, scores in solver_comparison.items():
    print(f"MOL-LR, {name:10s}: {iteration_counts[name][0]:4d} iterations, {scores['seconds']:.2f} s, "
          f"PSNR {scores['psnr'].mean():.3f} dB")
psnr_gap = abs(solver_comparison["plain"]["psnr"].mean() - solver_comparison["Anderson 5"]["psnr"].mean()).item()
assert iteration_counts["Anderson 5"][0] <= iteration_counts["plain"][0]
if TIER != "quick":  # both solves must have converged, which the test above asserts in these tiers only
    assert psnr_gap < 0.05
# NBVAL_CHECK_OUTPUT
''')

# ------------------------------------------------------------------------------------------------ robustness

md(r"""
## Robustness to perturbed measurements (Prop. 2.4)

We perturb the measured k-space of the 4x test slice from above, at its sampled locations only, once by random
complex noise and once by an adversarial perturbation of the same size, found by a few steps of gradient ascent on
the change of the output (each step replaces the perturbation by the gradient of $\|x(b+\delta) - x(b)\|^2$, rescaled
to the size: a power iteration when the network is linear). For several sizes we plot the change of the output
against the change of the input, for MOL-LR, MOL-SN and MoDL $K = 10$, with each MOL model's bound from eq. 6 in its
$\alpha \to 0$ form, $\|\Delta x\| \le (\lambda/m)\,\|\Delta b\|$. The MOL models are solved to a tighter tolerance
here ($10^{-6}$, with Anderson), so that the solver's own error does not blur small differences; the fixed point is
the same. MoDL has no such bound: its network is unconstrained.
""")

code(r'''
SIZES = (0.02, 0.1) if TIER == "quick" else (0.01, 0.03, 0.1, 0.3)  # ||delta|| / ||b||
ASCENT_STEPS = 2 if TIER == "quick" else 4
b0, maps0, mask0 = one["kspace"], one["maps"], one["mask"]


def precise(model):
    model = copy.deepcopy(model)
    model.solver = DeepEquilibrium(max_iter=1000, tol=1e-6, anderson=5)
    return model


robust = {"MoDL K=10": modl_k10, "MOL-SN": precise(mol_models["MOL-SN"]), "MOL-LR": precise(mol_models["MOL-LR"])}


def response(model, x0, size, adversarial, seed=0):
    """||delta|| and the largest ||x(b + delta) - x(b)|| over the ascent (one value for a random delta)."""
    radius = size * b0.norm()
    noise = torch.randn(b0.shape, dtype=b0.dtype, generator=torch.Generator().manual_seed(seed))
    delta = noise.to(DEVICE) * mask0[:, None]
    delta = delta * radius / delta.norm()
    largest = 0.0
    for _ in range(ASCENT_STEPS if adversarial else 0):
        delta = delta.detach().requires_grad_()
        change = (model(b0 + delta, maps0, mask0) - x0).abs().pow(2).sum()
        largest = max(largest, change.sqrt().item())
        (grad,) = torch.autograd.grad(change, delta)
        grad = grad * mask0[:, None]
        delta = grad * radius / grad.norm()
    with torch.no_grad():
        largest = max(largest, (model(b0 + delta, maps0, mask0) - x0).norm().item())
    return radius.item(), largest


responses = {}
for name, model in tqdm(robust.items(), desc="perturbations"):
    with torch.no_grad():
        x0 = model(b0, maps0, mask0)
    responses[name] = {kind: [response(model, x0, size, kind == "adversarial") for size in SIZES]
                       for kind in ("random", "adversarial")}
bounds = {name: (robust[name].lam / robust[name].m).item() for name in ("MOL-SN", "MOL-LR")}
colours = {"MoDL K=10": "k", "MOL-SN": "tab:blue", "MOL-LR": "tab:green"}
fig, ax = plt.subplots(figsize=(6, 4))
for name, kinds in responses.items():
    for kind, marker in (("random", "o"), ("adversarial", "^")):
        db, dx = zip(*kinds[kind])
        ax.loglog(db, dx, marker + "-", color=colours[name], label=f"{name}, {kind}")
sizes_b = np.array([responses["MOL-LR"]["random"][0][0], responses["MOL-LR"]["random"][-1][0]])
for name, bound in bounds.items():
    ax.loglog(sizes_b, bound * sizes_b, "--", color=colours[name], lw=1,
              label=f"eq. 6 bound, {name} (lambda/m = {bound:.0f})")
ax.loglog(sizes_b, sizes_b, ":", color="gray", lw=1, label="||dx|| = ||db||")
ax.set(xlabel="||delta b||", ylabel="||delta x||", title="output change against measurement change (4x)")
ax.legend(fontsize=7)
plt.show()
''')

code(r'''
within = {}
for name, kinds in responses.items():
    gains = {kind: max(dx / db for db, dx in values) for kind, values in kinds.items()}
    note = f", eq. 6 bound {bounds[name]:.1f}" if name in bounds else ", no bound"
    print(f"{name}: largest ||dx|| / ||db||: random {gains['random']:.3f}, adversarial {gains['adversarial']:.3f}{note}")
    if name in bounds:
        within[name] = all(dx <= bounds[name] * db for values in kinds.values() for db, dx in values)
assert within["MOL-SN"]  # guaranteed: spectral normalisation keeps Lip(H) < 1 - m everywhere
if TIER != "quick":  # a well-trained MOL-LR; the ascent finds larger changes than noise of the same size
    assert within["MOL-LR"]
    assert all(a[1] >= r[1] for kinds in responses.values() for r, a in zip(kinds["random"], kinds["adversarial"]))
# NBVAL_CHECK_OUTPUT
''')

md(r"""
The bound holds, and it is loose: with the learned $\lambda$ and $m = 0.1$, eq. 6 allows an output change $\lambda/m$
times the input change (the dashed lines), while the measured ratios, even for the adversarial perturbations, stay
within a small factor of 1: much of how a sampled k-space value moves the image is set by the data-consistency solve,
which MoDL and MOL share. The guarantee is a worst case over every network with $\mathrm{Lip}(H) < 1 - m$; what
distinguishes MOL from MoDL is that a guarantee exists at all, not that it is tight. For MoDL nothing bounds the
adversarial gain; the ascent shows how far it goes on this slice.
""")

# ------------------------------------------------------------------------------------------------ paper vs book

md(r"""
## Paper vs this book

| | paper {cite}`pramanik2022mol` | this book (demo tier) |
|---|---|---|
| data | 3-D CUBE brain, 12-channel head coil, 9 subjects (4 training, 2 validation, 3 test), middle slices; Table 1 over 30 test slices | 2 real heads (Colin27; MNI152 in a synthetic skull and scalp), simulated 8-coil acquisition at 128 x 128, 360 training / 60 validation / 60 test slices from disjoint slabs (chapter 1) |
| masks | 2-D variable-density, 4x and 6x | 2-D variable-density; every model trained at 6x only, with a fresh mask per slice and epoch, and tested at 4x and 6x |
| $H$ | a five-layer CNN "as in" MoDL, no batch normalisation; widths not given | 5 layers of 64 3x3 filters with biases and ReLUs, no batch normalisation, no skip connection (the records' settings are printed above) |
| $m$ and $\alpha$ | $m$ not given (MOL-LR's Lipschitz constant "around 0.9" suggests $m \approx 0.1$); $\alpha = 2m/(2-m)^2$ | $m = 0.1$ unless the record says otherwise; $\alpha = 2m/(2-m)^2 = 0.055$ |
| $\lambda$ | not said whether learned | learned (through its logarithm), starting at 20 |
| forward solve | tolerance, cap and acceleration not given | relative residual $10^{-4}$, the cap and Anderson setting of each record (printed above); solves that stop at the cap are counted in the records, not hidden |
| backward solve | Jacobian iterations | the same fixed-point solver on vector-Jacobian products, same cap; panel (b) shows how often it reached the cap |
| MOL-SN | spectral normalisation of each layer | the norm of each *convolution operator* on the image size by power iteration (the usual normalisation of the reshaped weight matrix can underestimate a 3x3 convolution's norm up to three-fold, so it would not bound $\mathrm{Lip}(H)$); product bound $0.99\,(1 - m)$ |
| Lipschitz estimate (eq. 7) | "a few gradient ascent steps" per batch | 10 steps from a random start, at radius $10^{-2}\|x^*\|$ |
| loss (eq. 8) | $\|x^* - x_{\rm orig}\|_2^2$ (a sum over pixels) $+\; l(x^*)$ | the *mean* squared error + the weight (printed above) $\times$ the batch mean of $l(x^*)$: relative to the data term the penalty weighs $H \cdot W$ times more than a literal reading of eq. 8 |
| memory | MOL-LR needs about 10x less GPU memory than MoDL $K = 10$ | bytes held for the backward pass, counted by autograd hooks: the factor printed in the memory section |
| robustness | eq. 6 proved, not measured | measured with random and adversarial perturbations; eq. 6 drawn in its $\alpha \to 0$ form $\lambda/m$, as it is infinite at the paper's $\alpha$ |
| Table 1 | MOL-LR 0.27 dB below MoDL and 2.4 dB above MOL-SN (both accelerations) | the table above |

The data differ as in chapter 2: smaller images, fewer and simulated coils, and smoother anatomy. The bigger
uncertainty is in what the paper leaves open, above all $m$, the solver settings, and the relative weight of the
Lipschitz term, which decides how far training pushes $\mathrm{Lip}(H)$ below $1 - m$ and with it how much of its
representation power MOL-LR keeps. A MOL-LR whose penalty dominates behaves like a MOL-SN, and the gap of Table 1
closes or reverses; compare the Lipschitz estimates of panel (a) with the paper's "around 0.9" before comparing PSNR.

## Exercises

1. Give the trained MOL-LR Anderson histories of 0, 2, 5 and 10 (`model.solver.anderson = ...`) and time it on the
   test split at 6x. When does the extra least-squares solve per step stop paying for itself? Does the PSNR change,
   and should it?
2. Repeat the convergence experiment with the untrained MOL-SN for $m = 0.1$, $0.3$ and $0.6$ (the step $\alpha$
   follows $m$ through Prop. 2.3). How do the iterations and the robustness constant $\lambda/m$ move? Which $m$ would
   you train with, and what does the network lose as $m$ grows?
3. Show that with $m = 0$ (an $H$ that is only non-expansive) eq. 2 may have infinitely many solutions. Hint: take
   an $A$ with a null space and an $H$ that is the identity there. Which step of the proof of eq. 6 fails?
4. For the trained MOL-SN compare `model.net.lipschitz_upper_bound()` with `lipschitz_estimate(model.net, x_star,
   n_steps=n)` at its test fixed points for $n = 0, 10, 100$. How conservative is the product of layer norms? Why
   can MOL-LR offer no such upper bound at all?
5. Train the unconstrained MOL with the demo settings of the MOL-LR record for a few epochs
   (`python -m mrtutor.train mol_unconstrained --name mol_free ...`) and plot its `train_forward_converged` and
   `train_lipschitz` per epoch. Does it diverge as in the paper's Fig. 2? What does the training command do with a
   batch whose fixed point was not reached?
""")


# ------------------------------------------------------------------------------------------------ write


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "colab": {"provenance": []},
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for index, (kind, source) in enumerate(CELLS):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell.id = hashlib.sha1(f"03_mol:{index}".encode()).hexdigest()[:8]
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


if __name__ == "__main__":
    nbformat.write(build(), OUT)
    print(f"wrote {OUT} ({len(CELLS)} cells)")
