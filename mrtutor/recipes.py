"""Training recipes: how each method of the book is built and trained, declared beside its model.

A method module (``mrtutor.modl``, ``mrtutor.mol``, ...) registers one ``Recipe`` per trainable model:
the builder, the builder's options (each with its type, help and the values it accepts), the loss,
and optionally a second loss term, per-step statistics, a warm start from another checkpoint and a
step after training. ``python -m mrtutor.train`` builds its command line from this registry and
runs the one loop every method shares; ``mrtutor.checkpoints.load`` rebuilds a model only through a
registered builder with its declared options, so a checkpoint's record cannot make it run anything
else.

A new method adds a module that calls ``register`` and, for the command line, its name to
``METHOD_MODULES``; a reader's own method can instead register its recipe in a script that then calls
``mrtutor.train.main()``. Nothing in ``mrtutor.train`` changes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

# The modules that declare recipes, imported (in this order) the first time the registry is read.
METHOD_MODULES = ("mrtutor.modl", "mrtutor.mol", "mrtutor.npgd", "mrtutor.sgp_training", "mrtutor.unet")

# What an option accepts beyond its type; the key is shown in the option's help.
BOUNDS: dict[str, Callable[[Any], bool]] = {
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    "in (0, 1)": lambda v: 0 < v < 1,
    "in [0, 1]": lambda v: 0 <= v <= 1,
}


@dataclass(frozen=True)
class Option:
    """One keyword argument of a recipe's builder, as the command line and the records give it.

    ``default`` is the value the command line passes when the option is left out (``None``: the
    option is not passed, so the builder's own default holds). ``optional`` allows an explicit
    ``None`` in a record (the builder then picks, as for MOL's ``alpha``).
    """

    name: str
    type: type
    help: str
    default: Any = None
    bound: str | None = None
    optional: bool = False
    choices: tuple | None = None

    def __post_init__(self):
        if self.type not in (int, float, bool, str):
            raise TypeError(f"option {self.name}: type must be int, float, bool or str, got {self.type}")
        if self.bound is not None and self.bound not in BOUNDS:
            raise ValueError(f"option {self.name}: bound must be one of {sorted(BOUNDS)}, got {self.bound!r}")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, origin: str) -> Any:
        """``value`` as this option's type, or a ``ValueError`` that says what was expected."""
        if value is None and self.optional:
            return None
        # bool is a subclass of int: refuse True where a number is expected, and 1 where a flag is.
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.type is float and numeric:
            value = float(value)
        elif not (isinstance(value, self.type) and (self.type is bool or not isinstance(value, bool))):
            raise ValueError(f"{origin}: option {self.name!r} must be {self.type.__name__}, "
                             f"got {type(value).__name__} {value!r}")
        if self.bound is not None and not BOUNDS[self.bound](value):
            raise ValueError(f"{origin}: option {self.name!r} must be {self.bound}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{origin}: option {self.name!r} must be one of {self.choices}, got {value!r}")
        return value


def complex_mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of complex images: mean |output - target|^2."""
    return (output - target).abs().pow(2).mean()


def reconstruct_kspace(model: nn.Module, batch: dict) -> torch.Tensor:
    """The reconstruction of an MRI model: ``model(kspace, maps, mask)``."""
    return model(batch["kspace"], batch["maps"], batch["mask"])


def reconstruction_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """End-to-end training: the error of the whole unrolled reconstruction."""
    return complex_mse(reconstruct_kspace(model, batch), batch["target"])


Loss = Callable[[nn.Module, dict], torch.Tensor]


@dataclass(frozen=True)
class Recipe:
    """How to build and train one kind of model.

    Args:
        name: the command's first argument (``python -m mrtutor.train NAME``).
        builder: a function of ``mrtutor`` that returns the model, called with the options' values.
        doc: one line for ``--help``.
        options: the builder's keyword arguments that the command line and a record may set.
        loss: ``loss(model, batch) -> scalar``; ``batch`` holds ``kspace``, ``maps``, ``mask``, ``target``
            (or what the recipe's own ``data`` yields).
        penalty: a second term, built after the first one's backward pass so that their graphs
            never share the memory (the gradients add up as for the sum): MOL's Lipschitz term.
        monitor: ``monitor(model) -> {name: value}`` after each step, averaged per epoch into the record.
        init: ``init(model, source)`` starts ``model`` from the trained model of ``--init NAME``.
        finish: ``finish(model, validation_psnr) -> dict`` after the last epoch (``validation_psnr()``
            scores the model as it is now); the dict joins the record. CG-PD-NS tunes its lam here.
        bf16: whether ``--precision bf16`` suits it (not for a fixed point solved below bf16's resolution).
        quiet: warnings that training ignores because the monitor counts what they report (MOL's
            solves that stop short), instead of one warning per batch.
        data: ``data(args) -> (train_set, val_set, sha256)`` for a problem other than MRI (its samples
            hold a ``target`` and whatever ``reconstruct`` and ``loss`` read); the default builds the
            k-space datasets of the shared options (``--mask``, ``--acceleration``, ``--single-coil``, ...).
        reconstruct: ``reconstruct(model, batch) -> images``, what validation scores against ``target``.
    """

    name: str
    builder: Callable[..., nn.Module]
    doc: str
    options: tuple[Option, ...] = ()
    loss: Loss = reconstruction_loss
    penalty: Loss | None = None
    monitor: Callable[[nn.Module], dict[str, float]] | None = None
    init: Callable[[nn.Module, nn.Module], None] | None = None
    finish: Callable[[nn.Module, Callable[[], float]], dict] | None = None
    bf16: bool = True
    quiet: tuple[type[Warning], ...] = ()
    data: Callable[[Any], tuple] | None = None
    reconstruct: Callable[[nn.Module, dict], torch.Tensor] = reconstruct_kspace
    _by_name: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        names = [option.name for option in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"recipe {self.name}: an option is declared twice in {names}")
        object.__setattr__(self, "_by_name", {option.name: option for option in self.options})

    @property
    def builder_path(self) -> str:
        """The builder as records name it, e.g. ``mrtutor.modl.modl``."""
        return f"{self.builder.__module__}.{self.builder.__qualname__}"

    def check_options(self, kwargs: dict, origin: str) -> dict:
        """``kwargs`` with every value checked against its declared option; unknown names are refused."""
        unknown = sorted(set(kwargs) - set(self._by_name))
        if unknown:
            raise ValueError(f"{origin}: {unknown} are not options of recipe {self.name!r}; "
                             f"it takes {sorted(self._by_name)}")
        return {name: self._by_name[name].check(value, origin) for name, value in kwargs.items()}

    def build(self, kwargs: dict, origin: str = "builder options") -> nn.Module:
        """The model, after ``check_options``: nothing is called with an undeclared or ill-typed option."""
        return self.builder(**self.check_options(kwargs, origin))


_REGISTRY: dict[str, Recipe] = {}
_loaded = False


def register(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to the registry (a second recipe under the same name is refused)."""
    existing = _REGISTRY.get(recipe.name)
    if existing is not None and existing is not recipe:
        raise ValueError(f"a recipe named {recipe.name!r} is registered already (builder {existing.builder_path})")
    _REGISTRY[recipe.name] = recipe
    return recipe


def registry() -> dict[str, Recipe]:
    """Every registered recipe by name, after importing ``METHOD_MODULES``."""
    global _loaded
    if not _loaded:
        for module in METHOD_MODULES:
            importlib.import_module(module)
        _loaded = True
    return dict(_REGISTRY)


def get(name: str) -> Recipe:
    """The recipe ``name``, or a ``KeyError`` that lists the registered ones."""
    recipes = registry()
    if name not in recipes:
        raise KeyError(f"no recipe {name!r}; registered: {sorted(recipes)}")
    return recipes[name]


def for_builder(builder: str, recipe: str | None = None) -> Recipe:
    """The registered recipe whose builder is ``builder`` (and whose name is ``recipe``, when given).

    This is what ``mrtutor.checkpoints`` trusts: a record that names any other function is refused
    here, before anything is imported or called.
    """
    recipes = registry()
    matches = [r for r in recipes.values() if r.builder_path == builder and (recipe is None or r.name == recipe)]
    if not matches:
        known = sorted(f"{r.name}: {r.builder_path}" for r in recipes.values())
        wanted = f"builder {builder!r}" + (f" of recipe {recipe!r}" if recipe is not None else "")
        raise ValueError(f"{wanted} is not a registered model builder; registered: {known}")
    return matches[0]
