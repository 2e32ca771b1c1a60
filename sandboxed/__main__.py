"""``python -m sandboxed``: the command line."""

import sys

from sandboxed.cli.main import main

sys.exit(main())
