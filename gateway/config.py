"""One typed settings object, read once at start-up (environment prefix ``GATEWAY_``).

Example:
    >>> settings = Settings(data_dir=Path("var"), demo=True)
    >>> settings.catalog_path.name
    'catalog.duckdb'
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_KEYS = {"", "change-me", "changeme", "secret", "demo"}


class ConfigurationError(Exception):
    """The settings cannot run a gateway (e.g. no master key outside demo mode)."""


class Settings(BaseSettings):
    """Gateway settings. Secrets are refused when they are placeholders, outside demo mode."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    demo: bool = False
    demo_customers: int = Field(default=200_000, ge=100)
    master_key: SecretStr | None = None
    master_key_file: Path | None = None
    max_upload_bytes: int = Field(default=4 * 1024**3, ge=1024)
    max_decoded_bytes: int = Field(default=8 * 1024**3, ge=1024)
    """Largest size an upload may expand to once decompressed and decoded (bomb guard)."""
    query_memory_limit: str = "4GB"
    hot_cache_bytes: int = Field(default=4 * 1024**3, ge=0)
    """Memory cap of the decrypted datasets kept hot for queries (in-memory DuckDB tables, never
    written to disk; gateway/engine/hot.py). 0 keeps none: each query then loads its datasets
    into a new DuckDB connection."""
    log_level: str = "info"

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.duckdb"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def upload_tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    def load_master_key(self) -> bytes:
        """The 32-byte master key from settings, a key file, or (demo mode only) a new file.

        Raises:
            ConfigurationError: no usable key, a placeholder, or the wrong length.
        """
        raw: str | None = None
        if self.master_key is not None:
            raw = self.master_key.get_secret_value().strip()
        elif self.master_key_file is not None:
            raw = self.master_key_file.read_text().strip()
        else:
            default_file = self.data_dir / "master.key"
            if default_file.exists():
                raw = default_file.read_text().strip()
            elif self.demo:
                self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                raw = base64.b64encode(os.urandom(32)).decode()
                fd = os.open(default_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(raw + "\n")
        if raw is None:
            raise ConfigurationError(
                "no master key: set GATEWAY_MASTER_KEY (base64 of 32 random bytes) or "
                "GATEWAY_MASTER_KEY_FILE, or run with --demo"
            )
        if raw.lower() in PLACEHOLDER_KEYS and not self.demo:
            raise ConfigurationError("GATEWAY_MASTER_KEY is a placeholder; use 32 random bytes")
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError("the master key must be base64 of 32 bytes") from None
        if len(key) != 32:
            raise ConfigurationError("the master key must be base64 of 32 bytes")
        return key
