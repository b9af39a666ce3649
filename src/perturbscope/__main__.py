"""``python -m perturbscope``: the same as the ``perturbscope`` command."""

import sys

from perturbscope.cli.main import main

sys.exit(main())
