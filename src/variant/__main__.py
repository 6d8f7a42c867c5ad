"""`python -m variant`: the same as the `variant` command."""
import sys

from .cli import main

sys.exit(main())
