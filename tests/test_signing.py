"""Signed compliance bundles: a reviewer can tell a bundle its signer made from any other."""

import hashlib
import io
import json
import logging
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from models import Transcript, TranscriptError, load_jobs
from pipeline import (
    PipelineOptions,
    PublicKey,
    SigningKey,
    SigningKeyError,
    run_batch,
    verify,
)
from pipeline.batch import process_meeting
from stages.export import RECORD_FILE, SIGNATURE_FILE, bundle_members, export, render, to_bundle
from stages.export._bundle import _pack  # laid out as trackscribe lays a bundle out

from .conftest import BUNDLE_MEMBERS, write_key

SIGNED_MEMBERS = [*BUNDLE_MEMBERS, SIGNATURE_FILE]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return write_key(tmp_path, "signer")


@pytest.fixture
def signed(sample_transcript: Transcript, keys, tmp_path: Path) -> Path:
    """The sample's bundle, signed, as `--formats bundle --sign-key` leaves it."""
    return export(sample_transcript, tmp_path / "sent", "bundle", signer=SigningKey(keys[0]).sign)[
        "bundle"
    ]


def status(result) -> dict[str, str]:
    return {check.subject: check.status for check in result.checks}


def detail(result, subject: str) -> str:
    return next(check.detail for check in result.checks if check.subject == subject)


def read_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as bundle:
        return {name: bundle.read(name) for name in bundle.namelist()}


# The bundle a key signs.


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl here to check with")
def test_a_signed_bundle_holds_a_signature_of_its_sums_that_openssl_checks(signed, keys, tmp_path):
    """Checkable where trackscribe is not installed: the signature, then the sums."""
    with zipfile.ZipFile(signed) as bundle:
        assert bundle.namelist() == SIGNED_MEMBERS
        bundle.extractall(tmp_path / "unpacked")
    unpacked = tmp_path / "unpacked"
    openssl = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(keys[1]), "-rawin"]
    openssl += ["-in", "SHA256SUMS", "-sigfile", "SHA256SUMS.sig"]
    checked = subprocess.run(openssl, cwd=unpacked, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Signature Verified Successfully" in checked.stdout
    summed = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=unpacked, capture_output=True)
    assert summed.returncode == 0

    sums = (unpacked / "SHA256SUMS").read_text()  # a member altered, and its sum with it
    (unpacked / "SHA256SUMS").write_text(sums.replace(sums[:64], "0" * 64, 1))
    checked = subprocess.run(openssl, cwd=unpacked, capture_output=True, text=True)
    assert checked.returncode == 1
    assert "Signature Verification Failure" in checked.stdout


def test_the_signature_is_ed25519_of_the_sums_and_the_same_key_makes_the_same_bytes(
    sample_transcript, keys, tmp_path
):
    key = SigningKey(keys[0])
    bundle = to_bundle(sample_transcript, key.sign)
    assert bundle == to_bundle(sample_transcript.model_copy(deep=True), SigningKey(keys[0]).sign)
    with zipfile.ZipFile(io.BytesIO(bundle)) as opened:
        sums, signature = opened.read("SHA256SUMS"), opened.read(SIGNATURE_FILE)
    assert len(signature) == 64
    assert PublicKey(keys[1]).signed(sums, signature)
    assert (
        sums == read_members(export(sample_transcript, tmp_path, "bundle")["bundle"])["SHA256SUMS"]
    )  # the same sums as unsigned: the signature is added, nothing else changes
    other = SigningKey(write_key(tmp_path, "other")[0])
    assert to_bundle(sample_transcript, other.sign) != bundle


def test_a_key_is_named_by_the_fingerprint_openssl_and_sha256sum_give(keys):
    der = serialization.load_pem_public_key(keys[1].read_bytes()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    expected = f"sha256:{hashlib.sha256(der).hexdigest()}"
    assert SigningKey(keys[0]).fingerprint == PublicKey(keys[1]).fingerprint == expected


def test_openssh_keys_sign_and_check_as_pem_keys_do(sample_transcript, tmp_path):
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = tmp_path / "id_ed25519", tmp_path / "id_ed25519.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b" reviewer@example\n"
    )
    bundle = export(sample_transcript, tmp_path / "out", "bundle", signer=SigningKey(private).sign)
    assert verify(bundle["bundle"], public_key=public).ok
    assert SigningKey(private).fingerprint == PublicKey(public).fingerprint


