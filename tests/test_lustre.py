"""`lfs getstripe` parsing and the layout check (cordee.storage.lustre).

This machine has no Lustre, so the parser is tested on output in the formats the Lustre
documentation prints; each sample says where its format comes from. The runner is driven end to end
by a stand-in `lfs` script on PATH that only prints such output (or hangs, or fails): Lustre cannot
exist here, and the thing under test is the parsing, the comparison and the timeout, not `lfs`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cordee.errors import CordeeError
from cordee.storage import lustre
from cordee.storage.checks import stripe_finding
from cordee.storage.mounts import Mount

MIB = 1 << 20

# Lustre wiki, "Configuring Lustre File Striping" (wiki.lustre.org/Configuring_Lustre_File_Striping),
# "Setting Up Striping": the default layout of the filesystem root, a plain layout template.
PLAIN_DIR = """\
stripe_count:  2 stripe_size:   4194304 pattern:       0 stripe_offset: -1
"""

# Lustre Operations Manual, chapter "Data on MDT (DoM)", section "Setting a default DoM layout to an
# existing directory" (`lfs getstripe -d /mnt/lustre/domdir`), verbatim with the manual's line wrap:
# a composite directory template (lcme_id N/A, template lines for each component).
DOM_DIR = """\
  lcm_layout_gen:   0
  lcm_mirror_count: 1
  lcm_entry_count:  2
    lcme_id:             N/A
    lcme_flags:          0
    lcme_extent.e_start: 0
    lcme_extent.e_end:   1048576
      stripe_count:  0    stripe_size:   1048576    \\
      pattern:  mdt    stripe_offset:  -1

    lcme_id:             N/A
    lcme_flags:          0
    lcme_extent.e_start: 1048576
    lcme_extent.e_end:   EOF
      stripe_count:  1    stripe_size:   1048576    \\
      pattern:  raid0    stripe_offset:  -1
"""

# Same chapter, "lfs setstripe for DoM files" (`lfs getstripe /mnt/lustre/domfile` after 1 MB was
# written): a composite file, per-key lines and OST object lists.
DOM_FILE = """\
/mnt/lustre/domfile
  lcm_layout_gen:   3
  lcm_mirror_count: 1
  lcm_entry_count:  2
    lcme_id:             1
    lcme_flags:          init
    lcme_extent.e_start: 0
    lcme_extent.e_end:   1048576
      lmm_stripe_count:  0
      lmm_stripe_size:   1048576
      lmm_pattern:       mdt
      lmm_layout_gen:    0
      lmm_stripe_offset: 2
      lmm_objects:

    lcme_id:             2
    lcme_flags:          init
    lcme_extent.e_start: 1048576
    lcme_extent.e_end:   EOF
      lmm_stripe_count:  2
      lmm_stripe_size:   4194304
      lmm_pattern:       raid0
      lmm_layout_gen:    0
      lmm_stripe_offset: 0
      lmm_objects:
      - 0: { l_ost_idx: 0, l_fid: [0x100000000:0x2:0x0] }
      - 1: { l_ost_idx: 1, l_fid: [0x100010000:0x2:0x0] }
"""

# Same chapter, `lfs getstripe /mnt/lustre/domdir/normfile`: a plain file with the obdidx table.
PLAIN_FILE = """\
/mnt/lustre/domdir/normfile
lmm_stripe_count:  2
lmm_stripe_size:   1048576
lmm_pattern:       raid0
lmm_layout_gen:    0
lmm_stripe_offset: 1
  obdidx   objid   objid   group
       1              3           0x3              0
       0              3           0x3              0
"""

# The verbose/YAML-style form: the example in the comment above lov_dump_comp_v1() in Lustre's
# lustre/utils/liblustreapi.c ("An example of "getstripe -v" for a two components PFL file").
VERBOSE_FILE = """\
composite_header:
lcm_magic:       0x0BD60BD0
lcm_size:        264
lcm_flags:       0
lcm_layout_gen:  2
lcm_entry_count: 2
components:
- lcme_id:             1
  lcme_flags:          0x10
  lcme_extent.e_start: 0
  lcme_extent.e_end:   1048576
  lcme_offset:         128
  lcme_size:           56
  sub_layout:
    lmm_magic:         0x0BD10BD0
    lmm_seq:           0x200000401
    lmm_object_id:     0x1
    lmm_fid:           [0x200000401:0x1:0x0]
    lmm_stripe_count:  1
    lmm_stripe_size:   1048576
    lmm_pattern:       raid0
    lmm_layout_gen:    0
    lmm_stripe_offset: 0
    lmm_objects:
    - 0: { l_ost_idx: 0, l_fid: [0x100000000:0x2:0x0] }

