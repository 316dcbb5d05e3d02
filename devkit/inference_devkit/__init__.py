"""The development kit of inference-operator: a local control plane and node, the
project's images, the dev stack, chart rendering and the generators. It imports the
product (``inference_operator``); the product never imports it, and the image does not
ship it."""
