"""The stagewise command line: a thin layer over the Python API in `stagewise/__init__.py`.

Each command parses its options, makes one API call, and prints. Library errors (StagewiseError)
become one clear message with exit code 1 and no traceback. Every command has a one-line summary
and an `Example:` block (tests/test_cli_docs.py checks this).

Commands are grouped in sections, one per stage, so each stage's owner edits only its section.
"""

from __future__ import annotations

import sys

import click

from stagewise.curate.errors import StagewiseError


class _Group(click.Group):
    """Turns library errors into a clean click error (exit 1, no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except StagewiseError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted. Re-run the same command to resume where it stopped.", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="stagewise")
def cli():
    """stagewise: probe a model's mastery per problem, route items to SFT or RL, export, train.

    \b
    Example:
        stagewise profile gsm8k:data/gsm8k_test.jsonl
        stagewise run                      # the whole pipeline on the embedded default
    """


def main(argv=None):
    """Console-script entry point."""
    return cli.main(args=argv, prog_name="stagewise")


# ---------------------------------------------------------------------------------------------------
# curate: profile (issue 2)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# curate: probe, eval, merge (issue 3)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# stages: route, export (issue 4)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# train: train sft / rl / joint (issues 5, 8)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# run, experiment (issues 6, 7)
# ---------------------------------------------------------------------------------------------------


if __name__ == "__main__":  # pragma: no cover
    main()
