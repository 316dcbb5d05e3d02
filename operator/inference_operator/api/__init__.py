"""The InferenceEndpoint API: models, schema and the generated CRD."""
