"""The Typer application that every verb module registers its command on (kept apart from
`__init__` so that verb modules can import it without a cycle)."""

import typer

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
    help="Declare a neural network in YAML; validate, gradient-check, train and time it.",
)
