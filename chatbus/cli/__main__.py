"""``python -m chatbus.cli …``: the ``chatbus`` command (the supervisor starts components so)."""

from chatbus.cli import main

main()
