"""The `onerec-lab` commands: each parses its options into the experiment layer's configs,
calls the layer (`onerec_lab.experiment`) and prints; no command imports another."""
