"""Option and argument pieces shared by the verb modules: --json, bounded numbers, and commands
that end in `-- CMD ...` (launch, edf run)."""

from __future__ import annotations

import click

from cordee.errors import shown
from cordee.numbers import as_int


def verb_group(name: str, help_text: str):
    """A verb's group of sub-verbs. Without a sub-verb it is a usage error (one line, exit 2), not
    click's help page (exit 0 before click 8.2, exit 2 with the whole page on stderr since)."""
    return click.group(name, help=help_text, no_args_is_help=False)


def json_option(schema: str):
    return click.option("--json", "as_json", is_flag=True, help=f"Print JSON (schema {schema}).")


def _parse(ptype: click.ParamType, kind: type, value, param, ctx):
    if isinstance(value, kind):
        return value
    try:
        number = as_int(value) if kind is int else float(value)  # as_int: ASCII digits only
    except ValueError:
        number = None
    if number is None:
        ptype.fail(f"{shown(value)} is not a number ({kind.__name__})", param, ctx)
    return number


class Number(click.ParamType):
    """An int or float within lo..hi (nan is in no range)."""

    def __init__(self, kind: type, lo: float, hi: float) -> None:
        self.kind, self.lo, self.hi = kind, lo, hi
        self.name = kind.__name__

    def convert(self, value, param, ctx):
        number = _parse(self, self.kind, value, param, ctx)
        if not self.lo <= number <= self.hi:
            self.fail(f"{number} is not in {self.lo}..{self.hi}", param, ctx)
        return number


class Seconds(click.ParamType):
    """A positive number of seconds up to `most`: nan, inf or 1e10 would leave a child unbounded
    (or overflow the poll() that waits for it)."""

    name = "seconds"

    def __init__(self, most: float) -> None:
        self.most = most

    def convert(self, value, param, ctx):
        number = _parse(self, float, value, param, ctx)
        if not 0 < number <= self.most:
            self.fail(f"{number:g}: must be a positive number of seconds, at most {self.most:g}", param, ctx)
        return number


class EndsInCommand(click.Command):
    """A command whose last argument, `cmd` (nargs=-1), is a command line passed through untouched.

    CMD starts at the first word after the command's own positionals (or after '--'), so its
    options (`python -c ...`) are never taken for cordee's; one '--' before it is dropped.
    Options may also stand between the positionals and '--': `edf run NAME --timeout 5 -- CMD`.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("context_settings", {})["allow_interspersed_args"] = False
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, self._options_first(args))
        cmd = list(ctx.params.get("cmd") or ())
        ctx.params["cmd"] = cmd[1:] if cmd[:1] == ["--"] else cmd
        return rest

    def _options_first(self, args: list[str]) -> list[str]:
        """NAME --opt ... -- CMD  ->  --opt ... NAME -- CMD (what click's parser understands)."""
        wanted = sum(1 for p in self.params if isinstance(p, click.Argument) and p.nargs == 1)
        if not wanted:
            return args
        takes_value = {
            name
            for p in self.params
            if isinstance(p, click.Option) and not p.is_flag and not p.count
            for name in p.opts
        }
        i, seen = 0, 0
        while i < len(args) and seen < wanted:
            if args[i] == "--":
                return args  # the positionals come after '--': nothing stands between
            if args[i].startswith("-") and len(args[i]) > 1:
                i += 2 if args[i] in takes_value else 1
            else:
                seen, i = seen + 1, i + 1
        between_end = args.index("--", i) if "--" in args[i:] else i
        if i == between_end or not args[i].startswith("-"):
            return args  # CMD follows the positionals directly
        return [*args[: i - 1], *args[i:between_end], args[i - 1], *args[between_end:]]
