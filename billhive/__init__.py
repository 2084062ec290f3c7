"""billhive: a self-hosted subscription billing server speaking the Chargebee API v1 wire format."""

__version__ = "0.1.0"
