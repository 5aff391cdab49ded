"""``python -m vireid_layers.recipes``: the ``vireid-train`` command (:func:`vireid_layers.recipes.cli.main`)."""

from .cli import console_main

if __name__ == "__main__":  # not when a doctest collector imports the module
    console_main()
