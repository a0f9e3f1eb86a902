from __future__ import annotations

from azure_openai_proxy.cli import main

raise SystemExit(main())
