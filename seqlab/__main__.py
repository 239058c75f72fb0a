"""``python -m seqlab``: the same as the ``seqlab`` command."""

import sys

from seqlab.cli import main

sys.exit(main())
