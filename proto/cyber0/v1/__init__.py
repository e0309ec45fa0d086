"""Generated code of the CYBER-0 protocol, version 1 (``federation.proto``).

Regenerate with ``scripts/gen_proto.sh``; never edit the ``*_pb2*`` files by hand.
"""