# Keys that cannot be used: refused before any work, naming the file, never showing the key.


def other_keys(folder: Path) -> dict[str, Path]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    files = {
        "rsa": rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "encrypted": ed_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
        "public": ed_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "garbage": b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        "ssh.pub": ed_key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o600)
    (folder / "link").symlink_to(folder / "moved.pem")
    return {name: folder / name for name in [*files, "link"]}


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("rsa", "not an Ed25519 key"),
        ("encrypted", "the key is encrypted"),
        ("public", "a public key; signing needs the private key it was made from"),
        ("ssh.pub", "a public key; signing needs the private key it was made from"),
        ("garbage", "not a private key in PEM or OpenSSH form"),
        ("absent", "no such key file"),
        ("folder", "cannot read the key file: not a regular file"),
        ("link", "a link to {folder}/moved.pem, which is not there"),
    ],
)
def test_a_key_that_cannot_sign_is_refused_naming_the_file_and_why(tmp_path, caplog, name, why):
    files = other_keys(tmp_path)
    (tmp_path / "folder").mkdir()
    path = files.get(name, tmp_path / name)
    if path.is_file():
        path.chmod(0o644)  # not worth a warning: it is no key to sign with
    with pytest.raises(SigningKeyError) as refused:
        SigningKey(path)
    assert str(refused.value).startswith(f"{path}: {why.format(folder=tmp_path)}")
    assert "bm90IGEga2V5" not in str(refused.value)
    assert "can be read by other accounts" not in caplog.text


