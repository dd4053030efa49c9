"""`SignedPut.for_client`: the signed small PUTs trust what the boto3 client trusts."""

from __future__ import annotations

from pathlib import Path

import boto3
from botocore.config import Config
from botocore.credentials import Credentials

from jobsvc.storage.signed import SignedPut
from tests.fixtures.tls import certificates


def _client(verify: bool | str) -> object:
    return boto3.session.Session().client(
        "s3",
        endpoint_url="https://localhost:9",  # never contacted: the client only builds a URL
        region_name="us-east-1",
        verify=verify,
        aws_access_key_id="id",  # else botocore asks the instance metadata service
        aws_secret_access_key="secret",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def test_a_custom_ca_bundle_of_the_client_is_the_signed_path_s_trust(tmp_path: Path) -> None:
    ca_pem, _, _ = certificates(tmp_path)
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca_pem)
    signed = SignedPut.for_client(_client(str(bundle)), Credentials("id", "secret"), "bucket")  # type: ignore[arg-type]
    assert signed is not None
    subjects = [dict(pair[0] for pair in ca["subject"]) for ca in signed.ssl_context.get_ca_certs()]
    assert subjects == [{"commonName": "jobsvc test CA"}]


def test_an_endpoint_boto3_does_not_verify_is_left_to_boto3() -> None:
    assert SignedPut.for_client(_client(False), Credentials("id", "secret"), "bucket") is None  # type: ignore[arg-type]


def test_the_default_trust_is_a_verifying_context() -> None:
    signed = SignedPut.for_client(_client(True), Credentials("id", "secret"), "bucket")  # type: ignore[arg-type]
    assert signed is not None
    assert signed.ssl_context.verify_mode.name == "CERT_REQUIRED" and signed.ssl_context.check_hostname
