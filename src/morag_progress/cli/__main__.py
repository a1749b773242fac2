"""``python -m morag_progress.cli``."""

from morag_progress.cli import main

main()
