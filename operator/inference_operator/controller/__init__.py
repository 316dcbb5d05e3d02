"""The kopf operator that reconciles InferenceEndpoints into the gateway."""
