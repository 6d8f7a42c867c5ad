"""`python -m variant`: the same as the `variant` command."""
import sys

from variant.cli import main

sys.exit(main())
