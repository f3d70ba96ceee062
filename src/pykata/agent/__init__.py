"""The guest agent: PID 1 inside the VM. Imports only stdlib, protobuf, domain and protocol."""
