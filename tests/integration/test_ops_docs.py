"""Issue 17, finding 9: the docs match the code.

- every key of docs/configuration.md's tables is a key of ternd (`--print-config`,
  which prints the configuration in effect), with the documented default, and
  every key of ternd is documented;
- deploy/ternd.example.json is exactly the defaults; each JSON example in
  configuration.md is a valid file (`--check-config`);
- `members[]` entries reject unknown keys (the file is strict);
- deploy/hosts/README.md does not call membership static.
"""
import json
import os
import re
import subprocess

import pytest

from conftest import REPO, TERN_BIN

pytestmark = pytest.mark.tern_only

CONFIG_MD = os.path.join(REPO, "docs", "configuration.md")
EXAMPLE = os.path.join(REPO, "deploy", "ternd.example.json")


def ternd(*args):
    return subprocess.run([TERN_BIN] + list(args), capture_output=True, text=True,
                          timeout=10, stdin=subprocess.DEVNULL)


def effective(*args):
    r = ternd(*args, "--print-config")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def doc_keys():
    """The rows of the tables headed `| key | type | default | ...` (not the tables
    of the members of a key's entries, headed `| member ...`)."""
    keys, in_keys = {}, False
    for line in open(CONFIG_MD).read().splitlines():
        if not line.startswith("|"):
            in_keys = False
            continue
        if re.match(r"^\| *key *\|", line):
            in_keys = True
            continue
        m = re.match(r"^\| `([a-z_0-9]+)` +\| *([a-z]+) *\| *`([^`]*)` *\|", line)
        if in_keys and m:
            keys[m.group(1)] = (m.group(2), m.group(3))
    return keys


def test_documented_keys_are_the_keys():
    eff = effective()
    doc = doc_keys()
    assert sorted(doc) == sorted(eff), (
        "documented, not a key: %s; a key, not documented: %s" % (
            sorted(set(doc) - set(eff)), sorted(set(eff) - set(doc))))
    for k, (_, default) in doc.items():
        assert json.loads(default) == eff[k], "%s: documented %s, is %r" % (k, default, eff[k])


def test_example_file_is_the_defaults():
    with open(EXAMPLE) as f:
        example = json.load(f)
    assert example == effective(), "deploy/ternd.example.json differs from the defaults"


def test_doc_json_examples_are_valid(tmp_path):
    text = open(CONFIG_MD).read()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    assert blocks
    for i, b in enumerate(blocks):
        if not b.lstrip().startswith("{"):
            b = "{" + b + "}"  # a fragment: some keys of a file
        p = tmp_path / ("ex%d.json" % i)
        p.write_text(b)
        r = ternd("--check-config", str(p))
        if re.search(r'_file: cannot use "/etc/tern/', r.stderr):
            continue  # keys and values fine; the example's files are not on this machine
        assert r.returncode == 0, "example %d of configuration.md:\n%s\n%s" % (i, b, r.stderr)
    assert "no `cluster` keys yet" not in text


def test_members_entries_reject_unknown_keys(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"node_id": 1, "members": [
        {"id": 1, "raft": "127.0.0.1:7001", "peer": "127.0.0.1:7101",
         "mqtt": "127.0.0.1:1883", "mqqt": "127.0.0.1:1884"}]}))
    r = ternd("--check-config", str(p))
    assert r.returncode == 2 and "members[0]" in r.stderr and "mqqt" in r.stderr, (
        r.returncode, r.stderr)


def test_hosts_readme_does_not_call_membership_static():
    text = open(os.path.join(REPO, "deploy", "hosts", "README.md")).read()
    assert not re.search(r"membership\s+is\s+static", text)
