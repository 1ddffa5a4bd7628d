"""Reports rendered from the gate's decision and the ledger."""

from hardenml.report.json_report import GATE_REPORT_SCHEMA_VERSION, gate_report, write_gate_report

__all__ = ["GATE_REPORT_SCHEMA_VERSION", "gate_report", "write_gate_report"]
