"""Sends one message body through AWS's SQS Extended Client for Python (amazon-sqs-extended-client):
a body over SQS's 256 KiB goes to S3, and the queue gets the client's pointer to it.

Usage: sqs_extended.py QUEUE_URL BUCKET BODY_FILE   (AWS_ENDPOINT_URL and credentials from the environment)
"""

import os
import sys

from sqs_extended_client import SQSExtendedClientSession


def main() -> None:
    queue_url, bucket, body_file = sys.argv[1:4]
    session = SQSExtendedClientSession(region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    sqs = session.client("sqs")
    sqs.large_payload_support = bucket
    sqs.use_legacy_attribute = False
    with open(body_file, encoding="utf-8") as f:
        body = f.read()
    sqs.send_message(QueueUrl=queue_url, MessageBody=body)


if __name__ == "__main__":
    main()
