"""A method's hyperparameters as command-line flags, typed by that method's own declarations.

``minority generate --method NAME`` gets exactly NAME's flags (``--kebab-case`` of each field, with its type,
choices, default and help); a flag that only other methods have is an error naming them.
"""

from __future__ import annotations

import argparse
import dataclasses

from minority.core.params import value_type
from minority.errors import MinorityError
from minority.methods import METHODS, Method


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parser_for(f: dataclasses.Field, kind: type):
    """String -> value for a field: its type, or a number / one of its keywords (``perturb``: annealed)."""
    words = f.metadata.get("keywords", ())

    def parse(text: str):
        if text in words:
            return text
        try:
            return kind(text)
        except ValueError:
            allowed = f" or {', '.join(words)}" if words else ""
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value{allowed}: {text!r}") from None

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def add_method_arguments(parser: argparse.ArgumentParser, method: type[Method]) -> dict[str, str]:
    """Add one flag per hyperparameter of ``method`` (in a group named after it); returns ``{dest: field}``."""
    group = parser.add_argument_group(f"{method.name} options", method.summary or None)
    dests = {}
    for f in method.hyperparameters():
        kind = value_type(f, method)
        kw: dict = {"dest": f"param_{f.name}", "default": None}
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = _parser_for(f, kind)
            kw["metavar"] = f.name.upper()
            if f.metadata.get("choices"):
                kw["choices"] = f.metadata["choices"]
        text = f.metadata.get("help", "")
        if "(default" not in text:  # a help that names model-dependent defaults says so itself
            text += f" (default: {'none' if f.default is None else f.default})"
        kw["help"] = text.replace("%", "%%")
        group.add_argument(flag(f.name), **kw)
        dests[f"param_{f.name}"] = f.name
    return dests


def method_params(args: argparse.Namespace, dests: dict[str, str]) -> dict:
    """The hyperparameters given on the command line (flags left out keep the method's defaults)."""
    return {name: getattr(args, dest) for dest, name in dests.items() if getattr(args, dest) is not None}


def refuse_foreign_flags(extras: list[str], method: str) -> None:
    """Error for the first unknown option: name the methods that have it, if any."""
    for token in extras:
        if not token.startswith("--"):
            continue
        name = token[2:].split("=", 1)[0]
        name = name[3:] if name.startswith("no-") and name[3:].replace("-", "_") in _owners() else name
        owners = _owners().get(name.replace("-", "_"), [])
        if owners:
            raise MinorityError(f"--{name} is not an option of method {method!r}: it belongs to "
                                f"{', '.join(owners)} (see `minority generate --method {owners[0]} --help`).")
        raise MinorityError(f"unrecognized option {token} (see `minority generate --method {method} --help`).")
    if extras:
        raise MinorityError(f"unrecognized arguments: {' '.join(extras)}")


def _owners() -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    for name, m in sorted(METHODS.items()):
        for f in m.hyperparameters():
            owners.setdefault(f.name, []).append(name)
    return owners


def chosen_method(argv: list[str], default: str = "ddim") -> str:
    """The value of ``--method`` in ``argv`` (before parsing: the method decides which flags exist)."""
    for i, tok in enumerate(argv):
        if tok == "--":
            break
        if tok == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith("--method="):
            return tok.split("=", 1)[1]
    return default
