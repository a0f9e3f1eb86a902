"""A faithful local Azure OpenAI for tests, demos and benchmarks.

A sibling of the gateway, never imported by it. Start it with
`azure-openai-proxy emulate`, or build the app with `create_emulator_app(config)`.
"""

from __future__ import annotations

from azure_openai_proxy.emulator.app import create_emulator_app
from azure_openai_proxy.emulator.config import (
    DEFAULT_API_KEY,
    EmulatedDeployment,
    EmulatorConfig,
    load_emulator_config,
)
from azure_openai_proxy.emulator.requestlog import mask_secret
from azure_openai_proxy.emulator.textgen import TRIGGER_COMPLETION_FILTER, TRIGGER_PROMPT_FILTER

__all__ = [
    "DEFAULT_API_KEY",
    "TRIGGER_COMPLETION_FILTER",
    "TRIGGER_PROMPT_FILTER",
    "EmulatedDeployment",
    "EmulatorConfig",
    "create_emulator_app",
    "load_emulator_config",
    "mask_secret",
]
