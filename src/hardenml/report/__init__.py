"""Reports rendered from the gate's decision and the ledger: JSON, JUnit XML, SARIF,
HTML with plots, and the robustness section of a model card."""

from hardenml.report.bundle import (
    HTML_NAME,
    JUNIT_NAME,
    MODEL_CARD_NAME,
    SARIF_NAME,
    baseline_run,
    write_all_reports,
)
from hardenml.report.calibration import (
    ReliabilityBin,
    bins_calibration_error,
    reliability_diagram,
)
from hardenml.report.html_report import html_report, write_html
from hardenml.report.json_report import (
    GATE_REPORT_SCHEMA_VERSION,
    gate_report,
    gate_report_json,
    write_gate_report,
)
from hardenml.report.junit import junit_report, write_junit
from hardenml.report.model_card import model_card_section, write_model_card
from hardenml.report.registry import (
    ReportContext,
    ReportFormat,
    ReportLookupError,
    available_reports,
    report_format,
)
from hardenml.report.sarif import sarif_report, write_sarif

__all__ = [
    "GATE_REPORT_SCHEMA_VERSION",
    "HTML_NAME",
    "JUNIT_NAME",
    "MODEL_CARD_NAME",
    "ReliabilityBin",
    "ReportContext",
    "ReportFormat",
    "ReportLookupError",
    "SARIF_NAME",
    "available_reports",
    "baseline_run",
    "bins_calibration_error",
    "gate_report",
    "gate_report_json",
    "html_report",
    "junit_report",
    "model_card_section",
    "reliability_diagram",
    "report_format",
    "sarif_report",
    "write_all_reports",
    "write_gate_report",
    "write_html",
    "write_junit",
    "write_model_card",
    "write_sarif",
]
