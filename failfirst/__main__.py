"""`python -m failfirst` runs the command line."""

from failfirst.cli import main

raise SystemExit(main())
