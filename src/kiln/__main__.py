import logging
import os
import sys

from kiln.cli import main


def _exit(code: int) -> None:
    """Leave with `code`. A process torchrun launched as one of several ranks skips the interpreter's
    teardown once the command has finished (its process group destroyed, every file closed): tearing
    down live gloo/FSDP objects there can abort a rank whose work is done ("terminate called without
    an active exception", SIGABRT, seen in CI on a 2-core machine), and torchrun then fails the launch."""
    world = os.environ.get("WORLD_SIZE", "1")
    if world.isdecimal() and int(world) > 1:  # (one that is no number was refused by the command)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":  # spawned worker processes re-import this module; they must not run the CLI
    _exit(main())
