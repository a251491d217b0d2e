"""``python -m eqsat_dnn.cli``: the ``eqsat-dnn`` command."""

import sys

from eqsat_dnn.cli import main

sys.exit(main())
