"""The DevOps graph: prepare → submit → deployer → post_deploy → END.

    START ─▶ prepare ──(rejected: nothing submitted)─────────────────▶ END
                │
                ▼
             submit ──(refused: nothing submitted)───────────────────▶ END
                │
                ▼
             deployer ◀─┐  slice ended, no result yet: checkpoint, go on
                │ ──────┘
                ├─(result success)─────────────▶ post_deploy ───────▶ END
                └─(failed / timeout / gave up)─▶ report_failure ────▶ END

Built by :func:`build_deploy_graph` from its dependencies (no globals), so the CLI,
the service and the tests each pass their own gateway, keys and integrations.
Run it as :mod:`orchestrator.run` does: ``durability="sync"`` (the request id is on
disk before tailing starts), ``recursion_limit`` from :func:`orchestrator.run.graph_config`
(``deployer`` loops once per checkpoint slice), and the plaintext secrets in the run
context (:class:`~orchestrator.state.DeployContext`), never in the input state.
Errors of the gateway itself (Redis unreachable, a gap in ``seq``) propagate out of
the run and leave the checkpoint where it was: a later resume carries on.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from deploystream.keys import OrchestratorKeys
from orchestrator.gateway import JobGateway
from orchestrator.github_secrets import GithubSecrets
from orchestrator.nodes import (
    DeployerNode,
    PostDeployNode,
    PrepareNode,
    ReportFailureNode,
    SubmitNode,
)
from orchestrator.platform_api import PlatformApi
from orchestrator.settings import OrchestratorSettings
from orchestrator.state import DeployContext, DeployState

DeployGraph = CompiledStateGraph[DeployState, DeployContext, DeployState, DeployState]

PREPARE = "prepare"
SUBMIT = "submit"
DEPLOYER = "deployer"
POST_DEPLOY = "post_deploy"
REPORT_FAILURE = "report_failure"


def after_prepare(state: DeployState) -> str:
    return SUBMIT if state.get("job") and not state.get("outcome") else END


def after_submit(state: DeployState) -> str:
    return DEPLOYER if state.get("submitted") else END


def after_deployer(state: DeployState) -> str:
    result = state.get("result")
    if result is not None:
        return POST_DEPLOY if result.get("status") == "success" else REPORT_FAILURE
    if state.get("outcome") in ("wait_exceeded", "events_missing"):
        return REPORT_FAILURE
    return DEPLOYER


def build_deploy_graph(
    *,
    gateway: JobGateway,
    keys: OrchestratorKeys,
    settings: OrchestratorSettings,
    platform_api: PlatformApi | None = None,
    github: GithubSecrets | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> DeployGraph:
    """Compile the deploy graph; ``None`` integrations make their steps ``skipped``."""
    graph = StateGraph(DeployState, context_schema=DeployContext)
    graph.add_node(PREPARE, PrepareNode(keys, settings, platform_api, github))
    graph.add_node(SUBMIT, SubmitNode(gateway, settings))
    graph.add_node(DEPLOYER, DeployerNode(gateway, settings))
    graph.add_node(POST_DEPLOY, PostDeployNode(settings, platform_api, github))
    graph.add_node(REPORT_FAILURE, ReportFailureNode(platform_api))
    graph.add_edge(START, PREPARE)
    graph.add_conditional_edges(PREPARE, after_prepare, [SUBMIT, END])
    graph.add_conditional_edges(SUBMIT, after_submit, [DEPLOYER, END])
    graph.add_conditional_edges(DEPLOYER, after_deployer, [DEPLOYER, POST_DEPLOY, REPORT_FAILURE])
    graph.add_edge(POST_DEPLOY, END)
    graph.add_edge(REPORT_FAILURE, END)
    return graph.compile(checkpointer=checkpointer, name="deploystream")
