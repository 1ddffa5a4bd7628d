"""The runtime monitor: detectors on sliding windows of live traffic, alerts and their sinks."""
