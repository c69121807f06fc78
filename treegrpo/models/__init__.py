"""Model adapters: one interface over flow (SD3 family) and epsilon (SD1.5 family) denoisers."""
