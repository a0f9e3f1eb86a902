"""Write the pip settings and CA certificates that reach the package index as this
machine does, for the image's build stage (run.sh passes them as BuildKit secrets, so
they are in no layer of the image).

    python3 pipconf.py OUT_PIP_CONF OUT_CA_PEM

Only network settings are kept (index URLs, trusted hosts, timeouts); `file://` indexes
and find-links of this machine mean nothing inside the build and are dropped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

_KEYS = ("index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout", "retries")
_CA_SECRET = "/run/secrets/cacert"


def _configured() -> dict[str, str]:
    """pip's own view of its config files (`pip config list`), then the PIP_* environment."""
    found: dict[str, str] = {}
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                             capture_output=True, text=True, check=False).stdout
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        name = key.rpartition(".")[2]
        if name in (*_KEYS, "cert"):
            found[name] = value.strip().strip("'\"")
    for name in (*_KEYS, "cert"):
        from_env = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        if from_env:
            found[name] = from_env
    return found


def _network_only(value: str) -> str:
    return " ".join(url for url in value.split() if url.startswith(("http://", "https://")))


def main(conf: Path, ca: Path) -> None:
    found = _configured()
    lines = ["[global]"]
    for name in _KEYS:
        value = found.get(name, "")
        if name.endswith("index-url"):
            value = _network_only(value)
        if value:
            lines.append(f"{'timeout' if name == 'default-timeout' else name} = {value}")
    bundle = next((Path(p) for p in (found.get("cert"), os.environ.get("SSL_CERT_FILE"),
                                      "/etc/ssl/certs/ca-certificates.crt") if p and Path(p).is_file()), None)
    if bundle is not None:
        shutil.copyfile(bundle, ca)
        lines.append(f"cert = {_CA_SECRET}")
    else:
        ca.write_bytes(b"")
    conf.write_text("\n".join(lines) + "\n")
    shown = [line for line in lines[1:] if not line.startswith("index-url") and "@" not in line]
    print(f"pip settings for the build: {', '.join(shown) or 'none'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
