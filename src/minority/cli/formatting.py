"""argparse with the project's conventions: every option shows its default once; errors are one line."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows ``(default: ...)`` for every option (once) and keeps description line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or "%(default)" in text or "(default" in text:
            return text  # positional, or the help states its default itself
        if action.default is None and "default" not in text and action.option_strings:
            return text + " (default: none)"
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <problem> (see `minority <cmd> --help`)``, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")
