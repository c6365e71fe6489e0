"""``python -m journal ARGS`` is ``journal ARGS``, for a process without the console script."""

from journal.cli import main

if __name__ == "__main__":
    main(prog_name="journal")
