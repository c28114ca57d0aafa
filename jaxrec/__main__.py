"""``python -m jaxrec`` is the ``jaxrec`` command."""

import sys

from jaxrec.cli import main

sys.exit(main())
