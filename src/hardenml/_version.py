"""The package version: the ground floor, so reports can name it without importing the package."""

__version__ = "0.1.0"
