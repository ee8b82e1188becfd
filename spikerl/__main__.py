"""`python -m spikerl ...` is the `spikerl` command."""

import sys

from spikerl.cli import main

sys.exit(main())
