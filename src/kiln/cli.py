"""`kiln <verb>`: the command line, a table of the verbs each stage package defines (kiln/verbs.py).

A verb's options and work live beside the code they run; here they are listed, parsed and run, and a
user error (KilnError) becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

from kiln.errors import KilnError
from kiln.verbs import ExitCode, Verb


def verbs() -> list[Verb]:
    """Every verb, in the order `kiln --help` lists them."""
    from kiln import run, stages
    from kiln.evaluate import verbs as evaluate
    from kiln.finetune import demo
    from kiln.finetune import verb as finetune
    from kiln.scaling import verbs as scaling
    from kiln.train import verb as train
    from kiln.transfer import verbs as transfer

    return [
        run.VERB,
        stages.CURATE,
        stages.TOKENIZER,
        stages.TOKENIZE,
        stages.TRAIN,
        evaluate.EVAL,
        evaluate.GENERATE,
        train.CONVERT,
        finetune.VERB,
        scaling.PLAN,
        scaling.SWEEP,
        demo.VERB,
        transfer.EXPORT,
        transfer.IMPORT,
    ]


class KilnParser(argparse.ArgumentParser):
    """argparse with a one-line error: the problem and where the help is, not the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


NEGATIVE_VALUE = re.compile(r"-\.?\d")
"""An argument that is a negative value (-5, -5m, -.5), not an option: kiln has no option starting so."""


def join_negative_values(argv: list[str]) -> list[str]:
    """`--opt -5m` -> `--opt=-5m`, so argparse reads a negative value as the option's value (and the
    option's own check refuses it) instead of as an unknown option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and NEGATIVE_VALUE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def build_parser(table: list[Verb] | None = None) -> argparse.ArgumentParser:
    parser = KilnParser(
        prog="kiln",
        description="kiln: raw text to an evaluated language model. Each verb reads and writes one "
        "run directory; `kiln run` does them all.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in table or verbs():
        verb.arguments(sub.add_parser(verb.name, help=verb.help, description=verb.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    table = verbs()
    try:
        args = build_parser(table).parse_args(join_negative_values(argv))
    except SystemExit as e:  # --help (0) or a usage error (2, already printed in one line)
        return e.code if isinstance(e.code, int) else 2
    args.argv = list(argv)
    try:
        result = next(v for v in table if v.name == args.verb).run(args)
    except KilnError as e:
        print(f"kiln {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kiln {args.verb}: interrupted", file=sys.stderr)
        return 130
    return result.code if isinstance(result, ExitCode) else 0
