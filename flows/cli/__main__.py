"""`python -m flows.cli ...`: the `alexnet` command (what torchrun and the pipeline's
training launcher run)."""

import sys

from flows.cli import main

sys.exit(main())