- lcme_id:             2
  lcme_flags:          0x10
  lcme_extent.e_start: 1048576
  lcme_extent.e_end:   EOF
  lcme_offset:         184
  lcme_size:           80
    sub_layout:
    lmm_magic:         0x0BD10BD0
    lmm_seq:           0x200000401
    lmm_object_id:     0x1
    lmm_fid:           [0x200000401:0x1:0x0]
    lmm_stripe_count:  2
    lmm_stripe_size:   1048576
    lmm_pattern:       raid0
    lmm_layout_gen:    0
    lmm_stripe_offset: 1
    lmm_objects:
    - 0: { l_ost_idx: 1, l_fid: [0x100010000:0x2:0x0] }
    - 1: { l_ost_idx: 0, l_fid: [0x100000000:0x3:0x0] }
"""

# What `lfs getstripe -d` prints for a directory set with the recommended command
# `lfs setstripe -E 4M -c 1 -E 64M -c 4 -E -1 -c -1 -S 4M DIR`: written by us in the format of the
# DOM_DIR sample above (the template lines on one line, as lfs prints them), not copied output.
RECOMMENDED_DIR = """\
/capstor/scratch/alice/data
  lcm_layout_gen:    0
  lcm_mirror_count:  1
  lcm_entry_count:   3
    lcme_id:             N/A
    lcme_mirror_id:      N/A
    lcme_flags:          0
    lcme_extent.e_start: 0
    lcme_extent.e_end:   4194304
      stripe_count:  1       stripe_size:   1048576       pattern:       raid0       stripe_offset: -1

    lcme_id:             N/A
    lcme_mirror_id:      N/A
    lcme_flags:          0
    lcme_extent.e_start: 4194304
    lcme_extent.e_end:   67108864
      stripe_count:  4       stripe_size:   1048576       pattern:       raid0       stripe_offset: -1

    lcme_id:             N/A
    lcme_mirror_id:      N/A
    lcme_flags:          0
    lcme_extent.e_start: 67108864
    lcme_extent.e_end:   EOF
      stripe_count:  -1       stripe_size:   4194304       pattern:       raid0       stripe_offset: -1
"""


def test_plain_directory_template():
    layout = lustre.parse_getstripe(PLAIN_DIR)
    assert layout == lustre.Layout(False, (lustre.Component(0, None, 2, 4 * MIB, "0"),))
    assert lustre.compare(layout) == ["plain layout: [0, EOF) c 2 S 4M; recommended: 3 components"]


def test_composite_directory_template_with_the_manuals_line_wrap():
    layout = lustre.parse_getstripe(DOM_DIR)
    assert layout.composite and layout.components == (
        lustre.Component(0, MIB, 0, MIB, "mdt"),
        lustre.Component(MIB, None, 1, MIB, "raid0"),
    )


def test_composite_file_with_objects():
    layout = lustre.parse_getstripe(DOM_FILE)
    assert [(c.start, c.end, c.stripe_count, c.stripe_size, c.pattern) for c in layout.components] == [
        (0, MIB, 0, MIB, "mdt"), (MIB, None, 2, 4 * MIB, "raid0"),
    ]  # fmt: skip


def test_plain_file_with_the_obdidx_table():
    layout = lustre.parse_getstripe(PLAIN_FILE)
    assert layout == lustre.Layout(False, (lustre.Component(0, None, 2, MIB, "raid0"),))


def test_verbose_yaml_form():
    layout = lustre.parse_getstripe(VERBOSE_FILE)
    assert layout.composite
    assert [(c.start, c.end, c.stripe_count) for c in layout.components] == [(0, MIB, 1), (MIB, None, 2)]


def test_recommended_layout_matches_and_others_do_not():
    assert lustre.compare(lustre.parse_getstripe(RECOMMENDED_DIR)) == []
    wrong_count = RECOMMENDED_DIR.replace("stripe_count:  4 ", "stripe_count:  8 ")
    (diff,) = lustre.compare(lustre.parse_getstripe(wrong_count))
    assert diff.startswith("component 2 [4M, 64M) c 8") and "stripe count should be" in diff
    wrong_size = RECOMMENDED_DIR.replace("stripe_size:   4194304", "stripe_size:   1048576")
    (diff,) = lustre.compare(lustre.parse_getstripe(wrong_size))
    assert "component 3" in diff and "stripe size should be 4M" in diff
    wrong_extent = RECOMMENDED_DIR.replace("67108864", "268435456")
    assert "covers [4M, 256M)" in lustre.compare(lustre.parse_getstripe(wrong_extent))[0]
    assert lustre.compare(lustre.parse_getstripe(DOM_DIR))[0].startswith("PFL, 2 components")


def test_no_layout_and_malformed_values():
    assert lustre.parse_getstripe("") is None
    assert lustre.parse_getstripe("/mnt/lustre/dir\n") is None
    assert "no default layout" in lustre.compare(None)[0]
    with pytest.raises(lustre.LayoutParseError, match="stripe_count 'many'"):
        lustre.parse_getstripe("stripe_count: many stripe_size: 1048576\n")
    # a path holding something that looks like a key is not read as one
    assert lustre.parse_getstripe("/mnt/a:stripe_count:5\n") is None


def test_fix_command_quotes_the_directory():
    assert lustre.fix_command("/scratch/my data") == (
        "lfs setstripe -E 4M -c 1 -E 64M -c 4 -E -1 -c -1 -S 4M '/scratch/my data'"
    )


# --- the runner, with a stand-in lfs (no Lustre can exist on this machine) -------------------------


def fake_lfs(bin_dir: Path, body: str) -> dict:
    """An `lfs` on PATH whose only job is `body` (bash); returns an environment that finds it."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "lfs"
    script.write_text(f"#!/bin/bash\n{body}\n")
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def lustre_mounts(directory: Path) -> list[Mount]:
    """`directory` as a Lustre mount point (what mountinfo would say on a Lustre client)."""
    return [Mount("/", "ext4", "/dev/vda"), Mount(str(directory), "lustre", "10.0.0.1@o2ib:/capstor")]


