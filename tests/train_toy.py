"""``python -m mrtutor.train`` with the toy recipe of ``toy_recipe.py`` registered (also under torchrun)."""

import toy_recipe  # noqa: F401  (registers the recipe "toy")
from mrtutor.train import main

main()
