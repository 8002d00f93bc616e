"""`python -m telebridge` is the same as the `telebridge` console script."""

from telebridge.cli.main import main

raise SystemExit(main())
