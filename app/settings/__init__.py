"""Configuration from the environment and `.env`, exactly as DESIGN section 4 names it.

`model` holds the settings and how they load, `values` how single values are read, `strength`
the rules giftsync's own secrets must pass, `environment` the search for misspelt variables.
"""

from app.settings.model import (
    LIGHTSPEED_REQUIRED,
    ONSITE_REQUIRED,
    URL_SETTINGS,
    VII_REQUIRED,
    Settings,
    SettingsError,
    load_settings,
)
from app.settings.values import (
    OLDEST_SHOPIFY_API_VERSION,
    BalanceSign,
    CheckoutAuth,
    Duration,
    Money,
    Plan,
    PosKind,
    decode_key,
    parse_duration,
    parse_money,
)

__all__ = [
    "LIGHTSPEED_REQUIRED",
    "OLDEST_SHOPIFY_API_VERSION",
    "ONSITE_REQUIRED",
    "URL_SETTINGS",
    "VII_REQUIRED",
    "BalanceSign",
    "CheckoutAuth",
    "Duration",
    "Money",
    "Plan",
    "PosKind",
    "Settings",
    "SettingsError",
    "decode_key",
    "load_settings",
    "parse_duration",
    "parse_money",
]
