"""moto's server, made strict where AWS KMS is strict and moto is lenient.

AWS KMS refuses every cryptographic operation with a key that is not enabled: a key pending
deletion answers KMSInvalidStateException, a disabled one DisabledException ("Key states of AWS KMS
keys", AWS KMS Developer Guide; API_Decrypt and API_GenerateDataKey list both errors). moto 5 keeps
decrypting with such keys, which would let a test of crypto-shredding pass against a server that
shreds nothing. This wrapper adds exactly that rule and nothing else; every other answer is moto's.

With STRICT_MOTO_DELETE_AFTER_SECS=N in its environment, a key pending deletion is deleted (with its
aliases) N seconds after its deletion was scheduled, as AWS deletes it at the end of its waiting
period (at least 7 days, which no test can wait): a test of what happens once a key is gone.

Two moto bugs in keys made by CloudFormation are mended, as AWS behaves: the key policy is kept
as JSON text (moto keeps the template's object, then answers HTTP 500 to DescribeKey), and the
template's tags ({"Key", "Value"}) are taken as KMS tags (moto expects {"TagKey", "TagValue"} and
drops the key).

Usage: python strict_moto.py -H 127.0.0.1 -p PORT (the arguments of moto_server).
"""

import json
import os
import sys
import threading
import time

from moto.core.exceptions import JsonRESTError
from moto.kms import models
from moto.server import main


class KMSInvalidStateException(JsonRESTError):
    code = 400

    def __init__(self, message):
        super().__init__("KMSInvalidStateException", message)


class DisabledException(JsonRESTError):
    code = 400

    def __init__(self, message):
        super().__init__("DisabledException", message)


def require_enabled(backend, key_id):
    key = backend.keys[backend.any_id_to_key_id(key_id)]
    if key.key_state == "PendingDeletion":
        raise KMSInvalidStateException(f"{key.arn} is pending deletion.")
    if key.key_state != "Enabled":
        raise DisabledException(f"{key.arn} is disabled.")


_decrypt = models.KmsBackend.decrypt
_generate_data_key = models.KmsBackend.generate_data_key
_encrypt = models.KmsBackend.encrypt


def decrypt(self, ciphertext_blob, encryption_context, key_id=None):
    plaintext, arn = _decrypt(self, ciphertext_blob, encryption_context, key_id)
    require_enabled(self, arn)
    return plaintext, arn


def generate_data_key(self, key_id, *args, **kwargs):
    require_enabled(self, key_id)
    return _generate_data_key(self, key_id, *args, **kwargs)


def encrypt(self, key_id, *args, **kwargs):
    require_enabled(self, key_id)
    return _encrypt(self, key_id, *args, **kwargs)


_schedule_key_deletion = models.KmsBackend.schedule_key_deletion
_scheduled = {}


def schedule_key_deletion(self, key_id, pending_window_in_days):
    _scheduled[(id(self), key_id)] = (self, time.monotonic())
    return _schedule_key_deletion(self, key_id, pending_window_in_days)


def delete_when_due(after):
    while True:
        time.sleep(0.2)
        for (backend_id, key_id), (backend, at) in list(_scheduled.items()):
            key = backend.keys.get(key_id)
            if key is None or key.key_state != "PendingDeletion":
                _scheduled.pop((backend_id, key_id), None)
            elif time.monotonic() - at >= after:
                backend.delete_key(key_id)
                _scheduled.pop((backend_id, key_id), None)


_from_cloudformation = models.Key.create_from_cloudformation_json.__func__


def key_from_cloudformation(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    properties = dict(cloudformation_json["Properties"])
    if not isinstance(properties.get("KeyPolicy"), str):
        properties["KeyPolicy"] = json.dumps(properties["KeyPolicy"])
    properties["Tags"] = [
        {"TagKey": t["Key"], "TagValue": t["Value"]} if "Key" in t else t for t in properties.get("Tags", [])
    ]
    cloudformation_json = dict(cloudformation_json, Properties=properties)
    return _from_cloudformation(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)


models.Key.create_from_cloudformation_json = classmethod(key_from_cloudformation)
models.KmsBackend.decrypt = decrypt
models.KmsBackend.generate_data_key = generate_data_key
models.KmsBackend.encrypt = encrypt
models.KmsBackend.schedule_key_deletion = schedule_key_deletion
if os.environ.get("STRICT_MOTO_DELETE_AFTER_SECS"):
    delete_after = float(os.environ["STRICT_MOTO_DELETE_AFTER_SECS"])
    threading.Thread(target=delete_when_due, args=(delete_after,), daemon=True).start()

if __name__ == "__main__":
    main(sys.argv[1:])
