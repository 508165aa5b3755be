"""Device drivers: one module per device kind behind the contract in ``base``."""
