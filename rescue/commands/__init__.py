"""One module per `rescue` subcommand (NAME, HELP, add_arguments, run)."""
