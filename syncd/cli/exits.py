"""The CLI's exit codes (documented in the README). A module of its own so that ``syncd --help``
and the dispatcher import nothing heavy."""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_GAP = 3  # the change log was pruned past the reader: re-read the mirror
EXIT_LOCKED = 4  # another syncd holds the database
EXIT_INTERRUPTED = 130
