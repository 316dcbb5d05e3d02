"""The data plane: an Elasticsearch-compatible ``_inference`` server for Anthropic."""
