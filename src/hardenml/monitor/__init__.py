"""The runtime monitor: the live service (`hardenml monitor serve`), its telemetry,
detectors on sliding windows of live traffic, alerts and their sinks, blue/green and
rollback.

The modules are imported one by one (`hardenml.monitor.build`, `.app`, `.telemetry`,
`.detectors`, ...): the web parts need the `hardenml[monitor]` extra, the detectors and
the telemetry do not.
"""
