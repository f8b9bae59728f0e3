"""`python -m engine` is the same as the `engine` console script."""

from engine.cli import main

raise SystemExit(main())
