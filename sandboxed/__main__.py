"""``python -m sandboxed``: the command line."""

import sys

from sandboxed._cli import main

sys.exit(main())
