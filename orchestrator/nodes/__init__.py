"""The deploy graph's nodes, one concept per module.

``prepare`` → ``submit`` → ``deployer`` (loops while tailing) → ``post_deploy``;
failures of the deploy go to ``report_failure``.
"""

from orchestrator.nodes.deployer import DeployerNode, SubmitNode
from orchestrator.nodes.post_deploy import PostDeployNode, ReportFailureNode
from orchestrator.nodes.prepare import PrepareNode

__all__ = ["DeployerNode", "PostDeployNode", "PrepareNode", "ReportFailureNode", "SubmitNode"]
