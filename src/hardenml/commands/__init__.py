"""CLI commands of later rooms; each module adds its commands to `hardenml.cli.app`."""
