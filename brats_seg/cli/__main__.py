"""``python -m brats_seg.cli``: the ``brats-seg`` command."""

import sys

from . import main

sys.exit(main())
