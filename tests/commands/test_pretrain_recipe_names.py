"""`kikimimi pretrain --recipe` lists every recipe of methods/recipes.py (the parser keeps a literal copy so that
`--help` imports nothing heavy; this test keeps the two equal)."""

from __future__ import annotations

import argparse

from kikimimi.commands import pretrain as pretrain_command
from kikimimi.methods.recipes import RECIPES


def test_recipe_choices_are_the_recipes() -> None:
    parser = argparse.ArgumentParser()
    pretrain_command.add_arguments(parser)
    action = next(a for a in parser._actions if a.dest == "recipe")
    assert set(action.choices) == {"auto", *RECIPES}
    assert all(name in action.help for name in RECIPES)
