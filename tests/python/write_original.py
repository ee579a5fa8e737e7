"""Uploads files the way the original AWS Wickr data retention bot does: each object encrypted with
the official Amazon S3 Encryption Client in the V2 format (AES-256-GCM, the data key wrapped by KMS
under an encryption context; no key commitment), with the original's `wickrio-type` and
`wickrio-file-path` metadata. No manifest: the original signs nothing.

usage: write_original.py ENDPOINT BUCKET KEY_ARN OBJECT_KEY=LOCAL_FILE...
"""
import sys

import boto3
from s3_encryption import S3EncryptionClient, S3EncryptionClientConfig
from s3_encryption.materials.kms_keyring import KmsKeyring
from s3_encryption.materials.materials import AlgorithmSuite, CommitmentPolicy

endpoint, bucket, key_arn = sys.argv[1:4]
region = "us-east-1"
kms = boto3.client("kms", endpoint_url=endpoint, region_name=region)
s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)
config = S3EncryptionClientConfig(
    keyring=KmsKeyring(kms_client=kms, kms_key_id=key_arn),
    encryption_algorithm=AlgorithmSuite.ALG_AES_256_GCM_IV12_TAG16_NO_KDF,
    commitment_policy=CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT,
)
client = S3EncryptionClient(wrapped_s3_client=s3, config=config)
for pair in sys.argv[4:]:
    key, path = pair.split("=", 1)
    name = key.rsplit("/", 1)[-1]
    kind = "file" if name.startswith("attachment_") else "message"
    with open(path, "rb") as f:
        client.put_object(
            Bucket=bucket,
            Key=key,
            Body=f.read(),
            Metadata={"wickrio-type": kind, "wickrio-file-path": name},
        )
    head = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    if "x-amz-key-v2" not in head or "x-amz-matdesc" not in head:
        sys.exit(f"{key} is not in the V2 format: {head}")
