"""``python -m saestudio.cli``: what torchrun launches (``-m saestudio.cli train ...``)."""

import sys

from saestudio.cli import main

sys.exit(main())
