"""moto's server, made strict where AWS KMS is strict and moto is lenient.

AWS KMS refuses every cryptographic operation with a key that is not enabled: a key pending
deletion answers KMSInvalidStateException, a disabled one DisabledException ("Key states of AWS KMS
keys", AWS KMS Developer Guide; API_Decrypt and API_GenerateDataKey list both errors). moto 5 keeps
decrypting with such keys, which would let a test of crypto-shredding pass against a server that
shreds nothing. This wrapper adds exactly that rule and nothing else; every other answer is moto's.

Usage: python strict_moto.py -H 127.0.0.1 -p PORT (the arguments of moto_server).
"""

import sys

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


models.KmsBackend.decrypt = decrypt
models.KmsBackend.generate_data_key = generate_data_key
models.KmsBackend.encrypt = encrypt

if __name__ == "__main__":
    main(sys.argv[1:])
