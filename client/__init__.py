"""CYBER-0 client daemon: honest, Byzantine and observer roles."""
