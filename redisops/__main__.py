"""`python -m redisops` runs the CLI."""

from redisops.cli import main

main()
