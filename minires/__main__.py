"""`python -m minires ...` runs the `minires` command.

`python -m` puts the current folder first on sys.path; run from inside a student's hand-in, a file
there named like a module minires imports (numpy.py, secrets.py) would be imported in its place.
minires/__init__.py takes that entry off the path before it imports anything (it runs first, as
`-m` imports the package before this module)."""
from .cli import main

raise SystemExit(main())
