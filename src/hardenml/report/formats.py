"""The built-in report formats, each a thin `ReportFormat` over its module's renderer."""

from __future__ import annotations

import json

from hardenml.report.html_report import html_report
from hardenml.report.json_report import gate_report_json
from hardenml.report.junit import junit_report
from hardenml.report.model_card import model_card_section
from hardenml.report.registry import ReportContext, ReportFormat
from hardenml.report.sarif import sarif_report


class JsonGateReport(ReportFormat):
    filename = "gate-report.json"
    media_type = "application/json"
    description = "the gate's decision, checks and findings (docs/gate-report.md)"

    def render(self, context: ReportContext) -> str:
        return gate_report_json(context.config, context.decision)


class JUnitReport(ReportFormat):
    filename = "report.xml"
    media_type = "application/xml"
    description = "JUnit XML: one test case per problem, for CI test tabs"

    def render(self, context: ReportContext) -> str:
        return junit_report(
            context.config, context.decision, context.findings, repo_root=context.repo_root
        )


class SarifReport(ReportFormat):
    filename = "report.sarif"
    media_type = "application/sarif+json"
    description = "SARIF 2.1.0 for code-scanning dashboards"

    def render(self, context: ReportContext) -> str:
        log = sarif_report(
            context.config, context.decision, context.findings, repo_root=context.repo_root
        )
        return json.dumps(log, indent=2, allow_nan=False) + "\n"


class HtmlReport(ReportFormat):
    filename = "report.html"
    media_type = "text/html"
    description = "one self-contained HTML page with plots"

    def render(self, context: ReportContext) -> str:
        return html_report(
            context.config,
            context.decision,
            context.findings,
            baseline=context.baseline,
            reliability=context.reliability,
        )


class ModelCardReport(ReportFormat):
    filename = "model-card.md"
    media_type = "text/markdown"
    description = "the robustness section of a model card"

    def render(self, context: ReportContext) -> str:
        return model_card_section(
            context.config,
            context.decision,
            context.findings,
            baseline=context.baseline,
            reliability=context.reliability,
        )
