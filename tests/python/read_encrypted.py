"""Reads one object the bot encrypted, the way a third party would, and writes the plaintext to stdout.

official: the Amazon S3 Encryption Client for Python (V2 objects need REQUIRE_ENCRYPT_ALLOW_DECRYPT).
official-default: the same client under its default commitment policy (REQUIRE_ENCRYPT_REQUIRE_DECRYPT:
          only key-committing V3 objects open).
sample:   the logic of the original bot's decryption sample: KMS Decrypt of x-amz-key-v2 under the
          x-amz-matdesc context, then AES-GCM with x-amz-iv and the tag at the end of the body.
"""
import base64
import json
import sys

import boto3

endpoint, bucket, key, key_arn, mode = sys.argv[1:6]
region = "us-east-1"
kms = boto3.client("kms", endpoint_url=endpoint, region_name=region)
# A client of its own for the encryption client: wrapping registers hooks on it.
s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)

if mode in ("official", "official-default"):
    from s3_encryption import S3EncryptionClient, S3EncryptionClientConfig
    from s3_encryption.materials.kms_keyring import KmsKeyring
    from s3_encryption.materials.materials import CommitmentPolicy

    keyring = KmsKeyring(kms_client=kms, kms_key_id=key_arn)
    if mode == "official":
        config = S3EncryptionClientConfig(
            keyring=keyring,
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT,
        )
    else:
        config = S3EncryptionClientConfig(keyring=keyring)
    client = S3EncryptionClient(wrapped_s3_client=s3, config=config)
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
elif mode == "sample":
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    obj = s3.get_object(Bucket=bucket, Key=key)
    meta = obj["Metadata"]
    context = json.loads(meta["x-amz-matdesc"])
    data_key = kms.decrypt(
        CiphertextBlob=base64.b64decode(meta["x-amz-key-v2"]), EncryptionContext=context
    )["Plaintext"]
    body = AESGCM(data_key).decrypt(base64.b64decode(meta["x-amz-iv"]), obj["Body"].read(), None)
else:
    sys.exit(f"unknown mode {mode}")

sys.stdout.buffer.write(body)
