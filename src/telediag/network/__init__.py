"""The network stage: sites (prefecture -> county -> township), their devices and their people.

Use cases for registration and administration, and the two lookups every entry point
authenticates senders with (:func:`device_by_ae_title` for DICOM associations,
:func:`device_by_api_key` for HTTP). API keys are random, shown once, and stored only as
sha256, so a leaked database does not let anyone impersonate a township cart.
"""

from __future__ import annotations

from telediag.network.services import (add_device, add_site, check_delivery_site, device_by_ae_title, device_by_api_key, hash_api_key,
                                       list_devices, list_sites, rotate_device_key, set_device_active,
                                       set_site_active)
from telediag.network.services import check_rules, set_site_webhook, upload_device
from telediag.network.keys import KeyVault, public_key_pem, verify_signature
from telediag.network.users import (add_user, list_users, login, logout, public_key, set_user_active, token_sha256,
                                    user_by_token)

__all__ = ["add_site", "add_device", "list_sites", "list_devices", "set_site_active", "set_device_active",
           "rotate_device_key", "check_delivery_site", "device_by_ae_title", "device_by_api_key", "hash_api_key",
           "check_rules", "set_site_webhook", "upload_device", "KeyVault", "verify_signature", "public_key_pem", "add_user", "list_users",
           "login", "logout", "public_key", "set_user_active", "token_sha256", "user_by_token"]
