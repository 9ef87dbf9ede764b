"""IJB-B / IJB-C template protocols (``ijb``). Importing the package registers ``IJBProtocol`` in
``test_protocol.PROTOCOLS``."""
from test_protocol.ijb import ijb
