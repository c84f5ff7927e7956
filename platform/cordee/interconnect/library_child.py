"""Child side of `cordee net show`: load libnccl and libfabric, answer in one JSON document.

    python -m cordee.interconnect.library_child [--nccl PATH] [--libfabric PATH] [--provider NAME]

Each section carries either its facts or an "error"; a crash or hang of the whole child is
handled by the parent (child_protocol.run_module).
"""

from __future__ import annotations

import argparse
import os

from cordee.interconnect.child_protocol import emit


def nccl_facts(path: str) -> dict:
    from cordee.interconnect.libload import LibraryLocation
    from cordee.interconnect.nccl import Nccl

    try:
        lib = Nccl(LibraryLocation(path, "given"))
        major, minor, patch = lib.version
        return {"version": f"{major}.{minor}.{patch}", "version_code": lib.version_code}
    except Exception as e:  # noqa: BLE001 - any failure to load or call is the answer here
        return {"error": f"{type(e).__name__}: {e}"}


def libfabric_facts(path: str, provider: str | None) -> dict:
    """Version and endpoints, with what filtered them: FI_PROVIDER as this process had it
    (libfabric reads it at its initialisation) and `provider`, the --provider of net show."""
    from cordee.interconnect.libfabric import PROVIDER_VAR, Libfabric
    from cordee.interconnect.libload import LibraryLocation

    filters = {"fi_provider": os.environ.get(PROVIDER_VAR), "provider_filter": provider}
    try:
        lib = Libfabric(LibraryLocation(path, "given"))
        infos = lib.getinfo(provider)
        return {"version": lib.version, "endpoints": [i.as_dict() for i in infos], **filters}
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}", **filters}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cordee.interconnect.library_child")
    parser.add_argument("--nccl")
    parser.add_argument("--libfabric")
    parser.add_argument("--provider")
    args = parser.parse_args(argv)
    doc: dict = {}
    if args.nccl:
        doc["nccl"] = nccl_facts(args.nccl)
    if args.libfabric:
        doc["libfabric"] = libfabric_facts(args.libfabric, args.provider)
    emit(doc)


if __name__ == "__main__":
    main()
