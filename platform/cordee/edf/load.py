"""Environment Definition Files (EDF) of the CSCS Container Engine: find, check, load.

The rules are those of cscs-docs software/container-engine/edf.md and run.md:
- an EDF is named by an absolute path, a relative path (from the caller's working directory) or a
  name looked up as NAME.toml in each directory of $EDF_PATH (colon separated, default ~/.edf);
- `base_environment` entries follow the same lookup; bases are evaluated in order before the file
  itself, "adding new entries or overwriting previous ones": `mounts` are appended, `env` and
  `annotations` are merged key by key (the later file wins), image/workdir/entrypoint/writable are
  inherited unless set again; up to 10 levels of recursion;
- defaults: image "" (no container), workdir from the image, entrypoint true, writable true.
  (an early team note gave entrypoint false; every version of edf.md read says true.)
check_edf collects every problem; load_edf raises on errors. Value checks: fields.py;
`${VAR}` expansion: expand.py; one file's keys and types: layer.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from cordee.edf import fields
from cordee.edf.fields import Mount
from cordee.edf.layer import KEYS, SCALARS, Layer, empty_values, parse_layer
from cordee.errors import InputError, one_line, shown

__all__ = ["KEYS", "Edf", "EdfError", "EdfReport", "Finding", "Mount", "check_edf", "find_edf", "load_edf"]

MAX_DEPTH = 10  # edf.md: "Supports up to 10 levels of recursion" (bases of bases ..., 10 deep)
DEFAULTS = {"image": "", "workdir": None, "entrypoint": True, "writable": True}


class EdfError(InputError):
    """An EDF that cannot be found or used: one line naming file, field and what is allowed."""


class Edf(NamedTuple):
    """A resolved EDF: inheritance applied, `${VAR}` expanded, defaults filled."""

    path: str
    image: str  # "" = no container; an absolute squashfs path or [USER@][REGISTRY#]IMAGE[:TAG]
    workdir: str | None
    entrypoint: bool
    writable: bool
    mounts: tuple[Mount, ...]
    env: dict[str, str]  # "" = unset the variable in the container (edf.md)
    annotations: dict[str, str]  # dotted names, e.g. com.hooks.aws_ofi_nccl.enabled
    chain: tuple[str, ...]  # files in inheritance order, base first, this file last


class Finding(NamedTuple):
    file: str
    field: str
    message: str
    severity: str  # "error" | "warning"


class EdfReport(NamedTuple):
    path: str
    findings: list[Finding]
    edf: Edf | None  # None when there are errors

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)


def edf_search_path(environ: Mapping[str, str]) -> list[str]:
    """$EDF_PATH's entries in order (colon separated; run.md: only absolute ones are searched),
    default ~/.edf. Lookup (find_edf) and install (build.edf_dir) both start here."""
    home = environ.get("HOME") or os.path.expanduser("~")
    return [d for d in environ.get("EDF_PATH", "").split(":") if d] or [os.path.join(home, ".edf")]


def find_edf(name_or_path: str, environ: Mapping[str, str]) -> Path:
    """The EDF file for NAME or PATH, looked up as `srun --environment=` does (run.md)."""
    if not name_or_path:
        raise EdfError("empty EDF name: give a NAME (looked up in $EDF_PATH) or a path to a .toml file")
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(os.path.abspath(name_or_path))
        if not os.path.isfile(path):  # os.path: Path.is_file raises on a name over NAME_MAX
            raise EdfError(f"EDF file {shown(str(path))} not found")
        return path
    looked = []
    for d in edf_search_path(environ):
        if not os.path.isabs(d):  # run.md: EDF_PATH lists absolute directories
            looked.append(f"{d} (ignored: not absolute)")
            continue
        candidate = Path(d, f"{name_or_path}.toml")
        if os.path.isfile(candidate):
            return Path(os.path.abspath(candidate))
        looked.append(str(candidate))
    raise EdfError(
        f"EDF {shown(name_or_path)} not found; looked for {', '.join(looked)} "
        "(set EDF_PATH, or give a path: ./NAME.toml)"
    )


def check_edf(name_or_path: str, environ: Mapping[str, str] = os.environ) -> EdfReport:
    """Every problem of the EDF and of its bases; raises only when the file itself is not found."""
    top = find_edf(name_or_path, environ)
    resolver = _Resolver(environ)
    merged = resolver.resolve(top, ())
    edf = None
    if merged is not None:
        mounts = _checked_mounts(merged["mounts"], resolver, str(top))
        values = {k: DEFAULTS[k] if merged[k] is None else merged[k] for k in SCALARS}
        for field, severity, message in fields.check_merged(
            values["image"], values["writable"], merged["env"], merged["annotations"]
        ):
            resolver.add(str(top), field, severity, message)
        edf = Edf(
            path=str(top),
            mounts=mounts,
            env=merged["env"],
            annotations=merged["annotations"],
            chain=tuple(merged["chain"]),
            **values,
        )
    findings = list(dict.fromkeys(resolver.findings))  # a base reached twice reports once
    report = EdfReport(str(top), findings, None)
    return report._replace(edf=edf) if report.ok else report


def load_edf(name_or_path: str, environ: Mapping[str, str] = os.environ) -> Edf:
    """The resolved EDF; EdfError with the first error (and how many more) if it has any."""
    report = check_edf(name_or_path, environ)
    errors = [f for f in report.findings if f.severity == "error"]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more: cordee edf check {name_or_path})" if len(errors) > 1 else ""
        raise EdfError(f"{first.file}: {first.field}: {first.message}{more}")
    assert report.edf is not None
    return report.edf


def edf_as_dict(edf: Edf) -> dict[str, Any]:
    """JSON-ready form (cordee.edfcheck/1 `edf`)."""
    doc = edf._asdict()
    doc["mounts"] = [{"src": m.src, "dst": m.dst, "flags": list(m.flags)} for m in edf.mounts]
    doc["chain"] = list(edf.chain)
    return doc


def _checked_mounts(mounts: list[Mount], resolver: _Resolver, file: str) -> tuple[Mount, ...]:
    """Warnings for two mounts on one destination. The same mount twice (a base inherited twice)
    was already kept once while merging (_merge); podman refuses duplicates."""
    by_dst: dict[str, Mount] = {}
    for m in mounts:
        if m.dst in by_dst:
            message = f"{m.dst} is mounted twice; {m.src} hides {by_dst[m.dst].src}"
            resolver.add(file, "mounts", "warning", message)
        by_dst[m.dst] = m
    return tuple(mounts)


def _merge(acc: dict[str, Any], part: dict[str, Any]) -> None:
    for key in SCALARS:
        if part[key] is not None:
            acc[key] = part[key]
    # exact duplicates dropped here, not only at the end: a base inherited along many paths would
    # otherwise multiply the list at every level (fan-out: 3 references x 11 levels = 177,147)
    acc["mounts"] = list(dict.fromkeys([*acc["mounts"], *part["mounts"]]))
    acc["env"].update(part["env"])
    acc["annotations"].update(part["annotations"])
    acc["chain"].extend(p for p in part["chain"] if p not in acc["chain"])


class _Resolver:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.findings: list[Finding] = []
        self.layers: dict[Path, Layer | None] = {}
        # (file, depth) -> its merged values: a base listed many times, or reached along many
        # paths, is resolved once per depth (depth decides the "more than 10 levels" finding)
        self.resolved: dict[tuple[Path, int], dict[str, Any] | None] = {}

    def add(self, file: str, field: str, severity: str, message: str) -> None:
        # keys, values and file names come from the user: a newline in one must not split a finding
        self.findings.append(Finding(one_line(file), one_line(field), one_line(message), severity))

    def resolve(self, path: Path, stack: tuple[Path, ...]) -> dict[str, Any] | None:
        key = (path, len(stack))
        if key not in self.resolved:
            self.resolved[key] = self._resolve(path, stack)
        return self.resolved[key]

    def _resolve(self, path: Path, stack: tuple[Path, ...]) -> dict[str, Any] | None:
        if path not in self.layers:
            self.layers[path] = parse_layer(path, self.environ, self.add)
        layer = self.layers[path]
        if layer is None:
            return None
        here = (*stack, path)
        acc = empty_values()
        for field, base in layer.bases:
            try:
                base_path = find_edf(base, self.environ)
            except EdfError as e:
                self.add(str(path), field, "error", str(e))
                continue
            if base_path in here:
                cycle = " -> ".join(p.name for p in (*here[here.index(base_path) :], base_path))
                self.add(str(path), field, "error", f"inheritance cycle: {cycle}")
            elif len(here) > MAX_DEPTH:
                chain = " -> ".join(p.name for p in (*here, base_path))
                message = f"more than {MAX_DEPTH} levels of base_environment: {chain}"
                self.add(str(path), field, "error", message)
            else:
                sub = self.resolve(base_path, here)
                if sub is not None:
                    _merge(acc, sub)
        _merge(acc, layer.own)
        return acc
