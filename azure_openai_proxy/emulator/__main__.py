from __future__ import annotations

import sys

from azure_openai_proxy.emulator.cli import main

raise SystemExit(main(sys.argv[1:]))
