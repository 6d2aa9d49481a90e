"""``python -m annbench.cli``: the ``annbench`` command."""

from annbench.cli import main

if __name__ == "__main__":
    main()
