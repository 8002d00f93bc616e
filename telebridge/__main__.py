"""`python -m telebridge` is the same as the `telebridge` console script."""

from telebridge.cli import main

raise SystemExit(main())
