"""When a pool member the gateway refuses a request for, before sending it (a parameter or
a route its API or api-version does not serve: `UnsupportedParameter`), is passed over to
another member instead of the refusal being the client's answer. Pure.

The gateway decides such a refusal from what the deployment is: its API (dated, v1,
Foundry's model inference), its api-version and whether the operator set it (a version
the gateway chose is raised for a route that needs it), and the model it serves (a
reasoning model needs a newer version). A member that differs in any of these may take
the request: a pool of deployments on different api-versions, or Foundry and Azure OpenAI
ones, passes the request over. A member alike in all of them would refuse it the same
way, so a pool of such members gives the client the refusal at once, without asking, or
waiting for, the others.
"""

from __future__ import annotations

from collections.abc import Sequence

from azure_openai_proxy.apiversions import ModelNeed, deployment_need
from azure_openai_proxy.settings import DeploymentSettings

__all__ = ["may_pass_over"]


def may_pass_over(members: Sequence[DeploymentSettings], refused: DeploymentSettings,
                  client_version: bool = False) -> bool:
    """Whether another of `members` may take a request the gateway refused for `refused`
    (nothing sent): one that is not refused the way it was. `client_version`: a native
    client's own api-version is what the dated members are sent, so theirs decide nothing
    (translate.honoured_client_version)."""
    own = _refusal_profile(refused, client_version)
    return any(member is not refused and _refusal_profile(member, client_version) != own
               for member in members)


def _refusal_profile(
    deployment: DeploymentSettings, client_version: bool,
) -> tuple[str, str | None, bool, str, ModelNeed | None]:
    """What the gateway's refusals of a request for `deployment` depend on."""
    shared = client_version and deployment.api == "dated"
    return (deployment.api, None if shared else deployment.api_version,
            not shared and deployment.api_version_reason == "explicit",
            deployment.model_family,
            deployment_need(deployment.deployment_name, deployment.model_name,
                            deployment.model_family))
