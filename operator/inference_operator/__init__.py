"""inference-operator: declarative, rate-limited Anthropic completion endpoints on Kubernetes,
served through the Elasticsearch ``_inference`` API."""

__version__ = "0.1.0"
