"""``zhtp identity``: create, show, export and import identities (no network)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from node.cli import main
from node.identity import Identity, make_identity_record


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHTP_PASSPHRASE", "correct horse battery staple")


def exported(record: bytes) -> str:
    return "zhtp-identity:" + base64.urlsafe_b64encode(record).decode().rstrip("=")


def test_new_show_export_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    code, out, _ = run(
        capsys, "--data-dir", str(alice), "identity", "new", "--name", "alice", "--json"
    )
    assert code == 0
    created = json.loads(out)
    assert created["identity"].startswith("zid1") and created["name"] == "alice"
    assert (alice / "identity.keystore").stat().st_mode & 0o777 == 0o600
    code, out, _ = run(capsys, "--data-dir", str(alice), "identity", "show", "--json")
    assert json.loads(out)["identity"] == created["identity"]
    text = tmp_path / "alice.txt"
    assert (
        run(capsys, "--data-dir", str(alice), "identity", "export-public", "-o", str(text))[0] == 0
    )
    code, out, _ = run(
        capsys, "--data-dir", str(bob), "identity", "import-public", str(text), "--json"
    )
    assert code == 0
    assert json.loads(out)["identity"] == created["identity"]
    assert (bob / "contacts" / f"{created['identity']}.pub").exists()


def test_new_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--data-dir", str(tmp_path), "identity", "new", "--name", "a")[0] == 0
    code, _, err = run(capsys, "--data-dir", str(tmp_path), "identity", "new", "--name", "a")
    assert code == 1 and "already holds an identity" in err


def test_show_without_identity_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--data-dir", str(tmp_path), "identity", "show")
    assert code == 1 and err.count("\n") == 1 and "identity new" in err


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "zhtp-identity:!!!not base64!!!",
        "zhtp-identity:AAAA",
    ],
)
def test_import_of_garbage_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    path = tmp_path / "in.txt"
    path.write_text(text)
    code, _, err = run(capsys, "--data-dir", str(tmp_path), "identity", "import-public", str(path))
    assert code == 1 and err.startswith("zhtp: error: ")
    assert not (tmp_path / "contacts").exists()


def test_import_of_a_tampered_record_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = bytearray(
        make_identity_record(Identity.generate(with_mldsa=False), name="m", sequence=1)
    )
    record[-1] ^= 1  # the signature
    path = tmp_path / "in.txt"
    path.write_text(exported(bytes(record)))
    code, _, err = run(capsys, "--data-dir", str(tmp_path), "identity", "import-public", str(path))
    assert code == 1 and "not a valid identity record" in err


def test_an_older_record_never_replaces_a_newer_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    carol = Identity.generate(with_mldsa=False)
    newer, older = tmp_path / "newer.txt", tmp_path / "older.txt"
    newer.write_text(exported(make_identity_record(carol, name="carol", sequence=2)))
    older.write_text(exported(make_identity_record(carol, name="carol-old", sequence=1)))
    assert run(capsys, "--data-dir", str(tmp_path), "identity", "import-public", str(newer))[0] == 0
    code, _, err = run(capsys, "--data-dir", str(tmp_path), "identity", "import-public", str(older))
    assert code == 1 and "newer record" in err
