"""``python -m ciliumpy``: the ``ciliumpy`` command."""

from .cli import main

raise SystemExit(main())
