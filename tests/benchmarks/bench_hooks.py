"""What cordee's Enroot hooks add to every container start.

Each case restores fresh ENROOT_ENVIRON / ENROOT_MOUNTS files (a 200-line environment, about what
Pyxis hands over with a Slurm job's variables) and then runs the hook under bash, as Enroot does;
the baseline does the same restore and runs `true`, so the difference is the hook's own cost.
The net-plugin case resolves a gcc-built plugin -> libfabric -> libcxi chain with the real ldd.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

from common import print_table, time_commands, write_result

REPO = Path(__file__).resolve().parents[2]
HOOKS = REPO / "hooks"


def build_host(root: Path) -> None:
    lib64, fab = root / "usr/lib64", root / "opt/cray/libfabric/1.22.0/lib64"
    for d in (lib64, fab / "libfabric", root / "dev"):
        d.mkdir(parents=True)
    sources = {
        lib64 / "libcxi.so.1": ("int cxil(void) { return 1; }", ["-Wl,-soname,libcxi.so.1"]),
        fab / "libfabric.so.1": (
            "int cxil(void); int fi_version(void) { return cxil(); }",
            ["-Wl,-soname,libfabric.so.1", str(lib64 / "libcxi.so.1"), f"-Wl,-rpath,{lib64}"],
        ),
        fab / "libfabric/libcxi-fi.so": ("int prov(void) { return 0; }", []),
        lib64 / "libnccl-net-ofi.so": (
            "int fi_version(void); int plugin(void) { return fi_version(); }",
            [str(fab / "libfabric.so.1"), f"-Wl,-rpath,{fab}"],
        ),
    }
    for out, (code, args) in sources.items():
        src = out.with_suffix(".c")
        src.write_text(code + "\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out), str(src), *args], check=True, timeout=120)
    for n in range(4):
        (root / "dev" / f"cxi{n}").touch()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        build_host(t / "host")
        (t / "rootfs").mkdir()
        (t / "environ.base").write_text("".join(f"SLURM_VAR_{i}=value-{i}\n" for i in range(200)))
        subprocess.run(
            [sys.executable, "-m", "cordee.profiles.envfile", "--all", "--out", str(t / "profiles")],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "ENROOT_ENVIRON": str(t / "environ"),
            "ENROOT_MOUNTS": str(t / "fstab"),
            "ENROOT_ROOTFS": str(t / "rootfs"),
            "ENROOT_PID": "1",
            "CORDEE_HOOK_HOSTROOT": str(t / "host"),
            "CORDEE_HOOK_PROFILE_DIR": str(t / "profiles"),
        }
        reset = f'cp "{t}/environ.base" "$ENROOT_ENVIRON"; : > "$ENROOT_MOUNTS"; '

        def case(what: str) -> list[str]:
            return ["bash", "-c", reset + what]

        cases = {
            "baseline (reset files, true)": case("true"),
            "50-cordee-fabric-profile.sh": case(f'bash "{HOOKS}/50-cordee-fabric-profile.sh"'),
            "99-cordee-netplugin.sh": case(f'bash "{HOOKS}/99-cordee-netplugin.sh"'),
        }
        results = time_commands(cases, rounds=30, env=env)
    base = results["baseline (reset files, true)"]["median_s"]
    rows = []
    for name, r in results.items():
        r["added_s"] = r["median_s"] - base
        rows.append(
            (
                name,
                f"{r['median_s'] * 1e3:.1f} ms",
                f"{r['min_s'] * 1e3:.1f} ms",
                f"{r['added_s'] * 1e3:.1f} ms",
            )
        )
    print_table(
        "Enroot hooks: cost per container start (30 rounds, round-robin, 200-line environment)",
        rows,
        ("case", "median", "min", "added (median)"),
    )
    print(f"wrote {write_result('enroot_hooks', {'environ_lines': 200, 'cases': results})}")


if __name__ == "__main__":
    main()
