"""`python -m edgecast_runtime.cli`, the same as `edgecast-runtime`."""

import sys

from edgecast_runtime.cli.main import main

sys.exit(main())
