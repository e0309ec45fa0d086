"""CYBER-0: Byzantine-resilient zero-order federated learning as a networked service.

Subpackages: ``cyber0.common`` (the engine), ``cyber0.v1`` (generated protocol code),
``cyber0.server`` (the federator) and ``cyber0.client`` (the client daemon).
"""

__version__ = "0.1.0"
