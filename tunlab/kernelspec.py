"""``python -m tunlab.kernelspec -f CONNECTION_FILE``: the command that installed "tunlab (no
sudo)" kernel specs run (their argv names this module, so it stays here); the kernel spec itself
is :mod:`tunlab.course.kernelspec`."""

import sys

from tunlab.course.kernelspec import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
