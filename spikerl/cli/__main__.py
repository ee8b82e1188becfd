"""`python -m spikerl.cli`: the same as the `spikerl` command."""

import sys

from spikerl.cli import main

sys.exit(main())