def test_a_public_key_file_holding_several_keys_is_refused(keys, tmp_path):
    other = write_key(tmp_path, "other")[1]
    pem = tmp_path / "both.pub.pem"
    pem.write_bytes(keys[1].read_bytes() + other.read_bytes())
    ssh = tmp_path / "authorized_keys"
    ssh.write_text(
        "".join(
            PublicKey(path)
            ._key.public_bytes(  # the same keys, in OpenSSH's form
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            .decode()
            + "\n"
            for path in (keys[1], other)
        )
    )
    one_ssh = ssh.read_text().splitlines()[0]
    with_options = tmp_path / "with-options"
    with_options.write_text(f"{one_ssh}\nrestrict {ssh.read_text().splitlines()[1]}\n")
    pem_and_ssh = tmp_path / "pem-and-ssh"
    pem_and_ssh.write_text(f"{keys[1].read_text()}{one_ssh}\n")
    for path in (pem, ssh, with_options, pem_and_ssh):
        with pytest.raises(SigningKeyError, match="holds more than one key"):
            PublicKey(path)
    explained = tmp_path / "explained.pub.pem"  # text around a PEM block is allowed
    explained.write_text(f"The signing key of the records office\n{keys[1].read_text()}")
    assert PublicKey(explained).fingerprint == PublicKey(keys[1]).fingerprint


def test_a_private_key_file_that_also_holds_its_public_key_signs(keys, tmp_path):
    both = tmp_path / "both.pem"
    both.write_text(
        "# the records office's signing key, and its PUBLIC KEY below\n"
        + keys[0].read_text()
        + keys[1].read_text()
    )
    both.chmod(0o600)
    assert SigningKey(both).fingerprint == PublicKey(keys[1]).fingerprint


def test_a_run_signs_with_the_key_it_began_with_whatever_becomes_of_the_file(keys, tmp_path):
    key = SigningKey(keys[0])
    signature = key.sign(b"sums")
    keys[0].unlink()  # moved away while an hour's meeting is transcribed
    assert key.sign(b"sums") == signature


def test_a_public_key_must_be_one_and_not_the_private_key(keys, tmp_path):
    with pytest.raises(SigningKeyError, match="a private key; give its public key"):
        PublicKey(keys[0])
    (tmp_path / "notes.txt").write_text("approved\n")
    with pytest.raises(SigningKeyError, match=r"notes\.txt: not a public key"):
        PublicKey(tmp_path / "notes.txt")


def test_a_key_readable_by_other_accounts_is_warned_about(keys, caplog):
    keys[0].chmod(0o644)
    with caplog.at_level(logging.WARNING):
        key = SigningKey(keys[0])
    assert f"{keys[0]}: the signing key can be read by other accounts here" in caplog.text
    caplog.clear()
    pickle.loads(pickle.dumps(key)).check()  # a worker's copy: once, by the command, is enough
    assert "can be read by other accounts" not in caplog.text


def test_a_key_travels_to_worker_processes_as_its_path_never_its_bytes(keys, tmp_path):
    key = SigningKey(keys[0])
    pickled = pickle.dumps(key)
    secret = serialization.load_pem_private_key(keys[0].read_bytes(), None).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    assert secret not in pickled and keys[0].read_bytes() not in pickled
    assert pickle.loads(pickled).sign(b"sums") == key.sign(b"sums")
    shutil.copy(write_key(tmp_path, "other")[0], keys[0])  # another key there by then
    sent = pickle.loads(pickled)  # read when used, in the meeting's work, not on arrival
    with pytest.raises(SigningKeyError, match="holds another key"):
        sent.check()


def test_a_relative_key_path_names_the_same_file_from_any_folder(keys, monkeypatch):
    monkeypatch.chdir(keys[0].parent)
    key = SigningKey(keys[0].name)
    monkeypatch.chdir("/")
    assert pickle.loads(pickle.dumps(key)).sign(b"sums") == key.sign(b"sums")


# A reviewer checks a bundle against the signer's public key.


def test_a_signed_bundle_sent_alone_verifies_against_the_signers_key(signed, keys, tmp_path):
    sent = shutil.copy(signed, tmp_path / "meeting-42.zip")
    result = verify(sent, public_key=keys[1])
    assert result.ok
    assert status(result)["meeting-42.zip"] == "ok"  # no record here, but the signature
    assert detail(result, "meeting-42.zip") == (
        "no record of trackscribe writing it here, but signed with the key given, as is all "
        "it holds"
    )
    fingerprint = PublicKey(keys[1]).fingerprint
    assert detail(result, f"meeting-42.zip:{SIGNATURE_FILE}") == (
        f"its SHA256SUMS signed with the key {fingerprint} ({keys[1]})"
    )
    assert [s for s in status(result).values() if s != "ok"] == ["unchecked"]  # the inputs


def test_a_bundle_made_again_from_an_altered_transcript_and_signed_with_another_key_differs(
    sample_transcript, signed, keys, tmp_path
):
    """What the sums alone cannot catch: consistent in itself, laid out as trackscribe lays
    it out, and signed, but not by the key the reviewer holds."""
    forged = sample_transcript.model_copy(deep=True)
    forged.utterances[0].text = "I approve the merger."
    forger = SigningKey(write_key(tmp_path, "forger")[0])
    sent = tmp_path / "meeting-42.zip"
    sent.write_bytes(render(forged, "bundle", signer=forger.sign))
    result = verify(sent, public_key=keys[1])
    assert not result.ok
    assert status(result)[f"meeting-42.zip:{SIGNATURE_FILE}"] == "differs"
    assert status(result)["meeting-42.zip"] == "unchecked"  # no record, and no good signature
    assert all(
        outcome == "ok"
        for subject, outcome in status(result).items()
        if ":" in subject and not subject.endswith(SIGNATURE_FILE)
    )


def test_a_signed_sums_beside_members_they_do_not_sum_vouch_for_nothing(
    sample_transcript, signed, keys
):
    """The genuine sums and signature, laid out as trackscribe lays a bundle out, around an
    altered transcript: the signature is good, the bundle is not."""
    genuine = read_members(signed)
    forged = sample_transcript.model_copy(deep=True)
    forged.utterances[0].text = "I approve the merger."
    members = bundle_members(forged) | {
        name: genuine[name] for name in ("SHA256SUMS", SIGNATURE_FILE)
    }
    signed.write_bytes(_pack(members, forged.origin))
    (signed.parent / ".trackscribe-exports").unlink()  # sent on its own
    result = verify(signed, public_key=keys[1])
    assert not result.ok
    assert status(result)[f"transcript.bundle.zip:{SIGNATURE_FILE}"] == "ok"
    assert status(result)["transcript.bundle.zip:SHA256SUMS"] == "differs"
    assert status(result)["transcript.bundle.zip"] == "unchecked"  # not vouched for


def test_a_signature_that_is_no_signature_differs_even_with_no_key_to_check_it(signed):
    members = read_members(signed)
    members[SIGNATURE_FILE] = b"APPROVED by legal\n"
    signed.write_bytes(_pack(members, Transcript.from_json(members["transcript.json"], "t").origin))
    result = verify(signed)
    assert not result.ok
    assert detail(result, f"transcript.bundle.zip:{SIGNATURE_FILE}") == (
        "not an Ed25519 signature (64 bytes), but 18 bytes"
    )


def test_a_signed_bundle_laid_out_otherwise_differs_and_is_not_said_to_be_vouched_for(
    signed, keys, tmp_path
):
    data = signed.read_bytes()
    sent = tmp_path / "sent.zip"
    sent.write_bytes(b"junk" + data)  # zip tools still read it; trackscribe never wrote it
    result = verify(sent, public_key=keys[1])
    assert not result.ok
    assert status(result)[f"sent.zip:{SIGNATURE_FILE}"] == "ok"  # its members are as signed
    [bundle] = [check for check in result.checks if check.subject == "sent.zip"]
    assert bundle.status == "differs"
    assert "signed" not in bundle.detail


def test_a_signature_taken_off_is_missing_when_the_reviewer_holds_a_key(
    sample_transcript, signed, keys
):
    signed.write_bytes(render(sample_transcript, "bundle"))  # as written, but unsigned
    result = verify(signed, public_key=keys[1])
    assert not result.ok
    assert status(result)[f"transcript.bundle.zip:{SIGNATURE_FILE}"] == "missing"
    assert detail(result, f"transcript.bundle.zip:{SIGNATURE_FILE}") == "the bundle is not signed"


def test_a_signed_bundle_checked_without_a_key_says_whose_signature_is_unchecked(signed, tmp_path):
    sent = shutil.copy(signed, tmp_path / "meeting-42.zip")
    result = verify(sent)
    assert result.ok
    assert status(result)[f"meeting-42.zip:{SIGNATURE_FILE}"] == "unchecked"
    assert status(result)["meeting-42.zip"] == "unchecked"


def test_asking_for_a_signature_where_there_is_no_bundle_is_missing(
    sample_transcript, keys, tmp_path
):
    export(sample_transcript, tmp_path, ["json", "vtt"])
    result = verify(tmp_path, public_key=keys[1])
    assert not result.ok
    assert status(result)["transcript.bundle.zip"] == "missing"


def test_a_signed_bundle_beside_its_transcript_checks_both(sample_transcript, keys, tmp_path):
    export(sample_transcript, tmp_path, ["json", "bundle"], signer=SigningKey(keys[0]).sign)
    result = verify(tmp_path, public_key=keys[1])
    assert result.ok
    assert status(result)["transcript.json"] == "ok"
    assert status(result)["transcript.bundle.zip"] == "ok"
    assert status(result)[f"transcript.bundle.zip:{SIGNATURE_FILE}"] == "ok"


def _forge(folder: Path, name: str, text: str) -> None:
    """Write ``text`` as the export ``name`` in ``folder`` and the folder's record to match,
    as anyone who can write there can."""
    (folder / name).write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    record = (folder / RECORD_FILE).read_text().splitlines()
    rewritten = [f"{digest}  {name}" if line.endswith(f" {name}") else line for line in record]
    (folder / RECORD_FILE).write_text("\n".join(rewritten) + "\n")


def test_a_transcript_beside_a_signed_bundle_must_be_its_bytes_not_only_its_content(
    sample_transcript, keys, tmp_path
):
    """The folder's record is a file anyone can rewrite; the signed bundle is not. A
    transcript rewritten so that it parses to the signed content is not what was signed."""
    export(sample_transcript, tmp_path, ["json", "bundle"], signer=SigningKey(keys[0]).sign)
    written = (tmp_path / "transcript.json").read_text()
    forged = written.replace("{", '{"reviewer_note": "approved the transfer", ', 1)
    assert Transcript.from_json(forged.encode(), "forged") == sample_transcript
    _forge(tmp_path, "transcript.json", forged)
    result = verify(tmp_path, public_key=keys[1])
    assert status(result)["transcript.json"] == "ok"  # as the record, rewritten, says
    assert not result.ok
    member = next(c for c in result.checks if c.subject == "transcript.bundle.zip:transcript.json")
    assert member.status == "differs"
    assert member.detail == "not transcript.json, byte for byte (from line 1)"


def test_a_transcript_that_says_a_field_twice_is_refused_as_it_is_read(
    sample_transcript, keys, tmp_path
):
    """Python kept the last of a key given twice, other JSON readers show the first: one
    file read two ways. It is refused, naming the field, wherever it is read."""
    export(sample_transcript, tmp_path, ["json", "bundle"], signer=SigningKey(keys[0]).sign)
    written = (tmp_path / "transcript.json").read_text()
    _forge(tmp_path, "transcript.json", written.replace("{", '{"utterances": [], ', 1))
    with pytest.raises(TranscriptError, match="utterances: given more than once"):
        verify(tmp_path, public_key=keys[1])


@pytest.mark.parametrize("made_by", ["this version", "another version"])
def test_subtitles_beside_a_signed_bundle_are_checked_against_it_not_only_the_record(
    sample_transcript, keys, tmp_path, made_by
):
    """Exports another version made may be rendered otherwise by this one, so they are
    checked against the record of what was written, which anyone can rewrite. The signed
    bundle holds the same files, and its signature cannot be rewritten."""
    made = sample_transcript.model_copy(deep=True)
    if made_by == "another version":
        made.provenance.software = "trackscribe 0.0.9 (code 000000000000)"
    export(made, tmp_path, ["json", "srt", "bundle"], signer=SigningKey(keys[0]).sign)
    assert status(verify(tmp_path, public_key=keys[1]))["transcript.srt"] == "ok"

    srt = (tmp_path / "transcript.srt").read_text()
    _forge(tmp_path, "transcript.srt", srt.replace("billing migration", "payroll deletion"))

    result = verify(tmp_path, public_key=keys[1])
    assert not result.ok and status(result)["transcript.srt"] == "differs"
    if made_by == "another version":
        assert detail(result, "transcript.srt").startswith(
            "not what the bundle signed with the key given holds (from line 7)"
        )


def test_exports_another_version_rendered_otherwise_pass_beside_their_signed_bundle_alone(
    sample_transcript, keys, tmp_path, monkeypatch
):
    """Copied without the folder's record (``cp *``), an export that another version rendered
    otherwise has nothing but the signed bundle to be checked against: what it holds, it is."""
    from stages.export import FORMATS, _text

    older = sample_transcript.model_copy(deep=True)
    older.provenance.software = "trackscribe 0.0.9 (code 000000000000)"
    as_it_was = ("transcript.txt", lambda t: "[00:00:01] Alice: as an older version wrote it\n")
    monkeypatch.setitem(_text.TEXT_FORMATS, "txt", as_it_was)
    monkeypatch.setitem(FORMATS, "txt", as_it_was)
    export(older, tmp_path, ["json", "txt", "bundle"], signer=SigningKey(keys[0]).sign)
    monkeypatch.undo()
    (tmp_path / RECORD_FILE).unlink()

    assert status(verify(tmp_path))["transcript.txt"] == "differs"  # nothing vouches for it
    signed = verify(tmp_path, public_key=keys[1])
    assert status(signed)["transcript.txt"] == "ok"
    assert "what the bundle signed with the key given holds" in detail(signed, "transcript.txt")
    (tmp_path / "transcript.txt").write_text("[00:00:01] Chen: I never said that.\n")
    assert status(verify(tmp_path, public_key=keys[1]))["transcript.txt"] == "differs"

    # A signed bundle of another transcript vouches for nothing beside a later one.
    (tmp_path / "transcript.txt").write_text("[00:00:01] Alice: as an older version wrote it\n")
    later = older.model_copy(deep=True)
    later.utterances = later.utterances[:3]
    later.save(tmp_path / "transcript.json")
    result = verify(tmp_path, public_key=keys[1])
    assert status(result)["transcript.txt"] == "differs"
    assert "signed" not in detail(result, "transcript.txt")


def test_a_signed_bundle_another_version_rendered_otherwise_is_vouched_for_sent_alone(
    sample_transcript, keys, tmp_path, monkeypatch
):
    """After an upgrade that renders the text otherwise, the signature still covers the
    members as they were made: sent on its own, the bundle is as signed, not unchecked."""
    from stages.export import FORMATS, _text

    older = sample_transcript.model_copy(deep=True)
    older.provenance.software = "trackscribe 0.0.9 (code 000000000000)"
    as_it_was = ("transcript.txt", lambda t: "[00:00:01] Alice: as an older version wrote it\n")
    monkeypatch.setitem(_text.TEXT_FORMATS, "txt", as_it_was)
    monkeypatch.setitem(FORMATS, "txt", as_it_was)
    made = export(older, tmp_path / "made", "bundle", signer=SigningKey(keys[0]).sign)
    monkeypatch.undo()
    sent = shutil.copy(made["bundle"], tmp_path / "meeting-42.zip")

    unsigned = verify(sent)  # no key: only the bundle's own sums say what it was
    assert status(unsigned)["meeting-42.zip:transcript.txt"] == "unchecked"
    result = verify(sent, public_key=keys[1])
    assert result.ok
    assert [s for s in status(result).values() if s != "ok"] == ["unchecked"]  # the inputs
    assert detail(result, "meeting-42.zip:transcript.txt").endswith(
        "; as the bundle's SHA256SUMS lists it, signed with the key given"
    )
    assert detail(result, "meeting-42.zip:SHA256SUMS").endswith(
        "; every member is as it lists, signed with the key given"
    )
    assert detail(result, "meeting-42.zip").endswith(
        "but signed with the key given, as is all it holds"
    )
    # The same text unzipped beside it is vouched for alike.
    (tmp_path / "transcript.txt").write_bytes(read_members(sent)["transcript.txt"])
    assert status(verify(sent, public_key=keys[1]))["transcript.txt"] == "ok"


# The command line and batch runs.


def trackscribe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=300
    )