def test_runner_parses_what_lfs_prints_and_passes_the_directory(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    log = tmp_path / "argv"
    env = fake_lfs(tmp_path / "bin", f'printf "%s\\n" "$@" > {log}\ncat <<"EOF"\n{RECOMMENDED_DIR}EOF')
    layout = lustre.getstripe(str(data), lfs=lustre.find_lfs(env))
    assert lustre.compare(layout) == [] and log.read_text().split() == ["getstripe", "-d", str(data)]
    finding = stripe_finding("data", str(data), lustre_mounts(tmp_path), env)
    assert finding.status == "ok" and "the recommended layout" in finding.detail


def test_a_plain_layout_is_a_warning_with_the_fix(tmp_path):
    env = fake_lfs(tmp_path / "bin", f'cat <<"EOF"\n{PLAIN_DIR}EOF')
    finding = stripe_finding("checkpoints", str(tmp_path), lustre_mounts(tmp_path), env)
    assert finding.status == "warn" and finding.check == "storage.stripe.checkpoints"
    assert finding.detail.endswith(f"fix: lfs setstripe -E 4M -c 1 -E 64M -c 4 -E -1 -c -1 -S 4M {tmp_path}")


def test_a_hanging_lfs_is_stopped_at_the_timeout(tmp_path):
    env = fake_lfs(tmp_path / "bin", "sleep 60")
    started = time.monotonic()
    with pytest.raises(lustre.LfsTimeout, match="no answer within 1 s") as e:
        lustre.getstripe(str(tmp_path), lfs=lustre.find_lfs(env), timeout_s=1.0)
    assert e.value.exit_code == 3 and time.monotonic() - started < 10
    finding = stripe_finding("data", str(tmp_path), lustre_mounts(tmp_path), env, timeout_s=1.0)
    assert finding.status == "warn" and "layout not checked" in finding.detail


def test_a_failing_lfs_is_named_with_its_last_line(tmp_path):
    env = fake_lfs(tmp_path / "bin", 'echo "lfs getstripe: $3: No such device" >&2; exit 19')
    with pytest.raises(CordeeError, match="exit 19: lfs getstripe: .*No such device"):
        lustre.getstripe(str(tmp_path), lfs=lustre.find_lfs(env))


def test_no_lfs_on_lustre_and_no_lustre_here(tmp_path):
    finding = stripe_finding("data", str(tmp_path), lustre_mounts(tmp_path), {"PATH": str(tmp_path / "none")})
    assert finding.status == "skip" and "lfs is not on PATH" in finding.detail
    # this machine's real mounts: no Lustre, the check says so and is skipped
    finding = stripe_finding("data", str(tmp_path), _real_mounts(), os.environ)
    assert finding.status == "skip"
    assert finding.detail == f"skipped: {tmp_path} is on {_real_fstype(tmp_path)}, not Lustre"


def _real_mounts():
    from cordee.storage.mounts import read_mounts

    return read_mounts()


def _real_fstype(path: Path) -> str:
    """The filesystem type as df(1) reports it, independently of cordee's mountinfo reading."""
    import subprocess

    r = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True, timeout=30)
    return r.stdout.split()[-1]
