"""`python -m minires ...` runs the `minires` command."""
from .cli import main

raise SystemExit(main())