def test_the_commands_sign_with_sign_key_and_verify_with_public_key(sample_dir, keys, tmp_path):
    out = tmp_path / "out"
    made = trackscribe(
        "transcribe", str(sample_dir), "-o", str(out), "--formats", "json,bundle",
        "--sign-key", str(keys[0]), "--no-progress",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    sent = shutil.copy(out / "transcript.bundle.zip", tmp_path / "meeting-42.zip")
    checked = trackscribe(
        "verify", str(sent), "--public-key", str(keys[1]), "--manifest", str(sample_dir)
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines()[-1] == f"verified: {len(SIGNED_MEMBERS) + 1 + 5 + 1} ok"
    other = write_key(tmp_path, "other")[1]
    refused = trackscribe("verify", str(sent), "--public-key", str(other))
    assert refused.returncode == 1
    assert f"DIFFERS   meeting-42.zip:{SIGNATURE_FILE}" in refused.stdout
    private = trackscribe("verify", str(sent), "--public-key", str(keys[0]))
    assert private.returncode == 2
    assert f"{keys[0]}: a private key; give its public key" in private.stderr
    # Written again into that folder without the key: refused before any work, in any format.
    for formats in ("json,bundle", "json"):
        unsigned = trackscribe(
            "transcribe", str(sample_dir), "-o", str(out), "--formats", formats, "--no-progress"
        )
        assert unsigned.returncode == 2
        assert f"{out / 'transcript.bundle.zip'}: signed; with no signing key" in unsigned.stderr
        assert "wrote" not in unsigned.stderr
    kept = trackscribe("demo", "-o", str(out), "--formats", "bundle", "--no-progress")
    assert kept.returncode == 2 and "emulator serving" not in kept.stdout
    assert verify(out, public_key=keys[1]).ok


def test_a_key_that_cannot_be_used_stops_the_command_before_any_work(sample_dir, keys, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "key.pem").write_text("not a key\n")
    result = trackscribe(
        "transcribe", str(sample_dir), "-o", str(out), "--formats", "bundle",
        "--sign-key", str(tmp_path / "key.pem"),
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{tmp_path / 'key.pem'}: not a private key in PEM or OpenSSH form" in result.stderr
    assert not out.exists()
    no_bundle = trackscribe(
        "transcribe", str(sample_dir), "-o", str(out), "--sign-key", str(tmp_path / "key.pem")
    )
    assert no_bundle.returncode == 2
    assert "--sign-key signs the compliance bundle: add bundle to --formats" in no_bundle.stderr
    demo_keeps_nothing = trackscribe(
        "demo", "--formats", "bundle", "--sign-key", str(keys[0]), "--no-progress"
    )
    assert demo_keeps_nothing.returncode == 2
    assert "--sign-key signs the bundle the demo keeps: add -o FOLDER" in demo_keeps_nothing.stderr


def test_a_batch_signs_each_bundle_in_its_workers_and_another_key_only_re_exports(
    meetings_done: Path, keys, tmp_path, caplog
):
    """Signed in the worker processes, which read the key themselves; a later run with
    another key writes the bundles again from the transcripts kept, with no model."""
    jobs = load_jobs(meetings_done / "jobs.jsonl")
    out = meetings_done / "out"
    first = run_batch(
        jobs,
        out,
        workers=2,
        formats=["json", "bundle"],
        signing_key=SigningKey(keys[0]),
        progress=False,
    )
    assert all(m.status == "done" and m.reused for m in first.meetings)
    for meeting in first.meetings:
        assert verify(out / meeting.job, public_key=keys[1]).ok
    other = write_key(tmp_path, "other")
    caplog.set_level(logging.WARNING, logger="trackscribe")
    kept = run_batch(
        jobs,
        out,
        formats=["json", "bundle"],
        signing_key=SigningKey(other[0]),
        retry_failed=True,  # only what failed: the signed bundles stay, and it says so
        progress=False,
    )
    assert all(m.reused for m in kept.meetings)
    assert verify(out / "a", public_key=keys[1]).ok
    assert f"--retry-failed leaves {len(jobs)} meeting(s) done last time" in caplog.text
    again = run_batch(
        jobs, out, formats=["json", "bundle"], signing_key=SigningKey(other[0]), progress=False
    )
    assert all(m.reused for m in again.meetings)
    assert verify(out / "a", public_key=other[1]).ok
    assert not verify(out / "a", public_key=keys[1]).ok
    assert {m.signed_by for m in again.meetings} == {SigningKey(other[0]).fingerprint}
    fingerprint = SigningKey(other[0]).fingerprint
    caplog.clear()
    run_batch(jobs, out, formats=["json", "bundle"], retry_failed=True, progress=False)
    assert "with their bundles signed, where this run has no signing key: a, b" in caplog.text
    # A re-run that lost its key must neither write the signed bundles again unsigned nor
    # remove them (fewer formats) and call that done: refused before any work.
    bundle = out / "a" / "transcript.bundle.zip"
    refusal = (
        f"{bundle}: signed with the key {fingerprint}; with no signing key it would be written "
        "again unsigned, or removed: give the key (--sign-key), or remove the bundle first to "
        "do without"
    )
    for formats in (["json", "bundle"], ["json"]):
        with pytest.raises(SigningKeyError) as refused:
            run_batch(jobs, out, formats=formats, progress=False)
        assert str(refused.value) == refusal
    assert verify(out / "a", public_key=other[1]).ok
    alone = process_meeting(jobs[0], out / "a", PipelineOptions(), formats=["json", "bundle"])
    assert (alone.status, alone.reason) == ("failed", refusal)
    bundle.unlink()  # as it says: unsigned on purpose
    assert run_batch(jobs[:1], out, formats=["json", "bundle"], progress=False).meetings[0].reused
    assert "written again unsigned (the signed one was removed)" in caplog.text
    assert verify(out / "a").ok and not verify(out / "a", public_key=other[1]).ok
    with pytest.raises(ValueError, match="add bundle to formats"):
        run_batch(jobs, out, formats=["json"], signing_key=SigningKey(other[0]))


def test_a_key_changed_while_a_batch_runs_fails_its_meetings_naming_it_not_the_workers(
    meetings_done: Path, keys, tmp_path
):
    jobs = load_jobs(meetings_done / "jobs.jsonl")
    key = SigningKey(keys[0])
    shutil.copy(write_key(tmp_path, "other")[0], keys[0])  # replaced after the run began
    summary = run_batch(
        jobs, meetings_done / "out", workers=2, formats=["bundle"], signing_key=key, progress=False
    )
    assert [m.status for m in summary.meetings] == ["failed", "failed"]
    for meeting in summary.meetings:
        assert meeting.reason is not None
        assert meeting.reason.startswith(f"{keys[0]}: holds another key")


@pytest.fixture
def meetings_done(tmp_path: Path, sample_dir: Path) -> Path:
    """Two meetings (the sample, twice) a batch has done, with their transcripts kept."""
    root = tmp_path / "meetings"
    root.mkdir()
    jobs = root / "jobs.jsonl"
    manifest = sample_dir / "manifest.json"
    jobs.write_text(
        "".join(json.dumps({"id": name, "manifest": str(manifest)}) + "\n" for name in ("a", "b"))
    )
    run_batch(load_jobs(jobs), root / "out", progress=False)
    return root
