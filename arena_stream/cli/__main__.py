"""``python -m arena_stream.cli``: the same as the ``arena-stream`` command."""

import sys

from arena_stream.cli.entry import main

sys.exit(main())
