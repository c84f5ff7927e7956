"""Check a live environment against a fabric profile, plus the known traps. Pure.

Per variable: ok, missing (profile sets it, environment does not), different (set to
another value, or a value outside what cordee knows), dangerous (a known trap, or a
value that cannot be parsed). One item per variable; when several findings hit one
variable the worst status wins and the messages are joined.

Traps, evaluated whether or not the profile lists the variable:
1. NCCL_NET_PLUGIN together with NCCL_NET naming a plugin's net    dangerous
   (with NCCL_NET=IB/Socket: different, the plugin is loaded for nothing)
2. FI_CXI_DEFAULT_TX_SIZE above 16384                               dangerous
3. LL128 enabled on a Slingshot profile                             dangerous
4. NCCL_NET forced on a single-node run                             different (a warning)
5. MPICH_GPU_SUPPORT_ENABLED=1 (cordee always runs NCCL)            dangerous
Trap 4 is a warning: the run works (CE's NCCL hook even sets NCCL_NET on one node),
it only costs a needless VNI allocation and fails where no network is available;
the others corrupt, deadlock, fail to start or silently lose performance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from cordee.numbers import as_int
from cordee.profiles.loader import Profile, ProfileVar
from cordee.profiles.values import check_value, ll128_scopes, source_for

SCHEMA = "cordee.envcheck/1"
STATUSES = ("ok", "missing", "different", "dangerous")
_RANK = {s: i for i, s in enumerate(STATUSES)}
UNSET = "(unset)"
TX_SIZE_MAX = 16384
INTERNAL_NETS = ("ib", "socket")  # NCCL's built-in transports: need no plugin

SRC_PLUGIN = "cscs-docs: software/communication/nccl.md (Known issues: NCCL_NET_PLUGIN)"
SRC_TX = "cscs-docs: software/communication/nccl.md; REFERENCE 3 (32768 is above the real maximum)"
SRC_LL128 = "cscs-docs: software/communication/nccl.md (NCCL_PROTO=^LL128); NVIDIA/nccl issue 2001"
SRC_SINGLE = "HewlettPackard/shs-ccl-docs (plugin 1.19): do not set NCCL_NET on single-node runs"
SRC_MPICH = "cscs-docs: software/communication/nccl.md (GPU-aware MPI with NCCL); NCCL docs mpi.html"


@dataclass(frozen=True)
class CheckItem:
    name: str
    status: str  # one of STATUSES
    expected: str | None
    actual: str | None  # None: not set
    message: str
    source: str


@dataclass(frozen=True)
class CheckReport:
    profile: str
    family: str
    nnodes: int | None
    items: tuple[CheckItem, ...]
    optional: tuple[ProfileVar, ...]  # the profile's optional variables that are not set

    @property
    def exit_code(self) -> int:
        statuses = {i.status for i in self.items}
        if "dangerous" in statuses:
            return 2
        return 1 if statuses & {"missing", "different"} else 0

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for i in self.items if i.status == s) for s in STATUSES}

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "profile": self.profile,
            "family": self.family,
            "nnodes": self.nnodes,
            "items": [asdict(i) for i in self.items],
            "optional": [asdict(v) for v in self.optional],
            "summary": self.counts(),
            "exit_code": self.exit_code,
        }


def _join(a: str, b: str, sep: str = " | ") -> str:
    parts = [p for p in a.split(sep) if p] if a else []
    parts += [p for p in b.split(sep) if p and p not in parts]
    return sep.join(parts)


class _Items:
    """Ordered name -> item, merging findings: worst status wins, messages are joined."""

    def __init__(self) -> None:
        self.by_name: dict[str, CheckItem] = {}

    def add(self, item: CheckItem) -> None:
        old = self.by_name.get(item.name)
        if old is None:
            self.by_name[item.name] = item
            return
        worse, other = (item, old) if _RANK[item.status] > _RANK[old.status] else (old, item)
        if other.status == "ok":  # an ok finding adds nothing to a problem's message
            message = worse.message if worse.status != "ok" else _join(old.message, item.message)
        else:
            message = _join(worse.message, other.message)
        self.by_name[item.name] = replace(
            old,
            status=worse.status,
            expected=old.expected if old.expected is not None else item.expected,
            message=message,
            source=_join(old.source, item.source, sep="; "),
        )


def _same(expected: str, actual: str) -> bool:
    if actual == expected:
        return True
    a, e = as_int(actual), as_int(expected)
    return a is not None and a == e


def _compare(var: ProfileVar, actual: str | None, optional: bool) -> CheckItem:
    def item(status: str, message: str) -> CheckItem:
        return CheckItem(var.name, status, var.value, actual, message, var.source)

    if optional:
        if actual is not None and _same(var.value, actual):
            return item("ok", "optional, set to the profile's value")
        return item("ok", f"optional (not applied by default); the profile's value is {var.value!r}")
    if actual is None:
        return item("missing", f"not set; {var.note}")
    if actual == "":
        return item("different", f"set but empty; {var.note}")
    if _same(var.value, actual):
        return item("ok", "")
    return item("different", f"profile has {var.value!r}; {var.note}")


def _set(environ: Mapping[str, str], name: str) -> str | None:
    """The value of `name`, or None when unset or empty (NCCL treats empty as unset)."""
    value = environ.get(name)
    return value if value else None


def _traps(profile: Profile, environ: Mapping[str, str], nnodes: int | None) -> list[CheckItem]:
    found: list[CheckItem] = []
    net, plugin = _set(environ, "NCCL_NET"), _set(environ, "NCCL_NET_PLUGIN")

    # 1. NCCL prefers NCCL_NET_PLUGIN; when it cannot load that plugin it stops with "network
    #    <NCCL_NET> not found". With an internal net (IB, Socket) NCCL_NET wins and nothing fails,
    #    but a plugin is loaded for nothing: a warning, and none at all for NCCL_NET_PLUGIN=none.
    if net and plugin:
        if net.lower() not in INTERNAL_NETS:
            found.append(
                CheckItem(
                    "NCCL_NET_PLUGIN",
                    "dangerous",
                    UNSET,
                    plugin,
                    f"set together with NCCL_NET={net!r}: NCCL prefers NCCL_NET_PLUGIN, fails to find "
                    f"the plugin and stops with 'network {net} not found'; unset NCCL_NET_PLUGIN",
                    SRC_PLUGIN,
                )
            )
        elif plugin.lower() != "none":
            found.append(
                CheckItem(
                    "NCCL_NET_PLUGIN",
                    "different",
                    UNSET,
                    plugin,
                    f"loads a net plugin although NCCL_NET={net!r} forces NCCL's internal transport; "
                    "unset one of the two",
                    SRC_PLUGIN,
                )
            )

    # 2. Above the CXI maximum the provider silently falls back.
    tx = _set(environ, "FI_CXI_DEFAULT_TX_SIZE")
    tx_int = as_int(tx) if tx else None
    if tx_int is not None and tx_int > TX_SIZE_MAX:
        found.append(
            CheckItem(
                "FI_CXI_DEFAULT_TX_SIZE",
                "dangerous",
                f"<= {TX_SIZE_MAX}",
                tx,
                f"{tx_int} is above the real maximum ({TX_SIZE_MAX}); the provider falls back "
                "instead of using it",
                SRC_TX,
            )
        )

    # 3. LL128 on Slingshot: slower, and GDRCopy in the LL128 path corrupted results (nccl#2001).
    if profile.family == "slingshot":
        scopes = ll128_scopes(environ.get("NCCL_PROTO"))
        if scopes:
            found.append(
                CheckItem(
                    "NCCL_PROTO",
                    "dangerous",
                    "^LL128",
                    environ.get("NCCL_PROTO"),
                    f"LL128 is enabled for {', '.join(scopes)}: slower on Slingshot, and its GDRCopy "
                    "path returned wrong results on >= 8 GH200 nodes (nccl#2001); set NCCL_PROTO=^LL128",
                    SRC_LL128,
                )
            )

    # 4. One node needs no network; forcing it allocates a VNI for nothing (HPE).
    if nnodes == 1 and net:
        found.append(
            CheckItem(
                "NCCL_NET",
                "different",
                UNSET,
                net,
                "forces the network on a single-node run: needless VNI allocation, and NCCL fails "
                "where the network is unavailable; unset NCCL_NET for one node",
                SRC_SINGLE,
            )
        )

    # 5. GPU-aware MPI next to NCCL can deadlock.
    mpich = _set(environ, "MPICH_GPU_SUPPORT_ENABLED")
    if mpich is not None and as_int(mpich) not in (None, 0):
        found.append(
            CheckItem(
                "MPICH_GPU_SUPPORT_ENABLED",
                "dangerous",
                "0",
                mpich,
                "GPU-aware MPI together with NCCL can deadlock; set MPICH_GPU_SUPPORT_ENABLED=0",
                SRC_MPICH,
            )
        )
    return found


def check_environment(profile: Profile, environ: Mapping[str, str], nnodes: int | None) -> CheckReport:
    """Compare `environ` with `profile` and look for the known traps."""
    items = _Items()
    for var in profile.variables:
        items.add(_compare(var, environ.get(var.name), optional=False))
    unset_optional = []
    for var in profile.optional:
        if var.name in environ:
            items.add(_compare(var, environ[var.name], optional=True))
        else:
            unset_optional.append(var)

    for name in sorted(environ):
        value = environ[name]
        problem = check_value(name, value) if value else None
        if problem is not None:
            status, message = problem
            var = profile.get(name)
            expected = var.value if var is not None else None
            items.add(CheckItem(name, status, expected, value, message, source_for(name)))

    for item in _traps(profile, environ, nnodes):
        items.add(item)
    return CheckReport(
        profile.name, profile.family, nnodes, tuple(items.by_name.values()), tuple(unset_optional)
    )
