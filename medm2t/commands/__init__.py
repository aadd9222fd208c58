"""One module per `medm2t` subcommand; each defines `register(subparsers)` and sets `handler` via set_defaults."""
