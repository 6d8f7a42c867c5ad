"""One module per DAG stage: each a `variant` subcommand that the rules call."""
