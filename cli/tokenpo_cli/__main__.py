"""`python -m tokenpo_cli` runs the `tokenpo` command."""

from tokenpo_cli.app import main

main()
